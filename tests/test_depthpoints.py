"""``depth.pts`` (``shards/depthpoints.py``), the schema 2 depth member.

Lossless against the ``depth.png`` the schema 1 codec wrote, on the real KITTI and A2D2 depth;
the edge maps; every kind of corrupt bytes a ``ValueError`` saying what is wrong; the numpy
reader of the module docstring, run as written there; random sparse maps (hypothesis); and
schema 1 shards (``conftest.rewrite_as_schema_1``) still read by ``decode_sample``, the shard
reader, ``mtl-data validate`` and ``mtl-data inspect``.
"""

from __future__ import annotations

import json
import shutil
import struct
import textwrap
import zlib

import cv2
import numpy as np
import pytest
from conftest import fixture_path, rewrite_as_schema_1
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mtl_data.ingest import a2d2
from mtl_data.ingest.kitti import KittiConverter
from mtl_data.schema.sample import Sample
from mtl_data.shards import depthpoints
from mtl_data.shards.codec import LABEL_PNG_PARAMS, DecodeError, decode_sample, depth_to_uint16, encode_sample
from mtl_data.shards.depthpoints import decode_depth_points, depth_points_size, encode_depth_points
from mtl_data.shards.png import decode_png
from mtl_data.shards.reader import ShardSet

A2D2_NPZ = (
    "a2d2",
    "camera_lidar_semantic_bboxes",
    "20180810_142822",
    "lidar",
    "cam_front_center",
    "20180810142822_lidar_frontcenter_000015196.npz",
)


def schema_1_png(depth: np.ndarray) -> bytes:
    """The ``depth.png`` the schema 1 codec wrote for an (H, W) uint16 map."""
    ok, buf = cv2.imencode(".png", depth, LABEL_PNG_PARAMS)
    assert ok
    return buf.tobytes()


def pack(h: int, w: int, delta, value, n: int | None = None) -> bytes:
    """``depth.pts`` bytes laid out as the module docstring says, written here independently of
    the module, with any field values (valid or not); ``n`` defaults to ``len(delta)``."""
    delta, value = np.asarray(delta, "<u4"), np.asarray(value, "<u2")

    def planes(a: np.ndarray) -> bytes:  # all lowest bytes, then all second bytes, ...
        return a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()

    header = struct.pack("<4sIII", b"DPT1", h, w, len(delta) if n is None else n)
    return header + zlib.compress(planes(delta) + planes(value), 1)  # the documented level


@pytest.fixture(scope="module")
def kitti_sample() -> Sample:
    """The converted real KITTI frame 000001."""
    conv = KittiConverter(fixture_path("kitti", "object"))
    return conv.convert(conv.frames()[1])


@pytest.fixture(scope="module")
def real_depth() -> dict[str, np.ndarray]:
    """The stored uint16 depth of the real fixtures, as the converters make it: the two KITTI
    frames (velodyne) and A2D2 frame 000015196 (front-center LiDAR npz, at the camera's size)."""
    conv = KittiConverter(fixture_path("kitti", "object"))
    maps = {f"kitti {f.id}": depth_to_uint16(conv.convert(f).depth) for f in conv.frames()}
    cams = json.loads(fixture_path("a2d2", "cams_lidars.json").read_text())
    width, height = cams["cameras"]["front_center"]["Resolution"]
    maps["a2d2 000015196"] = depth_to_uint16(a2d2._read_depth(fixture_path(*A2D2_NPZ), (height, width)))
    return maps


# ---- lossless against depth.png, and the layout --------------------------------------------------


def test_real_depth_round_trips_exactly_as_the_schema_1_png_and_smaller(real_depth):
    assert sorted(real_depth) == ["a2d2 000015196", "kitti 000000", "kitti 000001"]
    for name, depth in real_depth.items():
        png = schema_1_png(depth)
        data = encode_depth_points(depth)
        points = decode_depth_points(data)
        assert np.count_nonzero(depth) > 5_000, name  # real scans: thousands of points
        assert len(points) == np.count_nonzero(depth) and points.size == depth.shape, name
        back = points.to_map()
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, decode_png(png), err_msg=name)  # the same pixels and values
        assert len(data) < len(png), (name, len(data), len(png))


def test_the_bytes_are_the_documented_layout(real_depth):
    depth = real_depth["kitti 000000"]
    index = np.flatnonzero(depth)
    expected = pack(*depth.shape, np.diff(index, prepend=0), depth.ravel()[index])
    assert encode_depth_points(depth) == expected  # also: the same map gives the same bytes
    assert depth_points_size(expected) == depth.shape


def test_the_numpy_reader_of_the_module_docstring_gives_the_same_map(real_depth):
    doc = depthpoints.__doc__
    block = doc.split("Read it with numpy::\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    code = textwrap.dedent("\n".join(lines)).strip()
    assert code.startswith("import zlib, numpy as np") and "depth = np.zeros(h * w, np.uint16)" in code
    one_point = np.zeros((3, 5), np.uint16)
    one_point[2, 4] = 7
    for name, depth in {**real_depth, "one point": one_point}.items():
        namespace = {"data": encode_depth_points(depth)}
        exec(code, namespace)  # the snippet as the docstring prints it
        got = namespace["depth"]
        assert got.dtype == np.uint16, name
        np.testing.assert_array_equal(got, depth, err_msg=name)


# ---- edge maps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (1, 1)])
def test_an_empty_map_round_trips_as_a_header_and_an_empty_stream(shape):
    depth = np.zeros(shape, np.uint16)
    data = encode_depth_points(depth)
    assert data == pack(*shape, [], [])
    points = decode_depth_points(data)
    assert len(points) == 0 and points.size == shape
    np.testing.assert_array_equal(points.to_map(), depth)


@pytest.mark.parametrize(("row", "col"), [(0, 0), (3, 5)], ids=["first pixel", "last pixel"])
def test_one_point_at_either_end_of_the_map_round_trips(row, col):
    depth = np.zeros((4, 6), np.uint16)
    depth[row, col] = 65535  # the largest storable depth, 255.996 m
    data = encode_depth_points(depth)
    assert data == pack(4, 6, [row * 6 + col], [65535])
    points = decode_depth_points(data)
    assert points.index.tolist() == [row * 6 + col] and points.value.tolist() == [65535]
    np.testing.assert_array_equal(points.to_map(), depth)


def test_a_map_that_is_not_2d_uint16_is_refused():
    with pytest.raises(ValueError, match=r"expected an \(H, W\) uint16 depth map, got float32 \(2, 3\)"):
        encode_depth_points(np.ones((2, 3), np.float32))


# ---- corrupt bytes -----------------------------------------------------------------------------

GOOD = pack(4, 6, [1, 2, 3], [10, 20, 30])  # points at pixels 1, 3, 6
#: the module says this one thing for a zero delta, an index outside the map and a zero value
NOT_INCREASING = r"depth\.pts: indices not strictly increasing inside 4x6, or a zero value"

CORRUPT = {
    "bad magic": (b"DPNG" + GOOD[4:], r"depth\.pts: starts with b'DPNG', expected b'DPT1'"),
    "truncated header": (GOOD[:10], r"depth\.pts: 10 bytes, shorter than its 16-byte header"),
    "more points than pixels": (pack(2, 2, [1] * 5, [1] * 5), r"depth\.pts: 5 points in a 2x2 map"),
    "stream does not inflate": (GOOD[:16] + b"not zlib", r"depth\.pts: the point stream does not inflate"),
    "stream cut short": (GOOD[:-3], r"depth\.pts: the point stream does not inflate"),
    "wrong byte count": (
        pack(4, 6, [1, 2, 3], [10, 20, 30], n=2),
        r"depth\.pts: the stream holds 18 bytes, 2 points need 12",
    ),
    "zero delta": (pack(4, 6, [1, 0, 3], [10, 20, 30]), NOT_INCREASING),
    "index out of range": (pack(4, 6, [1, 2, 21], [10, 20, 30]), NOT_INCREASING),
    "zero value": (pack(4, 6, [1, 2, 3], [10, 0, 30]), NOT_INCREASING),
}


def test_the_corrupt_cases_start_from_a_good_member():
    assert decode_depth_points(GOOD).index.tolist() == [1, 3, 6]
    assert decode_depth_points(pack(4, 6, [1, 2, 20], [10, 20, 30])).index.tolist() == [1, 3, 23]  # last pixel


@pytest.mark.parametrize(("data", "says"), CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_bytes_are_a_value_error_saying_what_is_wrong(data, says):
    with pytest.raises(ValueError, match=says):
        decode_depth_points(data)


@pytest.mark.parametrize(("data", "says"), CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_member_does_not_decode_as_a_sample(data, says, kitti_sample):
    members = dict(encode_sample(kitti_sample))
    members["depth.pts"] = data
    with pytest.raises(DecodeError, match=says):
        decode_sample(kitti_sample.key, members)


# ---- random maps -------------------------------------------------------------------------------

SPARSE_MAPS = hnp.arrays(
    np.uint16,
    st.tuples(st.integers(1, 48), st.integers(1, 48)),
    elements=st.integers(1, 65535),
    fill=st.just(0),  # mostly empty, a few measured pixels anywhere, or none
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(SPARSE_MAPS)
def test_random_sparse_maps_round_trip(depth):
    data = encode_depth_points(depth)
    points = decode_depth_points(data)
    assert points.size == depth.shape == depth_points_size(data)
    assert len(points) == np.count_nonzero(depth)
    np.testing.assert_array_equal(points.to_map(), depth)
    assert encode_depth_points(points.to_map()) == data


# ---- schema 1 shards -----------------------------------------------------------------------------


def test_a_schema_1_sample_decodes_to_the_same_depth(kitti_sample):
    sample = kitti_sample
    v2 = encode_sample(sample)
    v1 = [("depth.png", schema_1_png(decode_depth_points(d).to_map())) if e == "depth.pts" else (e, d) for e, d in v2]
    assert [e for e, _ in v1] == ["jpg", "meta.json", "depth.png", "det2d.json", "det3d.json"]
    back = decode_sample(sample.key, dict(v1))
    assert back.depth.dtype == np.float32
    np.testing.assert_array_equal(back.depth, sample.depth)
    np.testing.assert_array_equal(back.depth, decode_sample(sample.key, dict(v2)).depth)


def test_schema_1_shards_read_as_the_schema_2_ones(synth_shards, synth_shards_v1):
    new, old = ShardSet.open(synth_shards), ShardSet.open(synth_shards_v1)
    assert old.manifest["key"].to_list() == new.manifest["key"].to_list()
    depths = 0
    for key in new.manifest["key"]:
        members = old.read_members(key)
        assert "depth.pts" not in members and json.loads(members["meta.json"])["schema"] == 1
        a, b = old.read_sample(key), new.read_sample(key)
        assert ("depth.png" in members) == (b.depth is not None)
        if b.depth is not None:
            depths += 1
            np.testing.assert_array_equal(a.depth, b.depth)
    assert depths > 0


def test_validate_and_inspect_read_schema_1_shards(cli, tmp_path):
    new, old = tmp_path / "v2", tmp_path / "v1"
    ingest = cli("ingest", "kitti", fixture_path("kitti", "object"), "--to", new, "--workers", 1)
    assert ingest.code == 0, ingest.err
    shutil.copytree(new, old)
    rewrite_as_schema_1(old)
    result = cli("validate", old)
    assert result.code == 0, result.out + result.err
    assert "2 samples OK" in result.out
    shown = {}
    for root in (new, old):
        result = cli("inspect", root, "--key", "kitti_train_000000")
        assert result.code == 0, result.err
        shown[root] = result.out
    assert "kitti_train_000000.depth.png" in shown[old] and ".depth.pts" not in shown[old]
    assert "kitti_train_000000.depth.pts" in shown[new]
    depth_line = next(ln for ln in shown[new].splitlines() if ln.strip().startswith("depth:"))
    assert depth_line in shown[old].splitlines()  # same points, same range
