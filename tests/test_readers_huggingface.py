"""The shards as Hugging Face datasets: ``to_hf_dataset`` and the stock builder with ``webdataset_features``.

Every value is compared with the project's own decode of the same sample (``ShardSet.read_sample``,
i.e. ``codec.decode_sample``); images by their stored bytes (Pillow and OpenCV JPEG decoders may
differ by a grey level), label maps pixel for pixel.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import datasets
import numpy as np
import pytest
from conftest import box_sample_root, fixture_path

from mtl_data.cli.main import main
from mtl_data.errors import MtlDataError
from mtl_data.readers.huggingface import depth_map, hf_features, to_hf_dataset, webdataset_features
from mtl_data.schema.sample import TASKS
from mtl_data.shards.codec import IMAGE_FORMATS
from mtl_data.shards.depthpoints import encode_depth_points
from mtl_data.shards.reader import ShardSet

META_COLUMNS = ("key", "source", "split", "id", "sequence", "size", "orig_size", "K", "timestamp_us", "tasks")


def assert_array(got, want, dtype=None):
    """``got`` (lists from Arrow, or None) equals ``want`` (an array or None), with ``want``'s shape."""
    if want is None:
        assert got is None
        return
    got = np.asarray(got, dtype=dtype or np.asarray(want).dtype).reshape(np.shape(want))
    np.testing.assert_array_equal(got, want)


def assert_row_is_the_codec_decode(row: dict, shards: ShardSet, tasks=TASKS) -> None:
    """One ``to_hf_dataset`` row (image column not decoded) against the codec's decode of its key."""
    members = shards.read_members(row["key"])
    sample = shards.read_sample(row["key"])
    for task in TASKS:
        if task not in tasks:
            assert row[task] is None, task
    assert row["tasks"] == [t for t in sample.tasks if t in tasks]
    assert (row["source"], row["split"], row["id"], row["sequence"]) == (
        sample.source,
        sample.split,
        sample.id,
        sample.sequence,
    )
    assert tuple(row["size"]) == sample.size and tuple(row["orig_size"]) == sample.orig_size
    assert_array(row["K"], sample.K)
    assert row["timestamp_us"] == sample.timestamp_us
    assert json.loads(row["extra"]) == sample.extra and json.loads(row["notes"]) == sample.notes
    image_ext = next(e for e in IMAGE_FORMATS if e in members)
    assert row["image"]["bytes"] == members[image_ext]  # the stored image, not re-encoded
    if "seg" in tasks:
        assert_array(None if row["seg"] is None else np.asarray(row["seg"]), sample.seg)
    if "depth" in tasks and sample.depth is not None:
        if "depth.pts" in members:
            assert row["depth"] == members["depth.pts"]  # the stored bytes, not re-encoded
        depth = depth_map(row["depth"])
        assert depth.dtype == np.uint16  # stored 16-bit values, not 8-bit
        np.testing.assert_array_equal(depth / np.float32(256), sample.depth)
    elif "depth" in tasks:
        assert row["depth"] is None
    d2, got = sample.det2d if "det2d" in tasks else None, row["det2d"]
    assert (got is None) == (d2 is None)
    if d2 is not None:
        for name in ("boxes", "classes", "ignore", "truncated", "occluded", "amodal"):
            assert_array(got[name], getattr(d2, name))
        assert got["native_class"] == (None if d2.native_class is None else list(d2.native_class))
    d3, got = sample.det3d if "det3d" in tasks else None, row["det3d"]
    assert (got is None) == (d3 is None)
    if d3 is not None:
        for name in ("boxes", "classes", "rotation"):
            assert_array(got[name], getattr(d3, name))
        assert got["native_class"] == (None if d3.native_class is None else list(d3.native_class))
    s = sample.steer if "steer" in tasks else None
    assert row["steer"] == (
        None if s is None else {"angle_deg": s.angle_deg, "speed_kmh": s.speed_kmh, "gap_ms": s.gap_ms}
    )
    g = sample.sign if "sign" in tasks else None
    assert row["sign"] == (
        None if g is None else {"class_id": g.class_id, "roi": None if g.roi is None else list(g.roi)}
    )
    la, got = sample.lane if "lane" in tasks else None, row["lane_lines"]
    assert (got is None) == (la is None) and (row["lane"] is None) == (la is None)
    if la is not None:
        mask = np.asarray(row["lane"])
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, la.mask)
        assert_array(got["h_samples"], la.h_samples)
        assert_array(got["lanes"], la.xs)
        assert got["thickness"] == la.thickness


def rows(ds: datasets.Dataset):
    """The rows with the image column as stored bytes (``Image(decode=False)``), the rest decoded."""
    return ds.cast_column("image", datasets.Image(decode=False))


@pytest.fixture(scope="module")
def synth_train(synth_shards, tmp_path_factory):
    """``to_hf_dataset`` of the train split of every synthetic source (built once)."""
    return to_hf_dataset(synth_shards, split="train", cache_dir=tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def real_mixed(tmp_path_factory, big_image):
    """One shards root converted from the real fixtures: KITTI (depth, det2d with truncation,
    occlusion and native classes, det3d), GTSRB (sign + ROI), TuSimple (lane), Cityscapes (seg;
    the real gtBbox3d sample: modal + amodal det2d, det3d with full rotation)."""
    out = tmp_path_factory.mktemp("real_mixed")
    city = tmp_path_factory.mktemp("real_cityscapes")
    shutil.copytree(fixture_path("cityscapes", "mmseg_pseudo"), city, dirs_exist_ok=True)
    box_sample_root(city, big_image, with_camera=True)
    roots = {
        "kitti": fixture_path("kitti", "object"),
        "gtsrb": fixture_path("gtsrb", "official"),
        "tusimple": fixture_path("tusimple"),
        "cityscapes": city,
    }
    for source, root in roots.items():
        try:
            main(["ingest", source, str(root), "--to", str(out), "--workers", "1"])
        except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
            assert not exc.code, f"ingest {source} failed"
    return out


def mixed_shard(root) -> str:
    """A shard whose first five samples (what the stock builder infers its features from) do not
    all carry the same members."""
    m = ShardSet.open(root).manifest
    for (shard,), group in m.sort("shard", "position").group_by("shard", maintain_order=True):
        if group.head(5).select([f"has_{t}" for t in TASKS]).unique().height > 1:
            return str(root / shard)
    raise AssertionError("no shard with partial labels among its first five samples")


def test_the_stock_builder_refuses_a_split_with_partial_labels(synth_shards, tmp_path):
    # The limitation this module exists for (docs/readers.md): the stock builder infers its
    # features from the first samples and refuses members that differ between them.
    files = {"train": [mixed_shard(synth_shards)]}
    with pytest.raises(ValueError, match="don't share the same prefix or the same types"):
        datasets.load_dataset("webdataset", data_files=files, split="train", cache_dir=str(tmp_path))


def test_every_source_of_a_split_is_one_dataset_equal_to_the_codec(synth_train, synth_shards):
    shards = ShardSet.open(synth_shards)
    train = shards.manifest.filter(shards.manifest["split"] == "train")
    assert synth_train.features == hf_features()
    assert synth_train.num_rows == train.height
    assert sorted(set(synth_train["source"])) == ["a2d2", "cityscapes", "gtsrb", "kitti", "tusimple"]
    presence = {task: set() for task in TASKS}
    for row in rows(synth_train):
        assert_row_is_the_codec_decode(row, shards)
        for task in TASKS:
            presence[task].add(row[task] is not None)
    assert all(seen == {True, False} for seen in presence.values())  # each task labelled by some rows only


def test_the_features_declare_every_member_of_the_schema():
    features = hf_features()
    assert set(TASKS) | set(META_COLUMNS) | {"image", "lane_lines", "extra", "notes"} == set(features)
    for column in ("image", "seg", "lane"):
        assert isinstance(features[column], datasets.Image)
    assert features["depth"] == datasets.Value("binary")  # depth.pts bytes, read with depth_map
    for task, field in (("det2d", "boxes"), ("det2d", "ignore"), ("det2d", "amodal"), ("det3d", "boxes")):
        assert features[task][field].feature.feature == datasets.Value("float64")  # [[...], ...] per box
    assert features["K"].length == 3 and features["size"].length == 2


def test_real_fixtures_of_several_sources_equal_the_codec(real_mixed, tmp_path):
    ds = to_hf_dataset(real_mixed, split=None, cache_dir=tmp_path)
    shards = ShardSet.open(real_mixed)
    assert ds.num_rows == shards.manifest.height
    assert sorted(set(ds["source"])) == ["cityscapes", "gtsrb", "kitti", "tusimple"]
    seen = set()
    for row in rows(ds):
        assert_row_is_the_codec_decode(row, shards)
        if row["det2d"] is not None:
            seen.update(k for k in ("truncated", "occluded", "native_class", "amodal") if row["det2d"][k] is not None)
        if row["det3d"] is not None and row["det3d"]["rotation"] is not None:
            seen.add("rotation")
    assert seen == {"truncated", "occluded", "native_class", "amodal", "rotation"}  # optional fields exercised


def test_numpy_format_reads_every_row_and_keeps_depth_16_bit(synth_train):
    dtypes = {}
    for row, plain in zip(synth_train.with_format("numpy"), synth_train.select_columns(["depth"])):
        for column in ("image", "seg", "lane"):
            if row[column] is not None:
                dtypes.setdefault(column, set()).add(row[column].dtype.name)
        if row["depth"] is not None:
            depth = depth_map(row["depth"])
            dtypes.setdefault("depth", set()).add(depth.dtype.name)
            assert depth.max() > 255
            np.testing.assert_array_equal(depth, depth_map(plain["depth"]))
    assert dtypes == {"image": {"uint8"}, "seg": {"uint8"}, "depth": {"uint16"}, "lane": {"uint8"}}


def test_depth_map_puts_back_the_nul_bytes_numpy_drops():
    # numpy.bytes_ (what with_format("numpy") gives for binary) drops trailing NULs, and about one
    # depth.pts in 256 ends in one: its zlib checksum's last byte
    maps = (np.full((3, 4), v, np.uint16) for v in range(1, 65536))
    depth, data = next((m, d) for m in maps if (d := encode_depth_points(m)).endswith(b"\0"))
    ds = datasets.Dataset.from_dict({"depth": [data]}, features=datasets.Features({"depth": datasets.Value("binary")}))
    [got] = ds.with_format("numpy")["depth"]
    assert isinstance(got, np.bytes_) and bytes(got) == data.rstrip(b"\0")
    np.testing.assert_array_equal(depth_map(got), depth)
    np.testing.assert_array_equal(depth_map(data), depth)
    with pytest.raises(ValueError, match="does not inflate"):
        depth_map(data.rstrip(b"\0"))  # plain bytes that lost them are corrupt, and said to be


def test_schema_1_shards_give_the_same_rows(synth_shards, synth_shards_v1, tmp_path):
    new = to_hf_dataset(synth_shards, split="train", cache_dir=tmp_path / "v2")
    old = to_hf_dataset(synth_shards_v1, split="train", cache_dir=tmp_path / "v1")
    shards = ShardSet.open(synth_shards_v1)
    assert old.num_rows == new.num_rows
    depths = 0
    for row_old, row_new in zip(rows(old), rows(new)):
        assert_row_is_the_codec_decode(row_old, shards)
        assert row_old["depth"] == row_new["depth"]  # depth.png converted to the bytes ingest now writes
        depths += row_old["depth"] is not None
    assert depths > 0


def test_tasks_and_labelled_only_select_labels_and_samples(synth_shards):
    shards = ShardSet.open(synth_shards)
    m = shards.manifest.filter(shards.manifest["split"] == "train")
    ds = to_hf_dataset(synth_shards, split="train", tasks=["det2d", "sign"], labelled_only=True, streaming=True)
    assert isinstance(ds, datasets.IterableDataset)
    got = list(ds.cast_column("image", datasets.Image(decode=False)))
    assert len(got) == (m["has_det2d"] | m["has_sign"]).sum()
    for row in got:
        assert row["det2d"] is not None or row["sign"] is not None
        assert_row_is_the_codec_decode(row, shards, tasks=("det2d", "sign"))


def test_one_source_folder_and_a_source_list(synth_shards, tmp_path):
    ds = to_hf_dataset(synth_shards / "kitti", split="val", cache_dir=tmp_path)
    assert set(ds["source"]) == {"kitti"} and set(ds["split"]) == {"val"}
    ds = to_hf_dataset(synth_shards, source=["gtsrb", "tusimple"], split="train", streaming=True)
    assert {row["source"] for row in ds.select_columns(["source"])} == {"gtsrb", "tusimple"}


def test_the_cache_is_rebuilt_when_a_shard_changes(synth_shards, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(synth_shards / "tusimple", root / "tusimple")
    first = to_hf_dataset(root, split="train", cache_dir=tmp_path / "cache")
    assert to_hf_dataset(root, split="train", cache_dir=tmp_path / "cache")._fingerprint == first._fingerprint
    shard = sorted((root / "tusimple").glob("train-*.tar"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert to_hf_dataset(root, split="train", cache_dir=tmp_path / "cache")._fingerprint != first._fingerprint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "nuscenes"}, "no source nuscenes"),
        ({"split": "holdout"}, "no split 'holdout'"),
        ({"tasks": ["seg", "flow"]}, "unknown tasks flow"),
        ({"source": "gtsrb", "tasks": ["lane"], "labelled_only": True}, "no sample labels any of lane"),
    ],
)
def test_bad_selections_are_user_errors(synth_shards, kwargs, message):
    with pytest.raises(MtlDataError, match=message):
        to_hf_dataset(synth_shards, streaming=True, **kwargs)


def test_without_datasets_installed_the_error_says_what_to_install(monkeypatch, synth_shards):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(MtlDataError, match=r"pip install 'mtl-data\[hf\]'"):
        to_hf_dataset(synth_shards)


def test_the_stock_builder_reads_a_mixed_split_with_the_declared_features(synth_shards, tmp_path):
    shards = ShardSet.open(synth_shards)
    tars = sorted(str(p) for p in synth_shards.glob("*/train-*.tar"))
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": tars}, split="train", features=webdataset_features(), cache_dir=str(tmp_path)
    )
    assert ds.num_rows == (shards.manifest["split"] == "train").sum()
    for row in ds.cast_column("jpg", datasets.Image(decode=False)):
        members = shards.read_members(row["__key__"])
        sample = shards.read_sample(row["__key__"])
        assert row["jpg"]["bytes"] == members["jpg"]
        assert row["meta.json"]["tasks"] == list(sample.tasks)
        assert row["depth.png"] is None  # schema 2 shards: depth.pts
        if sample.depth is None:
            assert row["depth.pts"] is None
        else:
            assert row["depth.pts"] == members["depth.pts"]
            np.testing.assert_array_equal(depth_map(row["depth.pts"]) / np.float32(256), sample.depth)
        assert (row["sign.cls"] is None) == (sample.sign is None)
        if sample.det2d is not None:
            np.testing.assert_array_equal(np.asarray(row["det2d.json"]["boxes"]).reshape(-1, 4), sample.det2d.boxes)
        else:
            assert row["det2d.json"] is None


def test_the_stock_builder_reads_schema_1_depth_as_16_bit(synth_shards_v1, tmp_path):
    shards = ShardSet.open(synth_shards_v1)
    tars = sorted(str(p) for p in synth_shards_v1.glob("*/train-*.tar"))
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": tars}, split="train", features=webdataset_features(), cache_dir=str(tmp_path)
    )
    depths = 0
    for row in ds.select_columns(["__key__", "depth.png", "depth.pts"]):
        sample = shards.read_sample(row["__key__"])
        assert row["depth.pts"] is None
        assert (row["depth.png"] is None) == (sample.depth is None)
        if sample.depth is not None:
            depths += 1
            assert np.asarray(row["depth.png"]).dtype == np.uint16
            np.testing.assert_array_equal(np.asarray(row["depth.png"]) / np.float32(256), sample.depth)
    assert depths > 0
