"""The streaming loader (``mtl_data.train.data``) end to end on shards of all five synthetic sources:
mixing ratios, present masks, the sharded evaluation pass, reproducibility, corrupt data."""

from __future__ import annotations

import collections
import io
import json
import math
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from conftest import first_batches

from mtl_data.cli.main import main
from mtl_data.errors import MtlDataError
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data.decode import UnsafeMemberError
from mtl_data.train.data.loader import build_loader, dist_info, to_device
from mtl_data.train.data.stages import split_evenly

SOURCES = ("a2d2", "cityscapes", "gtsrb", "kitti", "tusimple")
SIZE = (64, 64)  # small: the tests are about what is loaded, not how fast


@pytest.fixture(scope="session")
def shards(synth_shards) -> Path:
    """Every synthetic source ingested, 3 samples per shard, val splits (conftest)."""
    return synth_shards


@pytest.fixture(scope="session")
def manifest(shards) -> dict[str, dict]:
    """key -> manifest row of the shards root."""
    return {row["key"]: row for row in ShardSet.open(shards).manifest.iter_rows(named=True)}


def labelled_keys(manifest: dict[str, dict], split: str, sources=SOURCES) -> list[str]:
    """Keys of ``split`` (of ``sources``) that label at least one task."""
    return sorted(
        k
        for k, r in manifest.items()
        if r["split"] == split and r["source"] in sources and any(v for c, v in r.items() if c.startswith("has_"))
    )


# ---- mixing ------------------------------------------------------------------------------------


def test_mixing_ratios_hold_within_a_binomial_tolerance(shards):
    mix = {"gtsrb": 0.5, "a2d2": 0.3, "cityscapes": 0.2}
    loader = build_loader(shards, mix=mix, batch_size=64, image_size=SIZE, workers=0, seed=1)
    counts = collections.Counter(s for batch in first_batches(loader, 40) for s in batch["source"])
    n = sum(counts.values())
    assert n == 2560 and set(counts) == set(mix)
    for source, p in mix.items():
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[source] - n * p) <= 4 * sigma, (source, counts[source], n * p)


def test_proportional_mix_follows_the_sample_counts_of_the_split(shards, manifest):
    train = labelled_keys(manifest, "train")
    expected = {s: sum(manifest[k]["source"] == s for k in train) / len(train) for s in SOURCES}
    for mix in ("proportional", None):
        loader = build_loader(shards, mix=mix, batch_size=4, image_size=SIZE, workers=0)
        assert loader.probs == pytest.approx(expected)
        assert sorted(loader.probs) == sorted(SOURCES)


def test_tasks_none_means_every_task_of_the_selected_sources(shards):
    loader = build_loader(shards, mix={"kitti": 1, "gtsrb": 1}, batch_size=2, image_size=SIZE, workers=0)
    assert loader.tasks == ("depth", "det2d", "det3d", "sign")
    [batch] = first_batches(loader, 1)
    assert set(batch["present"]) == set(loader.tasks) and "seg" not in batch and "lane" not in batch


def test_sources_that_label_no_requested_task_are_left_out(shards, caplog):
    loader = build_loader(
        shards, tasks=["sign"], mix={"gtsrb": 1, "kitti": 1}, batch_size=8, image_size=SIZE, workers=0
    )
    assert loader.probs == {"gtsrb": 1.0}
    assert "kitti is left out" in caplog.text
    assert {s for batch in first_batches(loader, 3) for s in batch["source"]} == {"gtsrb"}


def test_a_stats_report_recommendation_sets_the_mix(shards, tmp_path):
    report = tmp_path / "stats.json"
    main(["stats", str(shards), "--json", str(report), "--alpha", "0.5"])
    recommended = json.loads(report.read_text())["recommendations"]["mix"]["0.5"]
    loader = build_loader(shards, mix=f"{report}#0.5", batch_size=4, image_size=SIZE, workers=0)
    assert loader.probs == pytest.approx(recommended)
    assert set(loader.probs) == set(SOURCES) and len(set(loader.probs.values())) > 1


# ---- the batch contract --------------------------------------------------------------------------


def _check_present(batch: dict, tasks, manifest) -> int:
    """Every real sample's ``present`` equals its manifest ``has_<task>``; absent labels are zeros."""
    checked = 0
    for i, key in enumerate(batch["key"]):
        for task in tasks:
            present = bool(batch["present"][task][i])
            assert present == (bool(manifest[key][f"has_{task}"]) if key else False), (key, task)
            if not present and task in ("seg", "depth", "lane", "steer", "sign"):
                assert not batch[task][i].any(), (key, task)
            if not present and task in ("det2d", "det3d"):
                assert batch[f"{task}_count"][i] == 0 and not batch[f"{task}_classes"][i].ge(0).any()
        checked += bool(key)
    return checked


def test_present_masks_match_each_samples_manifest_tasks_in_training(shards, manifest):
    loader = build_loader(shards, batch_size=16, image_size=SIZE, workers=0, seed=2, mix={s: 1 for s in SOURCES})
    assert loader.tasks == ("seg", "depth", "det2d", "det3d", "steer", "sign", "lane")
    batches = first_batches(loader, 6)
    assert sum(_check_present(b, loader.tasks, manifest) for b in batches) == 96
    first = batches[0]
    assert first["image"].shape == (16, 3, *SIZE) and first["image"].dtype == torch.float32
    assert first["seg"].shape == (16, *SIZE) and first["seg"].dtype == torch.int64
    assert first["depth"].dtype == torch.float32 and first["det2d"].shape[:4] == (16, 8, 8, 10)


def test_present_masks_match_each_samples_manifest_tasks_in_evaluation(shards, manifest):
    loader = build_loader(shards, split="val", infinite=False, batch_size=8, image_size=SIZE, workers=0)
    checked = sum(_check_present(b, loader.tasks, manifest) for b in loader)
    assert checked == len(labelled_keys(manifest, "val"))


# ---- the evaluation pass ---------------------------------------------------------------------------


@pytest.mark.parametrize("mix", [None, {"gtsrb": 1, "cityscapes": 1}], ids=["all-sources", "odd-count"])
def test_two_ranks_two_workers_evaluation_pass_yields_every_key_exactly_once(shards, manifest, mix):
    sources = SOURCES if mix is None else tuple(mix)
    expected = labelled_keys(manifest, "val", sources)
    seen, per_rank, sizes = [], [], []
    for rank in range(2):
        loader = build_loader(
            shards,
            split="val",
            mix=mix,
            infinite=False,
            batch_size=4,
            image_size=SIZE,
            workers=2,
            rank=rank,
            world_size=2,
        )
        batches = list(loader)
        per_rank.append((len(batches), len(loader)))
        sizes.append([len(b["key"]) for b in batches])
        for batch in batches:
            for i, key in enumerate(batch["key"]):
                if key:
                    seen.append(key)
                else:  # a dummy: masked, labels zero
                    assert not any(bool(p[i]) for p in batch["present"].values())
                    assert batch["source"][i] == ""
        assert loader.skipped == 0
    assert sorted(seen) == expected  # every key once, none repeated
    assert per_rank[0] == per_rank[1] and per_rank[0][0] == per_rank[0][1]
    assert sizes[0] == sizes[1]  # same batch sizes too: ranks stay in step
    slots = sum(sizes[0]) * 2
    assert slots - len(expected) == len(expected) % 2  # dummies only pad the short rank
    if mix is not None:
        assert len(expected) % 2 == 1  # the case that needs a dummy


def test_evaluation_ranges_are_contiguous_and_balanced():
    assert split_evenly(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split_evenly(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]


def test_evaluation_loader_has_a_length_and_training_loader_has_none(shards):
    ev = build_loader(shards, split="val", infinite=False, batch_size=5, image_size=SIZE, workers=0)
    assert len(ev) == len(list(ev))
    with pytest.raises(TypeError, match="count steps"):
        len(build_loader(shards, batch_size=5, image_size=SIZE, workers=0))


# ---- reproducibility -------------------------------------------------------------------------------


def _same(a: dict, b: dict) -> bool:
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            if not torch.equal(value, b[key]):
                return False
        elif isinstance(value, dict):
            if not _same(value, b[key]):
                return False
        elif value != b[key]:
            return False
    return a.keys() == b.keys()


def test_same_seed_gives_the_same_batches_and_another_seed_other_batches(shards):
    def batches(seed: int) -> list[dict]:
        loader = build_loader(shards, batch_size=8, image_size=SIZE, workers=2, seed=seed, mix={s: 1 for s in SOURCES})
        return first_batches(loader, 3)

    first, again, other = batches(7), batches(7), batches(8)
    assert all(_same(a, b) for a, b in zip(first, again))
    assert [b["key"] for b in first] != [b["key"] for b in other]
    assert len({k for b in first for k in b["key"]}) > 1


def test_ranks_get_different_streams_and_never_run_out_of_shards(shards, tmp_path):
    # one shard of 3 samples for 2 ranks x 2 workers: resampling by seed, never a hang
    root, keys = one_source_root(shards, tmp_path / "root", "gtsrb", "train", 1)
    streams = []
    for rank in range(2):
        loader = build_loader(root, batch_size=4, image_size=SIZE, workers=2, rank=rank, world_size=2, seed=5)
        batches = first_batches(loader, 4)
        assert {k for b in batches for k in b["key"]} == set(keys[0])
        streams.append([b["key"] for b in batches])
    assert streams[0] != streams[1]


def test_each_pass_is_a_new_epoch_and_set_epoch_replays_one(shards):
    loader = build_loader(shards, batch_size=8, image_size=SIZE, workers=0, seed=3)
    first, second = first_batches(loader, 2), first_batches(loader, 2)
    assert [b["key"] for b in first] != [b["key"] for b in second]
    loader.set_epoch(0)
    assert all(_same(a, b) for a, b in zip(first, first_batches(loader, 2)))


def test_augmentation_is_off_by_default_in_evaluation(shards):
    a = list(build_loader(shards, split="val", infinite=False, batch_size=8, image_size=SIZE, workers=0, seed=1))
    b = list(build_loader(shards, split="val", infinite=False, batch_size=8, image_size=SIZE, workers=0, seed=2))
    assert all(_same(x, y) for x, y in zip(a, b))


# ---- corrupt data ------------------------------------------------------------------------------------


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _sample_members(path: Path, index: int) -> list[tarfile.TarInfo]:
    keys = list(dict.fromkeys(m.name.partition(".")[0] for m in _members(path)))
    return [m for m in _members(path) if m.name.partition(".")[0] == keys[index]]


def truncate_inside_image(path: Path, index: int) -> None:
    """Cut the tar in the middle of sample ``index``'s image."""
    image = next(m for m in _sample_members(path, index) if m.name.endswith((".jpg", ".png")))
    path.write_bytes(path.read_bytes()[: image.offset_data + image.size // 2])


def truncate_before(path: Path, index: int) -> None:
    """Cut the tar exactly at sample ``index``'s first header (no end-of-archive blocks)."""
    path.write_bytes(path.read_bytes()[: _sample_members(path, index)[0].offset])


def garble_image(path: Path, index: int) -> None:
    """Overwrite sample ``index``'s JPEG with as many junk bytes (offsets stay valid)."""
    image = next(m for m in _sample_members(path, index) if m.name.endswith(".jpg"))
    data = bytearray(path.read_bytes())
    data[image.offset_data : image.offset_data + image.size] = bytes(range(7, 256)) * (image.size // 249) + b"\x01" * (
        image.size % 249
    )
    path.write_bytes(bytes(data))


def add_pickle_member(path: Path, index: int) -> None:
    """Rewrite the tar with a ``<key>.pyd`` member appended to sample ``index``."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    last = _sample_members(path, index)[-1].name
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
            if info.name == last:
                extra = tarfile.TarInfo(last.partition(".")[0] + ".pyd")
                payload = b"\x80\x04K\x01."  # pickle of 1: harmless, and must still never be loaded
                extra.size = len(payload)
                tar.addfile(extra, io.BytesIO(payload))


def one_source_root(
    shards: Path, dst: Path, source: str, split: str, count: int, damage: Callable[[Path], None] | None = None
) -> tuple[Path, list[list[str]]]:
    """A shards root holding the first ``count`` shards of ``source``/``split`` (the first one
    damaged by ``damage``) and their manifest rows; returns it and the keys of each shard."""
    table = pq.read_table(shards / source / "manifest.parquet")
    names = sorted({s for s, sp in zip(table["shard"].to_pylist(), table["split"].to_pylist()) if sp == split})
    names = names[:count]
    (dst / source).mkdir(parents=True)
    for name in names:
        shutil.copyfile(shards / name, dst / name)
    kept = table.filter(pc.is_in(table["shard"], pa.array(names)))
    pq.write_table(kept, dst / source / "manifest.parquet")
    shutil.copyfile(shards / source / "classes.json", dst / source / "classes.json")
    if damage is not None:
        damage(dst / names[0])
    rows = kept.to_pylist()
    return dst, [[r["key"] for r in rows if r["shard"] == n] for n in names]


@pytest.mark.parametrize(
    "damage, lost_from",
    [
        (lambda p: truncate_inside_image(p, 1), 1),
        (lambda p: truncate_before(p, 2), 2),
        (lambda p: garble_image(p, 1), None),
    ],
    ids=["truncated-mid-member", "truncated-at-a-sample", "corrupt-image"],
)
def test_corrupt_data_is_skipped_and_counted_in_training(shards, tmp_path, damage, lost_from):
    root, keys = one_source_root(shards, tmp_path / "root", "gtsrb", "train", 2, damage)
    bad = keys[0][lost_from:] if lost_from is not None else [keys[0][1]]
    loader = build_loader(root, batch_size=16, image_size=SIZE, workers=0, shuffle_buffer=8)
    seen = {k for batch in first_batches(loader, 8) for k in batch["key"]}
    assert seen == set(keys[0] + keys[1]) - set(bad)
    assert loader.skipped > 0 and loader.skipped % len(bad) == 0  # counted at every draw of the shard


@pytest.mark.parametrize("source", ["gtsrb", "a2d2"])  # a2d2: the JPEG is decoded at reduced size
def test_corrupt_image_becomes_a_counted_dummy_in_evaluation(shards, tmp_path, source):
    root, keys = one_source_root(shards, tmp_path / "root", source, "train", 2, lambda p: garble_image(p, 1))
    loader = build_loader(root, split="train", infinite=False, batch_size=2, image_size=SIZE, workers=2)
    batches = list(loader)
    got = [k for b in batches for k in b["key"]]
    assert sorted(k for k in got if k) == sorted(set(keys[0] + keys[1]) - {keys[0][1]})
    assert got.count("") == 1 and loader.skipped == 1 and len(batches) == len(loader)


@pytest.mark.parametrize(
    "damage, lost_from",
    [
        (lambda p: truncate_inside_image(p, 1), 1),
        (lambda p: truncate_before(p, 2), 2),
    ],
    ids=["truncated-mid-member", "truncated-at-a-sample"],
)
def test_truncated_tar_becomes_counted_dummies_in_evaluation(shards, tmp_path, damage, lost_from):
    root, keys = one_source_root(shards, tmp_path / "root", "gtsrb", "val", 2, damage)
    loader = build_loader(root, split="val", infinite=False, batch_size=4, image_size=SIZE, workers=0)
    got = [k for b in loader for k in b["key"]]
    lost = keys[0][lost_from:]
    assert sorted(k for k in got if k) == sorted(set(keys[0] + keys[1]) - set(lost))
    assert got.count("") == len(lost) == loader.skipped


def test_a_source_whose_shards_are_all_unreadable_is_an_error_not_a_hang(shards, tmp_path):
    root, _ = one_source_root(shards, tmp_path / "root", "gtsrb", "train", 1, lambda p: p.write_bytes(b"x" * 700))
    loader = build_loader(root, batch_size=4, image_size=SIZE, workers=0)
    with pytest.raises(MtlDataError, match="gave no readable sample"):
        first_batches(loader, 1)
    assert loader.skipped == 0  # the batch that would carry the counts never formed


@pytest.mark.parametrize("workers", [0, 1])
def test_a_pickle_member_is_refused_in_training(shards, tmp_path, workers):
    root, keys = one_source_root(shards, tmp_path / "root", "gtsrb", "train", 1, lambda p: add_pickle_member(p, 0))
    loader = build_loader(root, batch_size=2, image_size=SIZE, workers=workers)
    with pytest.raises(UnsafeMemberError, match=rf"{keys[0][0]}\.pyd: refusing a pickle-style member"):
        first_batches(loader, 1)


def test_a_pickle_member_is_refused_in_evaluation(shards, tmp_path):
    root, keys = one_source_root(shards, tmp_path / "root", "gtsrb", "val", 1, lambda p: add_pickle_member(p, 2))
    loader = build_loader(root, split="val", infinite=False, batch_size=2, image_size=SIZE, workers=0)
    with pytest.raises(UnsafeMemberError, match=r"gtsrb/val-000000\.tar"):
        list(loader)


# ---- options ------------------------------------------------------------------------------------------


def test_rank_and_world_size_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist_info(None, None) == (1, 3)
    assert dist_info(0, None) == (0, 3)
    monkeypatch.delenv("RANK")
    assert dist_info(None, None) == (0, 1)
    with pytest.raises(MtlDataError, match="rank 2 is not in 0..world_size-1"):
        dist_info(2, 2)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"tasks": ["segmentation"]}, "unknown segmentation; choose from seg, depth"),
        ({"split": "holdout"}, "no sample in split 'holdout'; the shards have test, train, val"),
        ({"mix": {"kitty": 1}}, "unknown source(s) 'kitty'; the shards hold a2d2, cityscapes, gtsrb, kitti, tusimple"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"image_size": (0, 64)}, "image_size must be (H, W) positive integers"),
        ({"jpeg_decoder": "turbo"}, "unknown JPEG decoder 'turbo': expected one of auto, opencv, simplejpeg"),
    ],
)
def test_bad_options_are_one_clear_error(shards, kwargs, says):
    args = {"batch_size": 2, "image_size": SIZE, "workers": 0, **kwargs}
    with pytest.raises(MtlDataError) as info:
        build_loader(shards, **args)
    assert says in str(info.value)


def test_device_option_moves_every_tensor(shards):
    loader = build_loader(shards, batch_size=2, image_size=SIZE, workers=0, device="cpu", mix={"kitti": 1})
    [batch] = first_batches(loader, 1)
    assert batch["image"].device.type == "cpu" and batch["image"].dtype == torch.float32
    nested = to_device({"a": torch.zeros(2), "b": {"c": torch.ones(1)}, "k": ["x"]}, torch.device("cpu"))
    assert nested["k"] == ["x"] and nested["b"]["c"].item() == 1.0


def test_batches_from_worker_processes_are_the_same_contract(shards, manifest):
    loader = build_loader(shards, batch_size=8, image_size=SIZE, workers=2, mix={s: 1 for s in SOURCES})
    batches = first_batches(loader, 4)
    assert sum(_check_present(b, loader.tasks, manifest) for b in batches) == 32
    assert (
        all(isinstance(b["skipped"], int) for b in batches)
        and np.isfinite(np.stack([b["image"].numpy() for b in batches])).all()
    )


# ---- the `mtl-data batches` command -------------------------------------------------------------


def test_batches_command_shows_a_mixed_training_stream(cli, shards, tmp_path):
    report = tmp_path / "stats.json"
    assert cli("stats", shards, "--json", report).code == 0
    result = cli("batches", shards, "--mix", f"{report}#0.5", "--batches", "2", "--image-size", "64x128")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert max(map(len, lines)) <= 100
    assert lines[0].startswith("training stream of train: tasks seg, depth, det2d, det3d, steer, sign, lane")
    assert sum(line.startswith("batch ") for line in lines) == 2
    assert "image (8, 3, 64, 128) float32" in result.out and "det2d 8x8x8x10x16 float32" in result.out


def test_batches_command_evaluation_pass_counts_every_sample_once(cli, shards, manifest):
    result = cli(
        "batches",
        shards,
        "--split",
        "val",
        "--eval",
        "--batch-size",
        "4",
        "--image-size",
        "32x32",
        "--mix",
        "kitti=1,tusimple=1",
    )
    assert result.code == 0, result.err
    expected = collections.Counter(manifest[k]["source"] for k in labelled_keys(manifest, "val", ("kitti", "tusimple")))
    assert result.out.splitlines()[-1] == (
        "samples per source: " + ", ".join(f"{s} {n}" for s, n in sorted(expected.items())) + "; skipped (corrupt) 0"
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (("--mix", "kitti:1"), "expected 'proportional', a {source: ratio} mapping or 'STATS.json#ALPHA'"),
        (("--mix", "kitti=x"), "expected source=ratio pairs"),
        (("--image-size", "64"), "expected HxW"),
        (("--tasks", "seg,flow"), "unknown flow"),
    ],
)
def test_batches_command_bad_options_are_one_clear_error(cli, shards, args, says):
    assert says in cli("batches", shards, *args).one_error_line()


# ---- the shared-memory batch ring ---------------------------------------------------------------


DENSE = ("image", "seg", "depth", "lane")


@pytest.mark.parametrize("shared_ring", [True, False])
def test_batches_kept_by_the_consumer_stay_intact_while_workers_reuse_their_slots(shards, shared_ring):
    """A whole evaluation pass kept in a list (many more batches than the ring's slots) equals
    the pass loaded in this process: no yielded tensor aliases a slot a worker writes again."""
    args = {"split": "val", "infinite": False, "batch_size": 2, "image_size": SIZE, "prefetch_factor": 2}
    kept = list(build_loader(shards, workers=1, shared_ring=shared_ring, **args))
    here = list(build_loader(shards, workers=0, **args))
    assert len(kept) == len(here) > 2 * (2 + 2)  # the ring (prefetch_factor + 2 slots) came round twice
    for a, b in zip(kept, here):
        assert a["key"] == b["key"]
        for key in DENSE:
            if key in b:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_the_ring_writes_batches_into_reused_shared_slots(shards):
    from mtl_data.train.data.stages import BatchRing, SkipCounter, batches
    from mtl_data.train.data.targets import TargetConfig, encode_example

    config = TargetConfig(("seg", "depth", "det2d"), SIZE)
    examples = [encode_example(None, config) for _ in range(7)]
    ring = BatchRing(2)
    out = list(batches(iter(examples), 3, SkipCounter(), ring))
    assert [len(b["key"]) for b in out] == [3, 3, 1]
    assert out[0]["image"].is_shared() and out[0]["depth"].dtype == torch.uint16
    assert out[0]["image"].shape == (3, 3, *SIZE) and out[2]["seg"].shape == (1, *SIZE)
    ptr = [b["depth"].untyped_storage().data_ptr() for b in out]
    assert ptr[0] != ptr[1] and ptr[2] == ptr[0]  # two slots, used in turn
    assert not out[0]["det2d"].is_shared()  # small arrays travel the usual way
    with pytest.raises(ValueError, match="at least 2 slots"):
        BatchRing(1)
