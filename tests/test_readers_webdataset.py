"""Plain ``webdataset`` with ``mtl_data.readers.webdataset.decoders``: every label as the codec reads it.

The stock image decoders are run too, to pin down what they do to a schema 1 ``depth.png``
(docs/readers.md); schema 1 shards come from ``conftest.rewrite_as_schema_1``.
"""

from __future__ import annotations

import gc

import cv2
import numpy as np
import PIL.Image
import pytest
import webdataset as wds
from conftest import fixture_path

from mtl_data.cli.main import main
from mtl_data.readers.webdataset import decode_depth_member, decode_label_png, decoders
from mtl_data.shards.codec import DecodeError
from mtl_data.shards.depthpoints import decode_depth_points, encode_depth_points
from mtl_data.shards.png import decode_png
from mtl_data.shards.reader import ShardSet

# webdataset leaves its tar file handles to the garbage collector (test_engine.py): ``read``
# collects them inside the test, under this filter; the leak is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")


def read(urls: str | list[str], *handlers, decode: bool = True) -> list[dict]:
    """Every sample of ``urls`` through plain ``wds.WebDataset(...).decode(*handlers)`` (raw
    members with ``decode=False``), in tar order."""
    dataset = wds.WebDataset(urls, shardshuffle=False)
    samples = list(dataset.decode(*handlers) if decode else dataset)
    gc.collect()
    return samples


def train_tars(root) -> list[str]:
    return sorted(str(p) for p in root.glob("*/train-*.tar"))


def first_with(tars: list[str], member: str) -> dict:
    """The raw members of the first sample that has ``member``."""
    return next(s for s in read(tars, decode=False) if member in s)


@pytest.fixture(scope="module")
def kitti_png(tmp_path_factory):
    """The two real KITTI frames ingested with lossless PNG images (image member ``png``)."""
    out = tmp_path_factory.mktemp("kitti_png")
    try:
        main(["ingest", "kitti", str(fixture_path("kitti", "object")), "--to", str(out), "--image-format", "png"])
    except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
        assert not exc.code
    return out


@pytest.mark.parametrize("spec", ["l8", "rgb8", "pil", "l"])
def test_the_stock_image_decoders_squash_16_bit_depth(synth_shards_v1, spec):
    tars = train_tars(synth_shards_v1)
    raw = first_with(tars, "depth.png")
    stored = decode_png(raw["depth.png"])
    assert stored.dtype == np.uint16 and (stored > 255).any()
    sample = next(s for s in read(raw["__url__"], spec) if s["__key__"] == raw["__key__"])
    got = np.asarray(sample["depth.png"])
    assert got.dtype != np.uint16 and not np.array_equal(got.reshape(stored.shape + (-1,))[..., 0], stored)
    if spec == "l8":  # clipped at 255: every measurement beyond 255 / 256 m is 255, depth becomes a mask
        np.testing.assert_array_equal(got, np.clip(stored, 0, 255))


def test_without_an_image_spec_webdataset_leaves_pngs_as_bytes(synth_shards_v1):
    raw = first_with(train_tars(synth_shards_v1), "depth.png")
    assert all(isinstance(s["depth.png"], bytes) for s in read(raw["__url__"]) if "depth.png" in s)


@pytest.mark.parametrize("spec", [None, "l8", "rgb8", "pil", "torch"])
def test_webdataset_alone_leaves_depth_points_as_bytes(synth_shards, spec):
    raw = first_with(train_tars(synth_shards), "depth.pts")
    got = [s for s in read(raw["__url__"], *([spec] if spec else [])) if "depth.pts" in s]
    assert got and all(isinstance(s["depth.pts"], bytes) for s in got)


@pytest.mark.parametrize("root", ["synth_shards", "synth_shards_v1"])
def test_the_handlers_give_one_depth_map_for_both_schema_versions(root, request, synth_shards):
    member = {"synth_shards": "depth.pts", "synth_shards_v1": "depth.png"}[root]
    got = {s["__key__"]: s for s in read(train_tars(request.getfixturevalue(root)), *decoders())}
    shards = ShardSet.open(synth_shards)  # the schema 2 originals
    depths = 0
    for key, s in got.items():
        sample = shards.read_sample(key)
        other = ({"depth.png", "depth.pts"} - {member}).pop()
        assert (member in s) == (sample.depth is not None) and other not in s
        if sample.depth is not None:
            depths += 1
            assert s[member].dtype == np.uint16 and s[member].shape == sample.size
            np.testing.assert_array_equal(s[member] / np.float32(256), sample.depth)
    assert depths > 0


def test_the_handlers_decode_every_label_of_every_source_as_the_codec(synth_shards):
    shards = ShardSet.open(synth_shards)
    seen = set()
    for s in read(train_tars(synth_shards), *decoders(image="numpy")):
        sample = shards.read_sample(s["__key__"])
        seen.add(sample.source)
        np.testing.assert_array_equal(s["jpg"], sample.image)  # the codec's own image decode
        assert s["meta.json"]["tasks"] == list(sample.tasks)
        assert ("depth.pts" in s) == (sample.depth is not None) and "depth.png" not in s
        if sample.depth is not None:
            assert s["depth.pts"].dtype == np.uint16
            np.testing.assert_array_equal(s["depth.pts"] / np.float32(256), sample.depth)
        for member, label in (("seg.png", sample.seg), ("lane.png", sample.lane and sample.lane.mask)):
            assert (member in s) == (label is not None)
            if label is not None:
                assert s[member].dtype == np.uint8
                np.testing.assert_array_equal(s[member], label)
        if sample.sign is not None:
            assert s["sign.cls"] == sample.sign.class_id
        if sample.det2d is not None:
            np.testing.assert_array_equal(np.asarray(s["det2d.json"]["boxes"]).reshape(-1, 4), sample.det2d.boxes)
    assert seen == {"a2d2", "cityscapes", "gtsrb", "kitti", "tusimple"}


def test_a_stock_image_spec_after_the_handlers_gets_only_the_image(synth_shards):
    tars = train_tars(synth_shards)
    raw = first_with(tars, "seg.png")
    s = next(s for s in read(raw["__url__"], *decoders(), "rgb8") if s["__key__"] == raw["__key__"])
    assert s["depth.pts"].dtype == np.uint16
    np.testing.assert_array_equal(s["depth.pts"], decode_depth_points(raw["depth.pts"]).to_map())
    np.testing.assert_array_equal(s["seg.png"], decode_png(raw["seg.png"]))
    assert s["jpg"].dtype == np.uint8 and s["jpg"].shape == s["seg.png"].shape + (3,)


def test_the_image_is_left_to_the_caller(synth_shards):
    url = train_tars(synth_shards)[0]
    assert all(isinstance(s["jpg"], bytes) for s in read(url, *decoders()))
    assert all(isinstance(s["jpg"], PIL.Image.Image) for s in read(url, *decoders("pil")))


def test_real_kitti_depth_and_png_images_are_bit_exact(kitti_png):
    shards = ShardSet.open(kitti_png)
    for stock in (False, True):  # the image by the codec, or by webdataset's Pillow spec after the handlers
        handlers = [*decoders(), "rgb8"] if stock else decoders(image="numpy")
        samples = read(train_tars(kitti_png), *handlers)
        assert len(samples) == 2
        for s in samples:
            sample = shards.read_sample(s["__key__"])
            np.testing.assert_array_equal(s["png"], sample.image)  # lossless PNG: both decoders agree
            assert s["depth.pts"].dtype == np.uint16 and s["depth.pts"].max() > 255 * 20  # real LiDAR: tens of m
            np.testing.assert_array_equal(s["depth.pts"] / np.float32(256), sample.depth)


def test_a_label_map_of_the_wrong_kind_is_refused():
    eight_bit = cv2.imencode(".png", np.zeros((2, 3), np.uint8))[1].tobytes()
    with pytest.raises(DecodeError, match=r"depth\.png: uint8 \(2, 3\), expected a single-channel uint16 map"):
        decode_label_png(".depth.png", eight_bit)
    with pytest.raises(DecodeError, match=r"seg\.png: does not decode as PNG"):
        decode_label_png(".seg.png", b"not a png")
    assert decode_label_png(".png", eight_bit) is None  # the image member is not a label map
    assert decode_label_png(".meta.json", b"{}") is None


def test_a_corrupt_depth_points_member_is_a_decode_error_naming_it():
    data = encode_depth_points(np.eye(3, dtype=np.uint16))
    with pytest.raises(DecodeError, match=r"^depth\.pts: starts with b'XPT1', expected b'DPT1'"):
        decode_depth_member(".depth.pts", b"X" + data[1:])
    with pytest.raises(DecodeError, match=r"^depth\.pts: the point stream does not inflate"):
        decode_depth_member(".depth.pts", data[:-3])
    np.testing.assert_array_equal(decode_depth_member(".depth.pts", data), np.eye(3, dtype=np.uint16))
    assert decode_depth_member(".depth.png", data) is None  # not its member
