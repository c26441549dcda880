"""The loader's decoder (``mtl_data.train.data.decode``): explicit member handlers, refused pickle-style
members, corrupt samples as one specific error, reduced-size JPEG decoding."""

from __future__ import annotations

import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest

from mtl_data.schema.sample import Det2D, Sample
from mtl_data.shards.codec import LABEL_PNG_PARAMS, encode_sample
from mtl_data.shards.depthpoints import decode_depth_points
from mtl_data.shards.png import png_header
from mtl_data.train.data.decode import PICKLE_EXTENSIONS, CorruptSampleError, UnsafeMemberError, decode
from mtl_data.train.data.transforms import TransformConfig, transform_sample

H, W = 240, 400


def _points_header(h: int, w: int, n: int) -> bytes:
    return struct.pack("<4sIII", b"DPT1", h, w, n)


def stored_sample() -> Sample:
    """A sample with an image, class map, 16-bit-range depth and boxes, as an ingest stores it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) % 256], axis=-1).astype(np.uint8)  # smooth: JPEG-friendly
    depth = np.zeros((H, W), np.float32)
    rows, cols = rng.integers(0, H, 500), rng.integers(0, W, 500)
    depth[rows, cols] = np.round(rng.uniform(1.0, 120.0, 500) * 256) / 256  # up to 30720 in the PNG
    seg = (xx // 40 % 19).astype(np.uint8)
    seg[:10] = 255
    det = Det2D(boxes=np.array([[10.0, 20.0, 110.0, 90.0]]), classes=np.array([2]))
    return Sample(
        key="kitti_train_000007",
        source="kitti",
        split="train",
        id="000007",
        image=image,
        orig_size=(H, W),
        seg=seg,
        depth=depth,
        det2d=det,
    )


def raw_of(sample: Sample, **replace: bytes) -> dict:
    """The tar sample webdataset-style, with members replaced or added."""
    raw = {"__key__": sample.key, "__url__": "shards/kitti/train-000003.tar", **dict(encode_sample(sample))}
    raw.update(replace)
    return raw


def v1_raw(sample: Sample, **replace: bytes) -> dict:
    """The sample as a schema-1 shard holds it: depth as a 16-bit ``depth.png``."""
    raw = raw_of(sample)
    depth = decode_depth_points(raw.pop("depth.pts")).to_map()
    raw["depth.png"] = cv2.imencode(".png", depth, LABEL_PNG_PARAMS)[1].tobytes()
    raw.update(replace)
    return raw


@pytest.mark.parametrize("schema", [2, 1])
def test_depth_comes_as_its_points_and_class_maps_stay_single_channel(schema):
    sample = stored_sample()
    decoded = decode(raw_of(sample) if schema == 2 else v1_raw(sample))
    stored = np.rint(sample.depth * 256).astype(np.uint16)
    assert stored.max() > 255  # needs 16 bits
    assert decoded.depth.size == (H, W) and decoded.depth.value.dtype == np.uint16
    np.testing.assert_array_equal(decoded.depth.to_map(), stored)
    got = decoded.sample
    assert got.depth.shape == (H, W) and not got.depth.any()  # a placeholder: the sample has depth
    assert got.tasks == ("seg", "depth", "det2d")
    assert got.seg.shape == (H, W) and got.seg.dtype == np.uint8
    np.testing.assert_array_equal(got.seg, sample.seg)
    assert got.image.shape == (H, W, 3)


@pytest.mark.parametrize("letterbox", [False, True])
@pytest.mark.parametrize("target", [(96, 160), (120, 400), (480, 800)])
def test_transformed_points_are_the_dense_depth_transformed(letterbox, target):
    """The loader's path (points scattered to the output) gives the map that the dense stored
    depth gives through the transform, flips included, in round(m * 256) units."""
    sample = stored_sample()
    decoded = decode(raw_of(sample), target_hw=target, letterbox=letterbox)
    config = TransformConfig(target, letterbox=letterbox, augment=True, flip_p=0.5, jitter=0.0)
    for seed in range(4):  # flipped and not
        fast = transform_sample(
            decoded.sample, config, np.random.default_rng(seed), image=decoded.image, depth=decoded.depth
        )
        dense = transform_sample(sample, config, np.random.default_rng(seed))
        assert fast.depth.dtype == np.uint16 and fast.depth.shape == target
        np.testing.assert_array_equal(fast.depth, np.rint(dense.depth * 256).astype(np.uint16))


@pytest.mark.parametrize(
    "member, array, says",
    [
        (
            "depth.png",
            np.zeros((H, W), np.uint8),
            "depth.png: expected a single-channel 16-bit PNG of depth, found 8-bit grey",
        ),
        ("depth.png", np.zeros((H, W + 1), np.uint16), f"depth.png: is {H}x{W + 1}, the image is {H}x{W}"),
        (
            "seg.png",
            np.zeros((H, W, 3), np.uint8),
            "seg.png: expected a single-channel 8-bit PNG of class ids, found 8-bit RGB",
        ),
        ("seg.png", np.zeros((H // 2, W), np.uint8), f"seg.png: is {H // 2}x{W}, the image is {H}x{W}"),
    ],
    ids=["8-bit-depth", "depth-of-another-size", "rgb-class-map", "class-map-of-another-size"],
)
def test_label_png_of_the_wrong_kind_is_a_corrupt_sample(member, array, says):
    raw = v1_raw(stored_sample(), **{member: cv2.imencode(".png", array)[1].tobytes()})
    with pytest.raises(CorruptSampleError) as info:
        decode(raw)
    assert str(info.value) == f"shards/kitti/train-000003.tar: kitti_train_000007: does not decode: {says}"


@pytest.mark.parametrize(
    "replace, says",
    [
        ({"jpg": b"\xff\xd8" + b"junk" * 100}, "jpg: image does not decode"),
        ({"det2d.json": b'{"boxes": [[1, 2, 3]]'}, "det2d.json: not valid JSON"),
        ({"meta.json": b"[]"}, "meta.json is not a JSON object"),
        ({"seg.png": b"GIF89a"}, "seg.png: not a PNG"),
        ({"depth.pts": b"DPT1"}, "depth.pts: 4 bytes, shorter than its 16-byte header"),
        ({"depth.pts": _points_header(H, W, 3) + b"junk"}, "depth.pts: the point stream does not inflate"),
        ({"depth.pts": _points_header(H, W + 1, 0) + zlib.compress(b"")}, f"depth.pts: is {H}x{W + 1}, the image is"),
        ({"depth.png": cv2.imencode(".png", np.zeros((H, W), np.uint16))[1].tobytes()}, "holds both depth.pts and"),
    ],
    ids=["jpeg", "json", "meta", "png", "short-points", "points-stream", "points-size", "two-depths"],
)
def test_undecodable_members_are_one_specific_error_naming_shard_and_key(replace, says):
    with pytest.raises(CorruptSampleError, match="train-000003.tar: kitti_train_000007: does not decode") as info:
        decode(raw_of(stored_sample(), **replace))
    assert says in str(info.value)
    assert (info.value.shard, info.value.key) == ("shards/kitti/train-000003.tar", "kitti_train_000007")


def test_a_sample_without_meta_is_corrupt():
    raw = raw_of(stored_sample())
    del raw["meta.json"]
    with pytest.raises(CorruptSampleError, match="no meta.json member"):
        decode(raw)


@pytest.mark.parametrize("ext", sorted(PICKLE_EXTENSIONS) + ["extra.PTH"])
def test_pickle_style_members_are_refused_before_anything_is_decoded(ext):
    raw = raw_of(stored_sample(), **{ext: pickle.dumps({"boxes": []}), "jpg": b"not even a jpeg"})
    with pytest.raises(UnsafeMemberError) as info:
        decode(raw)
    assert str(info.value).startswith(
        f"shards/kitti/train-000003.tar: kitti_train_000007.{ext}: refusing a pickle-style member"
    )
    assert info.value.ext == ext


def test_unknown_members_are_ignored():
    raw = raw_of(stored_sample(), **{"future.npy": b"\x93NUMPY", "notes.txt": b"hello"})
    assert decode(raw).sample.tasks == ("seg", "depth", "det2d")


def test_errors_keep_their_fields_across_processes():
    for err in (CorruptSampleError("s: k: bad", "s", "k"), UnsafeMemberError("s: k.pyd: no", "s", "k", "pyd")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.__dict__ == err.__dict__


@pytest.mark.parametrize("member", ["depth.pts", "depth.png"])
def test_only_the_requested_tasks_are_decoded(member):
    raw = raw_of(stored_sample(), **{member: b"corrupt but never read"})
    decoded = decode(raw, tasks=("det2d", "seg"))
    got = decoded.sample
    assert got.depth is None and decoded.depth is None and got.tasks == ("seg", "det2d")
    np.testing.assert_array_equal(got.det2d.boxes, [[10.0, 20.0, 110.0, 90.0]])


@pytest.mark.parametrize("target, factor", [((120, 200), 2), ((60, 100), 4), ((30, 50), 8), ((121, 200), 1)])
def test_jpeg_is_decoded_at_the_largest_reduction_the_target_allows(target, factor):
    decoded = decode(raw_of(stored_sample()), target_hw=target)
    if factor == 1:
        assert decoded.image is None and decoded.sample.image.shape == (H, W, 3)
        return
    assert decoded.image.shape == (H // factor, W // factor, 3)
    assert decoded.sample.size == (H, W)  # labels stay in stored pixels
    np.testing.assert_array_equal(decoded.sample.seg, stored_sample().seg)


def test_reduced_decode_gives_the_training_image_of_a_full_decode_within_jpeg_noise():
    config = TransformConfig((60, 100), augment=False)
    raw = raw_of(stored_sample())
    full, reduced = decode(raw), decode(raw, target_hw=config.image_size)
    a = transform_sample(full.sample, config, np.random.default_rng(0))
    b = transform_sample(reduced.sample, config, np.random.default_rng(0), image=reduced.image)
    assert b.image.shape == a.image.shape == (60, 100, 3)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2.0
    np.testing.assert_array_equal(a.seg, b.seg)
    np.testing.assert_array_equal(a.depth, b.depth)


def test_letterbox_reduces_against_the_content_size():
    # 240x400 letterboxed into 120x400: content 120x200, so 1/2 is allowed (the full output is not)
    decoded = decode(raw_of(stored_sample()), target_hw=(120, 400), letterbox=True)
    assert decoded.image.shape == (120, 200, 3)


def test_png_header_reads_size_depth_and_colour_type():
    data = cv2.imencode(".png", np.zeros((3, 5), np.uint16))[1].tobytes()
    assert png_header(data) == (3, 5, 16, 0)


@pytest.mark.parametrize("target", [(120, 200), (240, 400)])  # reduced and full-size decodes
def test_every_jpeg_decoder_gives_the_same_decoded_sample(target):
    raw = raw_of(stored_sample())
    a = decode(raw, target_hw=target, jpeg_decoder="opencv")
    b = decode(raw, target_hw=target, jpeg_decoder="simplejpeg")
    image_a = a.sample.image if a.image is None else a.image
    image_b = b.sample.image if b.image is None else b.image
    np.testing.assert_array_equal(image_a, image_b)
