"""The fast decoder of this project's label PNGs gives exactly what OpenCV gives, for every PNG."""

from __future__ import annotations

import tarfile
import zlib

import cv2
import numpy as np
import pytest
from conftest import fixture_path, rewrite_as_schema_1

from mtl_data.shards import png
from mtl_data.shards.codec import LABEL_PNG_PARAMS
from mtl_data.shards.png import decode_png

REAL = {"kitti": ("kitti", "object"), "a2d2": ("a2d2",), "tusimple": ("tusimple", "train_set")}


@pytest.fixture(scope="module")
def real_label_pngs(tmp_path_factory) -> dict[str, bytes]:
    """Every label PNG the ingest writes for the real KITTI, A2D2 and TuSimple fixtures, with
    depth as the 16-bit ``depth.png`` schema 1 wrote (schema 1 shards are still read)."""
    from mtl_data.cli.main import main

    out = tmp_path_factory.mktemp("png_shards")
    # the A2D2 fixture's bbox frame has no camera image (an error): its semantic part alone
    extra = {"a2d2": ["--parts", "camera_lidar_semantic"]}
    for source, parts in REAL.items():
        main(["ingest", source, str(fixture_path(*parts)), "--to", str(out), "--workers", "1", *extra.get(source, [])])
    rewrite_as_schema_1(out)
    found = {}
    for tar in sorted(out.glob("*/*.tar")):
        with tarfile.open(tar) as t:
            for member in t:
                if member.name.endswith(".png"):
                    found[member.name] = t.extractfile(member).read()
    return found


def opencv(data: bytes):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_real_label_pngs_decode_on_the_fast_path_to_what_opencv_gives(real_label_pngs, monkeypatch):
    kinds = {name.rsplit(".", 2)[-2] for name in real_label_pngs}
    assert kinds == {"depth", "seg", "lane"}
    expected = {name: opencv(data) for name, data in real_label_pngs.items()}
    # the fast path alone: OpenCV is not reachable from decode_png any more
    monkeypatch.setattr(png.cv2, "imdecode", lambda *a: pytest.fail("left the fast path"))
    for name, data in real_label_pngs.items():
        got = decode_png(data)
        assert got.dtype == expected[name].dtype == (np.uint16 if ".depth." in name else np.uint8), name
        assert got.flags.writeable and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize(
    "params",
    [LABEL_PNG_PARAMS, [], [cv2.IMWRITE_PNG_COMPRESSION, 9]],
    ids=["no-filter", "opencv-default-filters", "level-9"],
)
def test_any_grey_png_decodes_to_what_opencv_gives(dtype, params):
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, size=(37, 53), dtype=dtype)
    array[5:20, 10:30] = 7  # a flat area: the default filters pick non-zero filter types
    data = cv2.imencode(".png", array, params)[1].tobytes()
    got = decode_png(data)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, array)


def test_colour_and_other_pngs_go_to_opencv():
    bgr = np.random.default_rng(1).integers(0, 255, size=(9, 11, 3), dtype=np.uint8)
    data = cv2.imencode(".png", bgr)[1].tobytes()
    assert png._unfiltered_grey(data) is None
    np.testing.assert_array_equal(decode_png(data), bgr)


def hand_png(rows: bytes, width: int, height: int, bit_depth: int, idat_split: int = 1) -> bytes:
    """A grey PNG assembled chunk by chunk (the IDAT stream cut into ``idat_split`` chunks)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    stream = zlib.compress(rows)
    step = -(-len(stream) // idat_split)
    idats = b"".join(chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, 0, 0, 0, 0])
    return png.SIGNATURE + chunk(b"IHDR", ihdr) + idats + chunk(b"IEND", b"")


def test_16_bit_samples_are_big_endian_and_idat_may_be_split():
    rows = b"".join(b"\x00" + b"".join(v.to_bytes(2, "big") for v in (256 * r + c for c in range(3))) for r in range(2))
    data = hand_png(rows, width=3, height=2, bit_depth=16, idat_split=3)
    expected = np.array([[0, 1, 2], [256, 257, 258]], dtype=np.uint16)
    np.testing.assert_array_equal(png._unfiltered_grey(data), expected)
    np.testing.assert_array_equal(decode_png(data), expected)
    np.testing.assert_array_equal(opencv(data), expected)


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte", "short-stream"])
def test_damaged_pngs_leave_the_fast_path_and_get_opencvs_answer(damage, real_label_pngs):
    data = bytearray(next(d for n, d in sorted(real_label_pngs.items()) if ".depth." in n))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped-byte":
        data[len(data) // 2] ^= 0xFF
    else:  # a valid zlib stream of fewer rows than IHDR announces
        data = bytearray(hand_png(b"\x00\x01\x02", width=2, height=5, bit_depth=8))
    assert png._unfiltered_grey(bytes(data)) is None
    got, expected = decode_png(bytes(data)), opencv(bytes(data))
    assert (got is None) == (expected is None)
    if expected is not None:
        np.testing.assert_array_equal(got, expected)
