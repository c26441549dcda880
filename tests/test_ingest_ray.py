"""``ingest --engine ray``: frames converted as Ray tasks give the local engine's output, byte for byte.

One local Ray instance of 2 CPUs per test module (per xdist worker): a run finds it started and
leaves it running; the fixture shuts it down and removes its session folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile

import pytest
import ray
from conftest import (
    assert_error_line,
    assert_fails_before_writing,
    assert_nothing_half_written,
    ingest_cli,
    raw_with_a_bad_frame,
    tree_bytes,
)

from mtl_data.ingest import engine
from mtl_data.ingest.engine import IngestOptions, RayPool, ShardSize, plan_ingest, run_ingest
from mtl_data.ingest.kitti import KittiConverter


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    # Under /tmp, not pytest's deeper tmp folder: Ray's socket paths must fit in 107 bytes.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


SHARD_SIZES = {"kitti": "3", "gtsrb": "4"}


@pytest.mark.parametrize("source", ["kitti", "gtsrb"])
def test_ray_engine_output_equals_the_local_engine_byte_for_byte(synth_root, tmp_path, cli, source):
    raw = raw_with_a_bad_frame(synth_root, tmp_path, source)
    # with previous frames (KITTI's prev_2/; GTSRB says once it has none)
    extra = ("--shard-size", SHARD_SIZES[source], "--on-error", "skip", "--prev-frames", "2")
    local = ingest_cli(cli, source, raw, tmp_path / "local", *extra, workers=2)
    assert local.code == 0, local.err
    remote = ingest_cli(cli, source, raw, tmp_path / "ray", *extra, "--engine", "ray", workers=2)
    assert remote.code == 0, remote.err
    assert remote.out.replace("/ray", "/local") == local.out
    expected = tree_bytes(tmp_path / "local" / source)
    assert sum(name.endswith(".tar") for name in expected) >= 3
    assert expected["rejects.jsonl"].count(b"\n") == 1
    assert any(b".prev1.jpg" in data for data in expected.values()) == (source == "kitti")
    assert {"manifest.parquet", "classes.json"} <= set(expected)
    assert tree_bytes(tmp_path / "ray" / source) == expected
    assert json.loads((tmp_path / "ray" / source / "ingest.json").read_text())["engine"] == "ray"
    assert ray.is_initialized()  # the run found Ray started: it left it running


def test_bad_input_under_on_error_fail_is_the_local_engines_one_error_line(synth_root, tmp_path, cli):
    raw = raw_with_a_bad_frame(synth_root, tmp_path, "kitti")
    local = ingest_cli(cli, "kitti", raw, tmp_path / "local", "--shard-size", "3", workers=2)
    remote = ingest_cli(cli, "kitti", raw, tmp_path / "ray", "--shard-size", "3", "--engine", "ray", workers=2)
    line = assert_error_line(remote, "000001.bin")
    assert line == local.one_error_line()
    assert_nothing_half_written(tmp_path / "ray", "kitti")


def test_an_exception_raised_inside_a_ray_task_is_re_raised_as_itself(synth_root):
    conv = KittiConverter(synth_root("kitti"))
    pool = RayPool(conv, IngestOptions(workers=2, engine="ray"))
    assert pool.window == 8  # four tasks per CPU of the instance
    future = pool.submit(json.loads, ["a list is no JSON text"])
    with pytest.raises(TypeError, match="the JSON object must be str") as info:
        future.result()
    assert type(info.value) is TypeError  # not Ray's RayTaskError wrapper
    pool.shutdown(cancel_futures=True)
    assert ray.is_initialized()  # started by someone else: left running


def test_an_interrupted_ray_run_resumes_to_the_local_engines_bytes(synth_root, tmp_path, monkeypatch):
    raw = synth_root("kitti")
    size = ShardSize(count=2)
    conv = KittiConverter(raw)
    run_ingest(plan_ingest(conv, tmp_path / "local", IngestOptions(workers=2, shard_size=size)))
    commit = engine.TarShardWriter.commit
    commits = []

    def commit_once(writer):
        if commits:
            raise RuntimeError("interrupted after the first shard")
        commits.append(writer)
        commit(writer)

    monkeypatch.setattr(engine.TarShardWriter, "commit", commit_once)
    options = IngestOptions(workers=2, shard_size=size, engine="ray")
    with pytest.raises(RuntimeError, match="interrupted"):
        run_ingest(plan_ingest(conv, tmp_path / "ray", options))
    monkeypatch.setattr(engine.TarShardWriter, "commit", commit)
    plan = plan_ingest(conv, tmp_path / "ray", options)
    total = sum(len(sp.frames) for sp in plan.splits)
    assert plan.remaining == total - 2  # the first shard's two frames are not converted again
    run_ingest(plan)
    assert tree_bytes(tmp_path / "ray" / "kitti") == tree_bytes(tmp_path / "local" / "kitti")


def test_ray_missing_is_one_line_saying_how_to_install_it(synth_root, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = ingest_cli(cli, "kitti", synth_root("kitti"), tmp_path / "out", "--engine", "ray")
    assert_fails_before_writing(
        result, tmp_path / "out", "kitti", "--engine ray needs Ray", "pip install 'mtl-data[ray]'"
    )


def test_address_without_engine_ray_is_an_error(synth_root, tmp_path, cli):
    result = ingest_cli(cli, "kitti", synth_root("kitti"), tmp_path / "out", "--address", "ray://head:10001")
    assert_fails_before_writing(result, tmp_path / "out", "kitti", "--address", "--engine ray")


def test_reshard_on_ray_equals_the_local_engine_byte_for_byte(synth_root, tmp_path, cli):
    master = tmp_path / "master"
    assert ingest_cli(cli, "kitti", synth_root("kitti"), master, "--shard-size", "3").code == 0
    for engine_name in ("local", "ray"):
        out = tmp_path / engine_name
        result = cli("reshard", master, "--max-side", 64, "--to", out, "--workers", 2, "--engine", engine_name)
        assert result.code == 0, result.err
    assert tree_bytes(tmp_path / "ray" / "kitti") == tree_bytes(tmp_path / "local" / "kitti")


def test_a_cluster_address_that_cannot_be_reached_is_one_line_before_anything_is_written(
    synth_root, tmp_path, cli, monkeypatch
):
    import socket

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"ray://127.0.0.1:{port}"
    result = ingest_cli(cli, "kitti", synth_root("kitti"), tmp_path / "out", "--engine", "ray", "--address", address)
    assert_fails_before_writing(result, tmp_path / "out", "kitti", f"cannot reach the Ray cluster at {address}")
