"""The ingest engine: determinism, resume after kill -9, incremental splits, readable shards."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import webdataset as wds

from mtl_data.errors import MtlDataError
from mtl_data.ingest.engine import IngestOptions, ShardSize, plan_ingest, run_ingest
from mtl_data.ingest.kitti import KittiConverter, KittiOptions
from mtl_data.shards.reader import ShardSet, check_shards

REPO = Path(__file__).resolve().parents[1]


def ingest(root, out, workers=1, val=0.25, **kw):
    conv = KittiConverter(root, KittiOptions(val_fraction=val))
    return run_ingest(plan_ingest(conv, out, IngestOptions(workers=workers, **kw)))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file that must be reproducible (ingest.json has a timestamp, so it is left out)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "ingest.json"}


def test_output_is_byte_identical_whatever_the_worker_count(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "w1", workers=1, shard_size=ShardSize(count=3))
    ingest(synth_root("kitti"), tmp_path / "w2", workers=2, shard_size=ShardSize(count=3))
    a, b = tree_bytes(tmp_path / "w1" / "kitti"), tree_bytes(tmp_path / "w2" / "kitti")
    assert sorted(a) == sorted(b) and "manifest.parquet" in a and "train-000000.tar" in a
    assert a == b


def test_overwrite_rerun_reproduces_the_same_bytes(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "o", shard_size=ShardSize(count=2))
    first = tree_bytes(tmp_path / "o" / "kitti")
    ingest(synth_root("kitti"), tmp_path / "o", shard_size=ShardSize(count=2), overwrite=True)
    assert tree_bytes(tmp_path / "o" / "kitti") == first


def test_completion_leaves_no_resume_state_and_a_full_report(synth_root, tmp_path):
    report = ingest(synth_root("kitti"), tmp_path / "o")
    out = tmp_path / "o" / "kitti"
    assert not (out / ".ingest").exists()
    assert not list(out.rglob("*.part"))
    assert (out / "rejects.jsonl").read_text() == ""
    assert sum(s["samples"] for s in report["splits"].values()) == 8
    assert report["splits"]["test"]["tasks"]["det2d"] == 0 and report["splits"]["test"]["tasks"]["depth"] == 2
    assert report["fingerprint"]["converter_options"] == {"val_fraction": 0.25}


def test_shard_size_counts_close_shards_and_offsets_give_random_access(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "o", val=0.0, splits=("train",), shard_size=ShardSize(count=4))
    ss = ShardSet.open(tmp_path / "o")
    m = ss.manifest
    assert m["shard"].to_list() == ["kitti/train-000000.tar"] * 4 + ["kitti/train-000001.tar"] * 2
    assert m["position"].to_list() == [0, 1, 2, 3, 0, 1]
    for key in m["key"]:
        members = ss.read_members(key)
        assert set(members) == {"jpg", "meta.json", "depth.pts", "det2d.json", "det3d.json"}
    assert list(check_shards(ss)) == []


def test_limit_caps_frames_per_split(synth_root, tmp_path):
    report = ingest(synth_root("kitti"), tmp_path / "o", val=0.0, limit=2)
    assert {s: v["samples"] for s, v in report["splits"].items()} == {"train": 2, "test": 2}


def test_splits_added_one_by_one_give_the_same_manifest_as_all_at_once(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "all")
    for split in ("test", "train", "val"):
        ingest(synth_root("kitti"), tmp_path / "inc", splits=(split,))
    assert tree_bytes(tmp_path / "inc" / "kitti") == tree_bytes(tmp_path / "all" / "kitti")


def test_complete_split_built_with_other_options_is_not_silently_mixed(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "o", splits=("train",))
    with pytest.raises(MtlDataError, match=r"different options \(options.max_side: None -> 64\)"):
        ingest(synth_root("kitti"), tmp_path / "o", splits=("test",), max_side=64)
    with pytest.raises(MtlDataError, match=r"splits train were built with other options"):
        ingest(synth_root("kitti"), tmp_path / "o", splits=("test",), max_side=64, overwrite=True)
    ingest(synth_root("kitti"), tmp_path / "o", max_side=64, overwrite=True)
    assert set(ShardSet.open(tmp_path / "o").manifest["width"].to_list()) == {64}


def test_max_side_shrinks_every_stored_sample(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "o", max_side=320)
    ss = ShardSet.open(tmp_path / "o")
    for row in ss.manifest.iter_rows(named=True):
        sample = ss.read_sample(row["key"])
        assert max(sample.size) == 320 and sample.depth.shape == sample.size
        assert sample.orig_size == (row["orig_height"], row["orig_width"]) and row["orig_width"] > 1200
    assert list(check_shards(ss)) == []


# webdataset leaves its tar file handles to the garbage collector; that leak is not ours.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_webdataset_reads_every_sample_with_its_members(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "o", shard_size=ShardSize(count=3))
    ss = ShardSet.open(tmp_path / "o")
    urls = [str(tmp_path / "o" / s) for s in sorted(ss.manifest["shard"].unique())]
    seen = {}
    for item in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        seen[item["__key__"]] = {k for k in item if not k.startswith("__")}
    assert sorted(seen) == sorted(ss.manifest["key"].to_list())
    for key, row in zip(ss.manifest["key"], ss.manifest.iter_rows(named=True)):
        expected = {"jpg", "meta.json", "depth.pts"} | ({"det2d.json", "det3d.json"} if row["has_det2d"] else set())
        assert seen[key] == expected
    gc.collect()  # release webdataset's handles inside this test's warning filter


def test_manifests_of_a_root_read_together_with_a_glob(synth_root, tmp_path):
    ingest(synth_root("kitti"), tmp_path / "o")
    df = pl.read_parquet(str(tmp_path / "o" / "*" / "manifest.parquet"))
    assert df.height == 8
    assert {"key", "shard", "position", "offset", "has_det2d", "det2d_classes", "depth_points"} <= set(df.columns)
    assert df.filter(pl.col("split") == "test")["has_det3d"].to_list() == [False, False]
    assert (df["depth_points"] > 1000).all()


def _ingest_cmd(raw: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mtl_data",
        "ingest",
        "kitti",
        str(raw),
        "--to",
        str(out),
        "--shard-size",
        "2",
        "--workers",
        "1",
    ]


def _many_frames(src: Path, dst: Path, copies: int) -> Path:
    """A larger raw folder: the synthetic training frames hard-linked under new ids."""
    for sub in ("image_2", "label_2", "calib", "velodyne"):
        (dst / "training" / sub).mkdir(parents=True)
        files = sorted((src / "training" / sub).iterdir())
        for i in range(copies):
            f = files[i % len(files)]
            os.link(f, dst / "training" / sub / f"{i:06d}{f.suffix}")
    return dst


def test_kill_9_mid_run_then_rerun_resumes_without_loss_or_duplicates(synth_root, tmp_path):
    raw = _many_frames(synth_root("kitti"), tmp_path / "raw", copies=30)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _ingest_cmd(raw, tmp_path / "out"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sidecar = tmp_path / "out" / "kitti" / ".ingest" / "train-000002.json"
    while not sidecar.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = tmp_path / "out" / "kitti"
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    assert not (out / "manifest.parquet").exists()
    assert [p.name for p in out.glob("*.part")] == []  # temporaries live only under .ingest/
    done_before = sorted(p.name for p in out.glob("*.tar"))
    assert done_before[:3] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]

    subprocess.run(_ingest_cmd(raw, tmp_path / "out"), env=env, check=True, capture_output=True)
    subprocess.run(_ingest_cmd(raw, tmp_path / "clean"), env=env, check=True, capture_output=True)
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean" / "kitti")
    keys = ShardSet.open(tmp_path / "out").manifest["key"].to_list()
    assert len(keys) == len(set(keys)) == 30


@pytest.mark.parametrize("frames_per_task", [1, 5])
def test_ingest_memory_is_bounded_by_the_in_flight_window(synth_root, tmp_path, monkeypatch, frames_per_task):
    """The pool never holds more than a few tasks per worker, whatever the dataset size."""
    from mtl_data.ingest import engine

    raw = _many_frames(synth_root("kitti"), tmp_path / "raw", copies=24)
    conv = KittiConverter(raw)
    monkeypatch.setattr(conv, "frames_per_task", frames_per_task)
    opts = IngestOptions(workers=2)
    submitted, task_sizes = [], []

    class CountingPool:
        def __init__(self):
            from concurrent.futures import ThreadPoolExecutor

            self.inner = ThreadPoolExecutor(2)

        def submit(self, fn, task):
            submitted.extend(frame.id for frame in task)
            task_sizes.append(len(task))
            return self.inner.submit(lambda: [engine.process_frame(conv, opts, frame) for frame in task])

    pool = CountingPool()
    consumed = []
    for result in engine._ordered_results(conv, opts, conv.frames(), pool):
        consumed.append(result.frame_id)
        assert len(submitted) - len(consumed) <= 4 * opts.workers * frames_per_task
    pool.inner.shutdown()
    assert consumed == submitted == sorted(submitted) and len(consumed) == 24
    assert max(task_sizes) == frames_per_task and sum(task_sizes) == 24


def test_adding_a_split_keeps_the_rejects_and_rows_of_the_others(kitti_copy, tmp_path):
    (kitti_copy / "training" / "velodyne" / "000001.bin").write_bytes(b"\0" * 17)  # truncated scan
    for sub, ext in (("image_2", "png"), ("calib", "txt"), ("velodyne", "bin")):
        (kitti_copy / "testing" / sub).mkdir(parents=True)
        (kitti_copy / "testing" / sub / f"000000.{ext}").write_bytes(
            (kitti_copy / "training" / sub / f"000000.{ext}").read_bytes()
        )
    conv = KittiConverter(kitti_copy)
    run_ingest(plan_ingest(conv, tmp_path, IngestOptions(splits=("train",), on_error="skip")))
    report = run_ingest(plan_ingest(conv, tmp_path, IngestOptions(splits=("test",), on_error="skip")))
    assert {s: (v["samples"], v["rejects"]) for s, v in report["splits"].items()} == {"train": (1, 1), "test": (1, 0)}
    rejects = (tmp_path / "kitti" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and "000001.bin" in rejects[0]
    assert ShardSet.open(tmp_path).manifest["key"].to_list() == ["kitti_train_000000", "kitti_test_000000"]


def test_crash_after_the_last_shard_but_before_the_manifest_resumes_without_reconverting(
    synth_root, tmp_path, monkeypatch
):
    from mtl_data.ingest import engine

    conv = KittiConverter(synth_root("kitti"))

    def crash(plan, elapsed):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_finalize", crash)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(plan_ingest(conv, tmp_path / "o", IngestOptions()))
    monkeypatch.undo()
    assert not (tmp_path / "o" / "kitti" / "manifest.parquet").exists()
    plan = plan_ingest(conv, tmp_path / "o", IngestOptions())
    assert plan.remaining == 0 and {sp.status for sp in plan.splits} == {"resume"}
    run_ingest(plan)
    run_ingest(plan_ingest(conv, tmp_path / "clean", IngestOptions()))
    assert tree_bytes(tmp_path / "o" / "kitti") == tree_bytes(tmp_path / "clean" / "kitti")
