"""Outputs that cannot be written: a full disk (ENOSPC) and a read-only folder, for ingest, synth
and stats. Each is one error line naming the path and the OS reason, leaves nothing half-written
(no ``.part``), and the same command re-run afterwards finishes as if nothing had happened.

The full disk is simulated in-process: every output file of the data side is opened by
``files.open_output``, whose ``open`` is replaced by one whose writes stop with ENOSPC after a
budget of bytes (what fits is written first, as on a real disk). A read-only folder is
``chmod 555``; root ignores permissions, so as root the same refusals (EACCES) are injected into
``os.mkdir``, ``os.open`` and ``files.open`` for paths inside the folder.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest

from mtl_data import files
from mtl_data.errors import OutputError
from mtl_data.files import write_atomic
from mtl_data.shards.tario import TarShardWriter

ENOSPC_TEXT = f"{os.strerror(errno.ENOSPC)} (errno {errno.ENOSPC})"
EACCES_TEXT = f"{os.strerror(errno.EACCES)} (errno {errno.EACCES})"


# ---- simulated disks --------------------------------------------------------------------------


class FullDisk:
    """Output files hold ``budget`` bytes in all; the write that passes it writes what fits, then
    raises ENOSPC (``budget=None`` only counts). Install with ``monkeypatch`` (``install``)."""

    def __init__(self, budget: int | None):
        self.left = budget
        self.written = 0

    def install(self, monkeypatch) -> FullDisk:
        monkeypatch.setattr(files, "open", self.open, raising=False)
        return self

    def open(self, path, mode="r", *args, **kwargs):
        if "w" not in mode:
            return builtins.open(path, mode, *args, **kwargs)
        disk = self

        class File(io.FileIO):
            def write(self, data) -> int:
                data = memoryview(data).cast("B")
                n = len(data) if disk.left is None else min(len(data), disk.left)
                if disk.left is not None:
                    disk.left -= n
                disk.written += n
                if n:
                    super().write(data[:n])
                if n < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return n

        return File(path, "w")


def _directly_in(path, folder: Path) -> bool:
    return Path(os.path.abspath(os.fspath(path))).parent == folder


def make_read_only(folder: Path, monkeypatch) -> None:
    """Make ``folder`` refuse new entries (EACCES): chmod 555, or as root (which ignores
    permissions) refusals injected into the calls that create its entries."""
    folder = Path(os.path.abspath(folder))
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_mkdir, real_open = os.mkdir, os.open
    creating = os.O_CREAT | os.O_WRONLY | os.O_RDWR

    def mkdir(path, *args, **kwargs):
        if _directly_in(path, folder) and not os.path.isdir(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if _directly_in(path, folder) and flags & creating:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def open_(path, mode="r", *args, **kwargs):
        if _directly_in(path, folder) and "w" in mode:
            refuse(path)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(files, "open", open_, raising=False)


def make_writable(folder: Path, monkeypatch) -> None:
    """Undo ``make_read_only``."""
    monkeypatch.undo()
    folder.chmod(0o755)


def parts_left(folder: Path) -> list[Path]:
    """Every ``*.part`` file or folder under (and beside) ``folder``."""
    return sorted(folder.parent.rglob("*.part"))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file that must be reproducible (ingest.json has a timestamp)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "ingest.json"
    }


# ---- the writers themselves -------------------------------------------------------------------


def test_tar_writer_on_a_full_disk_raises_one_output_error_and_abort_removes_the_part(tmp_path, monkeypatch):
    FullDisk(budget=3000).install(monkeypatch)
    tmp, final = tmp_path / ".ingest" / "train-000000.tar.part", tmp_path / "train-000000.tar"
    writer = TarShardWriter(tmp, final)
    with pytest.raises(OutputError) as info:
        for i in range(10):
            writer.add(f"k{i}", [("jpg", bytes(1000)), ("meta.json", b"{}")])
    assert info.value.path == str(tmp)
    assert str(info.value).startswith(f"cannot write {tmp}: {ENOSPC_TEXT}; free space")
    writer.abort()  # the end-of-archive blocks and the flush fail again: abort must not raise
    assert not tmp.exists() and not final.exists()


def test_tar_writer_commit_on_a_full_disk_raises_one_output_error(tmp_path, monkeypatch):
    disk = FullDisk(budget=None).install(monkeypatch)
    tmp, final = tmp_path / "s.tar.part", tmp_path / "s.tar"
    writer = TarShardWriter(tmp, final)
    writer.add("k0", [("jpg", bytes(1000))])
    disk.left = 100  # the end-of-archive blocks (1 KiB) do not fit
    with pytest.raises(OutputError, match="No space left"):
        writer.commit()
    writer.abort()
    assert not tmp.exists() and not final.exists()


def test_write_atomic_on_a_full_disk_keeps_the_old_file_and_leaves_no_part(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text("old")
    FullDisk(budget=5).install(monkeypatch)
    with pytest.raises(OutputError) as info:
        write_atomic(path, "a new report, longer than five bytes")
    assert str(info.value).startswith(f"cannot write {path}.part: {ENOSPC_TEXT}")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# ---- ingest -----------------------------------------------------------------------------------


def _ingest(cli, root: Path, out: Path):
    return cli("ingest", "kitti", root, "--to", out, "--workers", 1, "--shard-size", 2, "--val-fraction", 0.25)


@pytest.mark.parametrize("where", ["mid_shard", "last_file"])
def test_ingest_on_a_full_disk_is_one_line_leaves_no_part_and_the_rerun_gives_the_same_bytes(
    where, cli, synth_root, tmp_path, monkeypatch
):
    raw = synth_root("kitti")
    clean = tmp_path / "clean"
    counting = FullDisk(budget=None).install(monkeypatch)
    assert _ingest(cli, raw, clean).code == 0
    total = counting.written
    monkeypatch.undo()

    out = tmp_path / "out"
    # last_file: short of the total by more than ingest.json's length varies between runs (its
    # timings: "elapsed_s": 0.109 or 0.06), so the disk fills inside the last file every time
    FullDisk(budget=total // 3 if where == "mid_shard" else total - 64).install(monkeypatch)
    result = _ingest(cli, raw, out)
    line = result.one_error_line()
    assert f": {ENOSPC_TEXT}; free space or choose another --to" in line
    written = line.removeprefix("error: cannot write ").split(":")[0]
    assert written.endswith(".part") and Path(written).is_relative_to(out / "kitti"), line
    assert parts_left(out) == []
    assert not (out / "kitti" / "ingest.lock").exists()
    if where == "mid_shard":
        assert not (out / "kitti" / "manifest.parquet").exists()
        assert sorted(p.name for p in (out / "kitti").glob("*.tar"))  # finished shards are kept
    monkeypatch.undo()

    rerun = _ingest(cli, raw, out)
    assert rerun.code == 0, rerun.err
    assert tree_bytes(out / "kitti") == tree_bytes(clean / "kitti")
    assert not (out / "kitti" / ".ingest").exists()


def test_ingest_into_a_read_only_folder_is_one_line_and_the_rerun_works(cli, synth_root, tmp_path, monkeypatch):
    raw = synth_root("kitti")
    parent = tmp_path / "read_only"
    make_read_only(parent, monkeypatch)
    out = parent / "shards"
    line = _ingest(cli, raw, out).one_error_line()
    assert line == f"error: cannot write {out}: {EACCES_TEXT}; make it writable or choose another --to"
    make_writable(parent, monkeypatch)
    assert list(parent.iterdir()) == []

    result = _ingest(cli, raw, out)
    assert result.code == 0, result.err
    assert (out / "kitti" / "manifest.parquet").exists()


def test_ingest_into_a_read_only_source_folder_names_the_lock_file(cli, synth_root, tmp_path, monkeypatch):
    source_dir = tmp_path / "shards" / "kitti"
    make_read_only(source_dir, monkeypatch)
    line = _ingest(cli, synth_root("kitti"), tmp_path / "shards").one_error_line()
    assert line.startswith(f"error: cannot write {source_dir / 'ingest.lock'}: {EACCES_TEXT}; make it writable")
    make_writable(source_dir, monkeypatch)
    assert list(source_dir.iterdir()) == []


# ---- synth and stats --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kitti_shards(synth_root, tmp_path_factory) -> Path:
    """The synthetic KITTI ingested (read-only), for stats."""
    from mtl_data.cli.main import main

    out = tmp_path_factory.mktemp("output_errors_shards")
    try:
        main(["ingest", "kitti", str(synth_root("kitti")), "--to", str(out), "--workers", "1"])
    except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
        assert not exc.code, "ingest failed"
    return out


def _commands(tmp_path: Path, shards: Path) -> dict[str, tuple[list, Path, str]]:
    """name -> (arguments, the output they write, its option)."""
    out = tmp_path / "target"
    return {
        "synth": (["synth", "kitti", "--to", out / "raw"], out / "raw", "--to"),
        "stats_json": (["stats", shards, "--json", out / "stats.json"], out / "stats.json", "--json"),
        "stats_plots": (["stats", shards, "--plots", out / "plots"], out / "plots", "--plots"),
    }


@pytest.mark.parametrize("command", ["synth", "stats_json", "stats_plots"])
def test_output_on_a_full_disk_is_one_line_leaves_nothing_and_the_rerun_works(
    command, cli, kitti_shards, tmp_path, monkeypatch
):
    args, target, option = _commands(tmp_path, kitti_shards)[command]
    FullDisk(budget=200).install(monkeypatch)
    line = cli(*args).one_error_line()
    assert line.startswith(f"error: cannot write {target.parent}/"), line
    assert line.endswith(f": {ENOSPC_TEXT}; free space or choose another {option}"), line
    assert parts_left(target) == []
    assert not target.is_file() and (not target.is_dir() or list(target.iterdir()) == [])
    monkeypatch.undo()

    result = cli(*args)
    assert result.code == 0, result.err
    assert target.exists() and parts_left(target) == []


@pytest.mark.parametrize("command", ["synth", "stats_json", "stats_plots"])
def test_output_into_a_read_only_folder_is_one_line_naming_it(command, cli, kitti_shards, tmp_path, monkeypatch):
    args, target, option = _commands(tmp_path, kitti_shards)[command]
    make_read_only(target.parent, monkeypatch)
    line = cli(*args).one_error_line()
    assert line.startswith(f"error: cannot write {target}"), line
    assert line.endswith(f": {EACCES_TEXT}; make it writable or choose another {option}"), line
    make_writable(target.parent, monkeypatch)
    assert list(target.parent.iterdir()) == []

    result = cli(*args)
    assert result.code == 0, result.err
    assert target.exists()
