"""Two ingests into one source folder: the second is refused with one line naming the holder.

The lock is an ``fcntl.flock`` on ``OUT/<source>/ingest.lock``, held by another process here (a
real second process, as two users' commands would be); the kernel releases it when that process
dies, so a lock file left by a killed run never blocks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtl_data.errors import MtlDataError
from mtl_data.ingest.engine import LOCK_NAME, ingest_lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mtl_data.ingest.engine import ingest_lock

    with ingest_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _ingest(cli, root: Path, out: Path):
    return cli("ingest", "kitti", root, "--to", out, "--workers", 1)


@pytest.fixture
def holder(tmp_path):
    """``holder(folder)``: another process that holds the lock of ``folder`` until killed."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_second_ingest_into_the_same_source_folder_says_who_holds_it(cli, kitti_real, tmp_path, holder):
    out = tmp_path / "shards"
    proc = holder(out / "kitti")
    line = _ingest(cli, kitti_real, out).one_error_line()
    assert f"{out / 'kitti'}: another ingest is writing this folder" in line
    assert f"pid {proc.pid} on host {socket.gethostname()}, since 20" in line
    assert "wait for it to end, or stop it and re-run this command" in line
    assert proc.poll() is None, "the holder was not disturbed"
    assert sorted(p.name for p in (out / "kitti").iterdir()) == [LOCK_NAME]  # nothing written by the refused run


def test_lock_of_a_killed_run_does_not_block_and_is_removed_at_the_end(cli, kitti_real, tmp_path, holder):
    out = tmp_path / "shards"
    proc = holder(out / "kitti")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock = out / "kitti" / LOCK_NAME
    assert f"pid {proc.pid}" in lock.read_text()  # the file stays; its flock died with the process

    result = _ingest(cli, kitti_real, out)
    assert result.code == 0, result.err
    assert not lock.exists()
    assert (out / "kitti" / "manifest.parquet").exists()


def test_lock_is_released_when_the_ingest_fails(cli, kitti_copy, tmp_path):
    label = kitti_copy / "training/label_2/000001.txt"
    label.write_text(label.read_text().replace("Truck", "Spaceship"))
    out = tmp_path / "shards"
    assert _ingest(cli, kitti_copy, out).code != 0
    assert (out / "kitti" / ".ingest").is_dir()
    assert not (out / "kitti" / LOCK_NAME).exists()
    with ingest_lock(out / "kitti"):  # free: this process takes it at once
        pass


def test_lock_held_in_this_process_refuses_a_second_holder_and_leaves_no_folder_behind(tmp_path):
    folder = tmp_path / "a" / "kitti"
    with ingest_lock(folder):
        assert f"pid {os.getpid()}" in (folder / LOCK_NAME).read_text()
        with pytest.raises(MtlDataError, match=f"pid {os.getpid()} on host"):
            with ingest_lock(folder):
                pass
    assert not (tmp_path / "a").exists()  # the folders the lock made, empty again, are removed
