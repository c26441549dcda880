"""What a user of ``mtl-data`` notices: help without arguments, -V, default folders, plain help
text, absolute reject paths, per-split labels in stats, damaged shards under inspect and
validate (truncated tars, corrupt JPEG data), validate's progress bar."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import click
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import CliResult, read_rejects

from mtl_data import __version__
from mtl_data.cli.main import cli as cli_group
from mtl_data.cli.main import main


def _ingest(cli, root: Path, out: Path, *extra):
    result = cli("ingest", "kitti", root, "--to", out, "--workers", 1, "--shard-size", 3, *extra)
    assert result.code == 0, result.err
    return result


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def kitti_shards(cli, synth_root, tmp_path) -> Path:
    """The synthetic KITTI (train 6 frames, test 2) in ``tmp_path/shards``, 3 samples per shard (writable)."""
    out = tmp_path / "shards"
    _ingest(cli, synth_root("kitti"), out)
    return out


# ---- help and version -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["ingest"]], ids=["mtl-data", "mtl-data ingest"])
def test_a_group_without_arguments_prints_its_help_and_exits_0(cli, args):
    result = cli(*args)
    assert result.code == 0, result.err
    assert result.err == ""
    assert result.out.startswith(f"Usage: mtl-data {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in result.out
    assert result.out == cli(*args, "--help").out


def test_dash_capital_v_prints_the_version_as_version_does(cli):
    short, long = cli("-V"), cli("--version")
    assert short.code == long.code == 0, short.err
    assert short.out == long.out == f"mtl-data, version {__version__}\n"


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_help_is_plain_text_without_rest_markup(cli):
    marked = {}
    for path in _command_paths(cli_group):
        result = cli(*path, "--help")
        assert result.code == 0, result.err
        found = re.findall(r"``[^`]*``|:[a-z]+:`[^`]*`|`[^`]*`|::\s*$", result.out, re.MULTILINE)
        if found:
            marked[" ".join(("mtl-data", *path))] = found
    assert marked == {}
    assert len(_command_paths(cli_group)) == 2 + 7 + len(cli_group.commands["ingest"].commands)  # all were read


# ---- default folder ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_inspect_and_validate_read_dot_shards_by_default(command, cli, kitti_shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli(command)
    assert result.code == 0, result.err
    assert result.out == cli(command, kitti_shards).out.replace(str(kitti_shards), "shards")
    assert "kitti" in result.out or "8 samples OK" in result.out


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_inspect_and_validate_without_dot_shards_say_so_in_one_line(command, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = cli(command).one_error_line()
    assert "shards: no such folder" in line and "mtl-data ingest" in line


# ---- rejects ----------------------------------------------------------------------------------


def test_reject_paths_are_absolute_when_the_raw_root_was_given_relative(cli, kitti_copy, tmp_path, monkeypatch):
    (kitti_copy / "training" / "velodyne" / "000001.bin").write_bytes(b"\0" * 17)  # truncated scan
    monkeypatch.chdir(kitti_copy.parent)
    result = cli("ingest", "kitti", kitti_copy.name, "--to", "shards", "--workers", 1, "--on-error", "skip")
    assert result.code == 0, result.err
    [reject] = read_rejects(tmp_path / "shards", "kitti")
    assert reject["path"] == str(kitti_copy / "training" / "velodyne" / "000001.bin")


# ---- stats labels per split -------------------------------------------------------------------


def test_stats_lists_per_split_only_the_tasks_that_split_labels(cli, kitti_shards, tmp_path):
    result = cli("stats", kitti_shards, "--json", tmp_path / "stats.json")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    table = lines[lines.index("Samples per source and split") + 1 :]
    rows = {ln.split()[1]: ln.split("%", 1)[1].strip() for ln in table[1:3]}
    assert rows == {"train": "depth, det2d, det3d", "test": "depth"}  # KITTI's test split has no boxes
    kitti = json.loads((tmp_path / "stats.json").read_text())["sources"]["kitti"]
    assert kitti["split_tasks"]["test"] == {t: (2 if t == "depth" else 0) for t in kitti["tasks"]}
    assert kitti["split_tasks"]["train"]["det2d"] == 6


# ---- damaged shards ---------------------------------------------------------------------------


def _row(shards: Path, shard: str, position: int) -> dict:
    rows = pq.read_table(shards / "kitti" / "manifest.parquet").to_pylist()
    return next(r for r in rows if r["shard"] == shard and r["position"] == position)


def test_truncated_shard_is_one_line_under_inspect_a_problem_under_validate_and_a_rerun_rebuilds_it(
    cli, synth_root, kitti_shards
):
    before = _files(kitti_shards)
    shard = kitti_shards / "kitti" / "train-000001.tar"
    key = _row(kitti_shards, "kitti/train-000001.tar", 1)["key"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    line = cli("inspect", kitti_shards, "--key", key).one_error_line()
    assert f"error: {shard}: truncated or corrupt shard" in line and key in line
    assert f"re-run the ingest that wrote it (`mtl-data ingest kitti {synth_root('kitti')} --to" in line

    result = cli("validate", kitti_shards)
    assert "problem" in result.one_error_line()
    assert any(p.startswith("kitti/train-000001.tar: truncated or corrupt tar") for p in result.out.splitlines())

    rerun = cli("ingest", "kitti", synth_root("kitti"), "--to", kitti_shards, "--workers", 1, "--shard-size", 3)
    assert rerun.code == 0, rerun.err
    assert any("train-000001.tar has" in ln and "rebuilding the split" in ln for ln in rerun.error_lines), rerun.err
    assert _files(kitti_shards).keys() == before.keys()
    assert {k: v for k, v in _files(kitti_shards).items() if k != "kitti/ingest.json"} == {
        k: v for k, v in before.items() if k != "kitti/ingest.json"
    }
    assert cli("inspect", kitti_shards, "--key", key).code == 0


def _flip_two_bytes_of_the_entropy_coded_data(shard: Path, member: str) -> bytes:
    """Invert two adjacent bytes in the middle of a JPEG member's scan, in place; returns the new JPEG."""
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
        data = tar.extractfile(info).read()
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")  # first byte after the SOS header
    at = scan + (len(data) - 2 - scan) // 2
    corrupt = data[:at] + bytes(b ^ 0xFF for b in data[at : at + 2]) + data[at + 2 :]
    with open(shard, "r+b") as f:
        f.seek(info.offset_data + at)
        f.write(corrupt[at : at + 2])
    return corrupt


def _run_capturing_fds(capfd, *args) -> CliResult:
    """``mtl-data ARGS`` in-process, capturing file descriptors 1 and 2 (what C libraries print too)."""
    capfd.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capfd.readouterr()
    return CliResult(code, captured.out, captured.err)


def test_validate_decodes_every_jpeg_fully_and_reports_corrupt_entropy_coded_data(
    capfd, synth_root, tmp_path, monkeypatch
):
    out = tmp_path / "shards"
    shutil.rmtree(out, ignore_errors=True)
    assert _run_capturing_fds(capfd, "ingest", "kitti", synth_root("kitti"), "--to", out, "--workers", 1).code == 0
    key = _row(out, "kitti/train-000000.tar", 1)["key"]
    corrupt = _flip_two_bytes_of_the_entropy_coded_data(out / "kitti" / "train-000000.tar", f"{key}.jpg")
    assert cv2.imdecode(np.frombuffer(corrupt, np.uint8), cv2.IMREAD_COLOR) is not None  # a plain decode passes

    result = _run_capturing_fds(capfd, "validate", out)
    assert result.code == 1
    [problem] = result.out.splitlines()
    assert problem.startswith(f"kitti/train-000000.tar: {key}: jpg: corrupt image data (Corrupt JPEG data")
    assert "--split train --overwrite" in problem
    assert "Corrupt JPEG" not in result.err  # libjpeg's warning does not reach the terminal
    assert result.err.strip() == f"error: {out}: 1 problem(s) in 8 samples"

    inspected = _run_capturing_fds(capfd, "inspect", out, "--key", key)
    assert inspected.code == 1
    [line] = inspected.err.strip().splitlines()
    assert line.startswith("error: ") and "Corrupt JPEG data" in line and key in line


def test_validate_shows_a_progress_bar_on_stderr_only_when_it_is_a_terminal(cli, kitti_shards, monkeypatch):
    quiet = cli("validate", kitti_shards)
    assert quiet.code == 0 and quiet.err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    shown = cli("validate", kitti_shards)
    assert shown.code == 0, shown.err
    assert "validate:" in shown.err and "/8 [" in shown.err and "sample/s" in shown.err
    assert shown.out == quiet.out
