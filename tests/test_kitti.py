"""The KITTI converter on the two real frames of ``fixtures/kitti/object``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mtl_data.ingest.kitti import KittiConverter, KittiOptions
from mtl_data.ingest.resize import resize_sample
from mtl_data.schema import geometry as geo
from mtl_data.schema.taxonomy import DET_CLASSES
from mtl_data.schema.validate import validate
from mtl_data.shards.codec import decode_sample, encode_sample


def read_label(path):
    """Independent reading of a label_2 file: (types, boxes (N, 4), rows (N, 14))."""
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def read_calib(path):
    out = {}
    for ln in path.read_text().splitlines():
        if ln.strip():
            k, v = ln.split(":", 1)
            out[k] = np.array(v.split(), dtype=float)
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture
def samples(kitti_real):
    conv = KittiConverter(kitti_real)
    return {f.id: conv.convert(f) for f in conv.frames()}


def test_lists_both_training_frames_as_train(kitti_real):
    frames = KittiConverter(kitti_real).frames()
    assert [(f.split, f.id) for f in frames] == [("train", "000000"), ("train", "000001")]


def test_image_sizes_are_read_per_frame(samples):
    assert samples["000000"].size == (370, 1224)
    assert samples["000001"].size == (375, 1242)


def test_box_values_equal_the_label_file(samples, kitti_real):
    for fid, sample in samples.items():
        types, rows = read_label(kitti_real / "training" / "label_2" / f"{fid}.txt")
        care = np.array([t != "DontCare" for t in types])
        np.testing.assert_array_equal(sample.det2d.boxes, rows[care, 3:7])
        np.testing.assert_array_equal(sample.det2d.ignore, rows[~care, 3:7])
        np.testing.assert_array_equal(sample.det2d.truncated, rows[care, 0])
        np.testing.assert_array_equal(sample.det2d.occluded, rows[care, 1])
        assert sample.det2d.native_class == tuple(t for t in types if t != "DontCare")


def test_classes_map_through_the_unified_table(samples):
    names = [DET_CLASSES[c] for c in samples["000001"].det2d.classes]
    assert names == ["truck", "car", "cyclist"]
    assert [DET_CLASSES[c] for c in samples["000000"].det2d.classes] == ["pedestrian"]
    assert samples["000001"].det2d.ignore.shape == (4, 4)
    np.testing.assert_array_equal(samples["000001"].det3d.classes, samples["000001"].det2d.classes)


def test_k_is_the_left_block_of_p2(samples, kitti_real):
    p2 = read_calib(kitti_real / "training" / "calib" / "000000.txt")["P2"].reshape(3, 4)
    np.testing.assert_array_equal(samples["000000"].K, p2[:, :3])


def test_box_bottom_centre_projects_where_raw_formats_says(samples):
    """raw-formats 2.2: frame 000000's location projects to (763.8, 303.9) with P2."""
    box = samples["000000"].det3d.boxes[0]
    bottom = box[:3] + [0.0, box[5] / 2, 0.0]
    uv, _ = geo.project(bottom[None], samples["000000"].K)
    np.testing.assert_allclose(uv[0], [763.8, 303.9], atol=0.1)


def test_projecting_each_3d_box_lands_on_its_2d_box(samples):
    for sample in samples.values():
        ext = geo.box_extent_in_image(geo.box3d_corners(sample.det3d.boxes), sample.K)
        h, w = sample.size
        ext = np.clip(ext, 0, [w - 1, h - 1, w - 1, h - 1])
        for projected, labelled in zip(ext, sample.det2d.boxes):
            assert iou(projected, labelled) > 0.85, (projected, labelled)


def test_3d_box_converted_from_bottom_centre_and_hwl(samples, kitti_real):
    types, rows = read_label(kitti_real / "training" / "label_2" / "000001.txt")
    p2 = read_calib(kitti_real / "training" / "calib" / "000001.txt")["P2"].reshape(3, 4)
    t = np.linalg.solve(p2[:, :3], p2[:, 3])
    h, w, length = rows[0, 7:10]
    loc = rows[0, 10:13]
    expected = [loc[0] + t[0], loc[1] + t[1] - h / 2, loc[2] + t[2], length, w, h, rows[0, 13]]
    np.testing.assert_allclose(samples["000001"].det3d.boxes[0], expected)


def independent_depth(kitti_real, fid, size):
    """Project the scan with the devkit recipe (raw-formats 2.5) and z-buffer it in plain Python."""
    cal = read_calib(kitti_real / "training" / "calib" / f"{fid}.txt")
    r0 = np.eye(4)
    r0[:3, :3] = cal["R0_rect"].reshape(3, 3)
    tr = np.eye(4)
    tr[:3, :] = cal["Tr_velo_to_cam"].reshape(3, 4)
    pts = np.fromfile(kitti_real / "training" / "velodyne" / f"{fid}.bin", dtype=np.float32).reshape(-1, 4)
    uvw = (cal["P2"].reshape(3, 4) @ r0 @ tr @ np.c_[pts[:, :3], np.ones(len(pts))].T).T
    front = uvw[:, 2] > 0
    u, v, d = uvw[front, 0] / uvw[front, 2], uvw[front, 1] / uvw[front, 2], uvw[front, 2]
    best: dict[tuple[int, int], float] = {}
    h, w = size
    for ui, vi, di in zip(u, v, d):
        c, r = int(np.floor(ui + 0.5)), int(np.floor(vi + 0.5))
        if 0 <= c < w and 0 <= r < h and di < best.get((r, c), np.inf):
            best[(r, c)] = di
    return best, int(((u >= 0) & (u < w) & (v >= 0) & (v < h)).sum())


@pytest.mark.parametrize("fid", ["000000", "000001"])
def test_depth_pixels_agree_with_an_independent_projection_of_the_scan(samples, kitti_real, fid):
    sample = samples[fid]
    best, in_image = independent_depth(kitti_real, fid, sample.size)
    rows, cols = np.nonzero(sample.depth)
    assert set(zip(rows.tolist(), cols.tolist())) == set(best)
    for (r, c), d in best.items():
        assert sample.depth[r, c] == pytest.approx(d, abs=1 / 512)
    if fid == "000000":
        assert in_image == 20285  # raw-formats 2.5: points inside the 1224x370 image


def test_converted_samples_validate_and_round_trip_through_the_shard_codec(samples):
    for sample in samples.values():
        assert validate(sample, len(DET_CLASSES)) == []
        back = decode_sample(sample.key, dict(encode_sample(sample, "png")))
        np.testing.assert_array_equal(back.image, sample.image)
        np.testing.assert_array_equal(back.depth, sample.depth)
        np.testing.assert_array_equal(back.det2d.boxes, sample.det2d.boxes)
        np.testing.assert_array_equal(back.det3d.boxes, sample.det3d.boxes)
        np.testing.assert_array_equal(back.K, sample.K)
        assert back.tasks == sample.tasks == ("depth", "det2d", "det3d")


def test_max_side_keeps_boxes_k_and_depth_consistent(samples):
    sample = samples["000001"]
    small = resize_sample(sample, 621)
    assert small.size == (188, 621)
    sx, sy = 621 / 1242, 188 / 375
    np.testing.assert_allclose(small.K, geo.scale_intrinsics(sample.K, sx, sy))
    np.testing.assert_allclose(small.det2d.boxes, geo.scale_boxes2d(sample.det2d.boxes, sx, sy))
    # 3D boxes projected with the new K land on the new 2D boxes exactly as at full size
    full = geo.box_extent_in_image(geo.box3d_corners(sample.det3d.boxes), sample.K)
    small_ext = geo.box_extent_in_image(geo.box3d_corners(small.det3d.boxes), small.K)
    np.testing.assert_allclose(small_ext, geo.scale_boxes2d(full, sx, sy), atol=1e-9)
    for projected, labelled in zip(small_ext, small.det2d.boxes):
        assert iou(projected, labelled) > 0.85
    # depth: each small pixel holds the nearest of the full-size pixels whose centre falls in it
    rows, cols = np.nonzero(sample.depth)
    tr = np.floor((rows + 0.5) * sy).astype(int)
    tc = np.floor((cols + 0.5) * sx).astype(int)
    expected = np.zeros(small.size, np.float32)
    for r, c, d in sorted(zip(tr, tc, sample.depth[rows, cols]), key=lambda x: -x[2]):
        expected[r, c] = d
    np.testing.assert_array_equal(small.depth, expected)
    assert validate(small, len(DET_CLASSES)) == []


def test_testing_split_has_depth_and_no_boxes(tmp_path, kitti_real):
    for sub, ext in (("image_2", "png"), ("calib", "txt"), ("velodyne", "bin")):
        (tmp_path / "testing" / sub).mkdir(parents=True)
        shutil.copy(kitti_real / "training" / sub / f"000000.{ext}", tmp_path / "testing" / sub / f"000007.{ext}")
    conv = KittiConverter(tmp_path)
    [frame] = conv.frames()
    sample = conv.convert(frame)
    assert (sample.key, sample.split, sample.tasks) == ("kitti_test_000007", "test", ("depth",))


def test_without_a_velodyne_folder_samples_have_no_depth(kitti_copy):
    shutil.rmtree(kitti_copy / "training" / "velodyne")
    conv = KittiConverter(kitti_copy)
    assert conv.convert(conv.frames()[0]).tasks == ("det2d", "det3d")


def test_val_fraction_moves_a_deterministic_hashed_subset(kitti_real):
    splits = [
        [f.split for f in KittiConverter(kitti_real, KittiOptions(val_fraction=v)).frames()]
        for v in (0.0, 0.5, 0.5, 0.99)
    ]
    assert splits[0] == ["train", "train"]
    assert splits[1] == splits[2]
    assert splits[3] == ["val", "val"]


def test_native_taxonomy_keeps_kitti_class_ids(kitti_real):
    conv = KittiConverter(kitti_real, taxonomy="native")
    sample = conv.convert(conv.frames()[1])
    names = conv.class_tables()["det2d"]
    assert [names[c] for c in sample.det2d.classes] == ["Truck", "Car", "Cyclist"]
    assert "DontCare" not in names


def test_taxonomy_file_overrides_one_mapping(kitti_real, tmp_path):
    path = tmp_path / "tax.json"
    path.write_text(json.dumps({"det": {"kitti": {"Truck": "ignore", "Cyclist": "bicycle"}}}))
    conv = KittiConverter(kitti_real, taxonomy=str(path))
    sample = conv.convert(conv.frames()[1])
    assert [DET_CLASSES[c] for c in sample.det2d.classes] == ["car", "bicycle"]
    assert sample.det2d.ignore.shape == (5, 4)  # 4 DontCare + the truck
    assert sample.det3d.boxes.shape == (2, 7)
