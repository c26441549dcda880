"""The ``mtl-data`` commands end to end: synth, ingest, inspect, validate, help and re-runs."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtl_data.ingest import CONVERTERS
from mtl_data.shards.reader import ShardSet

MEMBERS = (".jpg", ".meta.json", ".depth.pts", ".det2d.json", ".det3d.json")


# ---- helpers ----------------------------------------------------------------------------------


def _ingest(cli, root: Path, out: Path, *extra):
    return cli("ingest", "kitti", root, "--to", out, "--workers", 1, *extra)


def _ingested(cli, root: Path, out: Path, *extra) -> Path:
    """Ingest ``root`` into ``out``; returns ``out/kitti`` after checking the run succeeded."""
    result = _ingest(cli, root, out, *extra)
    assert result.code == 0, result.err
    return out / "kitti"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _table_rows(text: str) -> list[dict[str, str]]:
    """The rows of ``inspect``'s whitespace-aligned table, as {column: value}."""
    header, *lines = [ln.split() for ln in text.strip().splitlines()]
    assert all(len(ln) == len(header) for ln in lines), text
    return [dict(zip(header, ln)) for ln in lines]


# ---- synth ------------------------------------------------------------------------------------


def _assert_kitti_layout(root: Path) -> None:
    for folder in ("image_2", "label_2", "calib", "velodyne"):
        names = sorted(p.name for p in (root / "training" / folder).iterdir())
        assert names and names[0].startswith("000000."), (folder, names)
    assert (root / "training/label_2/000000.txt").read_text().strip()
    assert (root / "testing/image_2").is_dir() and (root / "testing/calib").is_dir()
    assert not (root / "testing/label_2").exists()


def test_synth_writes_the_native_layout_and_a_second_run_refuses_the_non_empty_folder(cli, tmp_path):
    out = tmp_path / "raw"
    result = cli("synth", "kitti", "--to", out)
    assert result.code == 0, result.err
    _assert_kitti_layout(out)
    before = _files(out)

    line = cli("synth", "kitti", "--to", out).one_error_line()
    assert str(out) in line and "not empty" in line and "--overwrite" in line
    assert _files(out) == before


def test_synth_overwrite_replaces_a_non_empty_folder(cli, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    stray = out / "stray.txt"
    stray.write_text("replaced by --overwrite")
    assert cli("synth", "kitti", "--to", out).code != 0
    assert stray.exists()

    result = cli("synth", "kitti", "--to", out, "--overwrite")
    assert result.code == 0, result.err
    assert not stray.exists()
    _assert_kitti_layout(out)


# ---- ingest + inspect -------------------------------------------------------------------------


def test_inspect_prints_counts_per_source_and_split(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    _ingested(cli, kitti_real, out)
    result = cli("inspect", out)
    assert result.code == 0, result.err
    rows = _table_rows(result.out)
    assert len(rows) == 1
    row = rows[0]
    assert (row["source"], row["split"], row["samples"]) == ("kitti", "train", "2")
    assert (row["depth"], row["det2d"], row["det3d"]) == ("2", "2", "2")
    assert (row["seg"], row["steer"], row["sign"], row["lane"]) == ("0", "0", "0", "0")


def test_inspect_key_lists_members_and_decoded_labels(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    _ingested(cli, kitti_real, out)
    result = cli("inspect", out, "--key", "kitti_train_000001")
    assert result.code == 0, result.err
    text = result.out
    for ext in MEMBERS:
        assert f"kitti_train_000001{ext}" in text, ext
    labels = [ln.split()[0] for ln in text.splitlines() if ln.startswith("    ")]
    assert labels == ["truck", "car", "cyclist"] * 2  # det2d then det3d, in label-file order
    assert "det2d: 3 boxes, 4 ignore regions" in text
    assert "det3d: 3 boxes" in text
    points = int((ShardSet.open(out).read_sample("kitti_train_000001").depth > 0).sum())
    assert points > 10_000 and f"depth: {points:,} points (" in text  # decoded from depth.pts


def test_inspect_unknown_key_fails_with_one_error_line(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    _ingested(cli, kitti_real, out)
    line = cli("inspect", out, "--key", "nope").one_error_line()
    assert "'nope'" in line and "manifest" in line


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_command_on_folder_without_manifest_says_to_run_ingest(command, cli, tmp_path):
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    line = cli(command, folder).one_error_line()
    assert str(folder) in line and "manifest.parquet" in line
    assert "mtl-data ingest" in line


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_command_on_unfinished_ingest_says_to_resume(command, cli, kitti_copy, tmp_path):
    label = kitti_copy / "training/label_2/000001.txt"
    label.write_text(label.read_text().replace("Truck", "Spaceship"))
    out = tmp_path / "shards"
    assert _ingest(cli, kitti_copy, out, "--shard-size", "1").code != 0
    assert (out / "kitti" / ".ingest").is_dir()
    line = cli(command, out).one_error_line()
    assert "manifest.parquet" in line
    assert "resume" in line


# ---- validate ---------------------------------------------------------------------------------


def test_validate_passes_on_a_fresh_ingest(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    _ingested(cli, kitti_real, out)
    result = cli("validate", out)
    assert result.code == 0, result.out + result.err
    assert "2 samples OK" in result.out
    assert result.error_lines == []


def _validate_fails(cli, out: Path) -> list[str]:
    """Run validate on tampered shards; returns its stdout problem lines."""
    result = cli("validate", out)
    line = result.one_error_line()
    assert "problem" in line
    return result.out.splitlines()


def test_validate_reports_a_manifest_count_that_disagrees_with_the_shard(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    kitti = _ingested(cli, kitti_real, out)
    table = pq.read_table(kitti / "manifest.parquet")
    rows = table.to_pylist()
    target = next(r for r in rows if r["key"] == "kitti_train_000001")
    assert target["det2d_count"] == 3
    target["det2d_count"] = 4
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), kitti / "manifest.parquet")

    problems = _validate_fails(cli, out)
    assert any("kitti_train_000001" in p and "det2d_count=4" in p and "3" in p for p in problems), problems


def test_validate_reports_a_det2d_box_with_x2_left_of_x1(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    kitti = _ingested(cli, kitti_real, out)
    [shard] = sorted(kitti.glob("*.tar"))
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.name == "kitti_train_000000.det2d.json":
                doc = json.loads(data)
                x1, y1, x2, y2 = doc["boxes"][0]
                doc["boxes"][0] = [x2, y1, x1, y2]
                data = json.dumps(doc, separators=(",", ":")).encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    problems = _validate_fails(cli, out)
    assert any("kitti_train_000000" in p and "x2 < x1" in p for p in problems), problems


def test_validate_reports_a_deleted_shard(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    kitti = _ingested(cli, kitti_real, out, "--shard-size", "1")
    assert sorted(p.name for p in kitti.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    (kitti / "train-000001.tar").unlink()

    problems = _validate_fails(cli, out)
    assert any("train-000001.tar" in p and "missing" in p for p in problems), problems


def test_validate_reports_a_stray_shard_next_to_the_manifest(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    kitti = _ingested(cli, kitti_real, out)
    shutil.copyfile(kitti / "train-000000.tar", kitti / "train-000007.tar")

    problems = _validate_fails(cli, out)
    assert any("train-000007.tar" in p and "no manifest row" in p for p in problems), problems


# ---- help -------------------------------------------------------------------------------------


def test_ingest_help_lists_the_registered_converters(cli):
    result = cli("ingest", "--help")
    assert result.code == 0, result.err
    commands = result.out.split("Commands:", 1)[1]
    assert [ln.split()[0] for ln in commands.strip().splitlines()] == sorted(CONVERTERS)
    assert {"a2d2", "kitti"} <= set(CONVERTERS)


def test_ingest_kitti_help_shows_its_options_and_the_native_layout_tree(cli):
    result = cli("ingest", "kitti", "--help")
    assert result.code == 0, result.err
    text = result.out
    assert "--val-fraction" in text
    lines = text.splitlines()
    # The layout tree keeps its lines and indentation: RAW_ROOT/ above training/ above label_2/.
    indent = {}
    for ln in lines:
        for start in ("RAW_ROOT/", "training/", "label_2/000000.txt", "testing/"):
            if ln.strip().startswith(start) and start not in indent:
                indent[start] = len(ln) - len(ln.lstrip())
    assert set(indent) == {"RAW_ROOT/", "training/", "label_2/000000.txt", "testing/"}, text
    assert any(ln.strip() == "RAW_ROOT/" for ln in lines), text
    assert indent["RAW_ROOT/"] < indent["training/"] < indent["label_2/000000.txt"], text
    assert indent["testing/"] == indent["training/"], text


# ---- re-runs ----------------------------------------------------------------------------------


def test_second_identical_ingest_leaves_the_complete_split_byte_identical(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    kitti = _ingested(cli, kitti_real, out)
    before = _files(kitti)
    assert {"manifest.parquet", "train-000000.tar"} <= set(before)

    result = _ingest(cli, kitti_real, out)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert any("train" in ln and "already complete" in ln for ln in result.error_lines), result.err
    assert _files(kitti) == before


def test_inspect_pictures_show_depth_as_a_16_bit_png_and_in_colour(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    _ingested(cli, kitti_real, out)
    pictures = tmp_path / "pictures"
    result = cli("inspect", out, "--key", "kitti_train_000001", "--pictures", pictures)
    assert result.code == 0, result.err
    names = sorted(p.name for p in pictures.iterdir())
    assert names == [f"kitti_train_000001.{e}" for e in ("depth.png", "depth_colour.png", "jpg")]
    sample = ShardSet.open(out).read_sample("kitti_train_000001")
    stored = cv2.imread(str(pictures / "kitti_train_000001.depth.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16  # what schema 1's depth.png held, bit for bit
    np.testing.assert_array_equal(stored, np.rint(sample.depth * 256).astype(np.uint16))
    colour = cv2.imread(str(pictures / "kitti_train_000001.depth_colour.png"))
    assert colour.shape == (*sample.size, 3)
    lit = colour.any(axis=2)
    near_a_point = cv2.dilate((sample.depth > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    np.testing.assert_array_equal(lit, near_a_point)  # every point drawn, 5x5; black elsewhere
    assert f"wrote {pictures / 'kitti_train_000001.depth.png'}" in result.out


def test_inspect_pictures_needs_a_key(cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    _ingested(cli, kitti_real, out)
    line = cli("inspect", out, "--pictures", tmp_path / "p").one_error_line()
    assert "--pictures draws one sample: give its --key too" in line
