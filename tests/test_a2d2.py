"""The A2D2 converter on the real samples of ``fixtures/a2d2``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fixture_path

from mtl_data.errors import InputError, MtlDataError
from mtl_data.ingest.a2d2 import A2D2Converter, A2D2Options
from mtl_data.schema import a2d2_geometry as ag
from mtl_data.schema import geometry as geo
from mtl_data.schema.sample import IGNORE_INDEX
from mtl_data.schema.taxonomy import DET_CLASSES, DET_TABLES, SEG_CLASSES, SEG_TABLES
from mtl_data.schema.validate import validate

SEM_ID = "20180807145028_frontcenter_000006882"
BOX_SCENE, BOX_PREFIX, BOX_ID = "20180810_142822", "20180810142822", "000015196"
CAM_TSTAMP = 1533904617100000


@pytest.fixture
def a2d2_real() -> Path:
    return fixture_path("a2d2")


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def colors_of(image: np.ndarray) -> set[str]:
    packed = image.astype(np.int32)
    packed = (packed[..., 0] << 16) | (packed[..., 1] << 8) | packed[..., 2]
    return {f"#{int(c):06x}" for c in np.unique(packed)}


@pytest.fixture
def semantic(a2d2_real):
    # the semantic part only: the fixture's bbox frame has no camera image (see the test below)
    conv = A2D2Converter(a2d2_real, A2D2Options(parts=("camera_lidar_semantic",)))
    [frame] = conv.frames()
    return conv, frame, conv.convert(frame)


@pytest.fixture
def box_frame_root(tmp_path, a2d2_real) -> Path:
    """The real npz + label3D of frame 15196 with a generated camera image, json and a bus ramp."""
    root = tmp_path / "a2d2"
    shutil.copy(a2d2_real / "cams_lidars.json", root.mkdir(parents=True) or root / "cams_lidars.json")
    part = root / "camera_lidar_semantic_bboxes" / BOX_SCENE
    for kind, ext in (("lidar", "npz"), ("label3D", "json")):
        src = (
            a2d2_real
            / "camera_lidar_semantic_bboxes"
            / BOX_SCENE
            / kind
            / "cam_front_center"
            / f"{BOX_PREFIX}_{kind}_frontcenter_{BOX_ID}.{ext}"
        )
        (part / kind / "cam_front_center").mkdir(parents=True)
        shutil.copy(src, part / kind / "cam_front_center" / src.name)
    cam_dir = part / "camera" / "cam_front_center"
    cam_dir.mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 256, (1208, 1920, 3), dtype=np.uint8)
    cv2.imwrite(str(cam_dir / f"{BOX_PREFIX}_camera_frontcenter_{BOX_ID}.png"), image)
    (cam_dir / f"{BOX_PREFIX}_camera_frontcenter_{BOX_ID}.json").write_text(
        json.dumps({"cam_tstamp": CAM_TSTAMP, "cam_name": "front_center", "lidar_ids": {"0": "front_center"}})
    )
    # Bus ramp (sensor-fusion format): angle = -20 + 40 deg/s * t, through zero, 100 Hz.
    t = CAM_TSTAMP - 1_000_000 + np.arange(0, 2_000_000, 10_000) + 3_333
    angle = -20.0 + 40.0 * (t - t[0]) / 1e6
    bus = {
        "steering_angle_calculated": {
            "unit": "Unit_DegreOfArc",
            "values": [[int(a), abs(float(b))] for a, b in zip(t, angle)],
        },
        "steering_angle_calculated_sign": {"unit": None, "values": [[int(a), int(b < 0)] for a, b in zip(t, angle)]},
        "vehicle_speed": {"unit": "Unit_KiloMeterPerHour", "values": [[int(a), 50.0 + (a - t[0]) / 1e5] for a in t]},
    }
    bus_dir = root / "camera_lidar" / BOX_SCENE / "bus"
    bus_dir.mkdir(parents=True)
    (bus_dir / f"{BOX_PREFIX}_bus_signals.json").write_text(json.dumps(bus))
    return root


@pytest.fixture
def box_sample(box_frame_root):
    conv = A2D2Converter(box_frame_root)
    [frame] = conv.frames()
    return conv.convert(frame)


def test_every_class_of_the_real_class_list_is_in_the_table(a2d2_real):
    names = set(json.loads((a2d2_real / "class_list.json").read_text()).values())
    assert len(names) == 55 and names == set(SEG_TABLES["a2d2"])
    for name, unified in SEG_TABLES["a2d2"].items():
        assert unified == "ignore" or unified in SEG_CLASSES, name
    assert all(u in DET_CLASSES for u in DET_TABLES["a2d2"].values())


def test_every_real_label_colour_maps_to_a_known_class(semantic, a2d2_real):
    _, frame, sample = semantic
    class_list = json.loads((a2d2_real / "class_list.json").read_text())
    label_colors = colors_of(rgb(frame.paths["label"]))
    assert len(label_colors) == 22 and label_colors <= set(class_list)
    assert sample.notes == {}  # no unknown colour counted


def test_seg_ids_follow_the_table(semantic, a2d2_real):
    _, frame, sample = semantic
    class_list = json.loads((a2d2_real / "class_list.json").read_text())
    label = rgb(frame.paths["label"])
    expected_ids = {
        SEG_CLASSES.index(u) if u != "ignore" else IGNORE_INDEX
        for c in colors_of(label)
        for u in [SEG_TABLES["a2d2"][class_list[c]]]
    }
    assert set(np.unique(sample.seg).tolist()) <= expected_ids | {IGNORE_INDEX}
    # this real frame: road along the bottom, sky across the top
    assert np.mean(sample.seg[-60:] == SEG_CLASSES.index("road")) > 0.9
    assert np.mean(sample.seg[:50] == SEG_CLASSES.index("sky")) > 0.5


def test_undistorting_the_real_label_creates_no_new_colour(semantic, a2d2_real):
    conv, frame, _ = semantic
    label = rgb(frame.paths["label"])
    (map1, map2), label_map = ag.undistort_maps(
        json.loads((a2d2_real / "cams_lidars.json").read_text())["cameras"]["front_center"]
    )
    undistorted = cv2.remap(
        label, label_map, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=(1, 2, 3)
    )
    assert colors_of(undistorted) <= colors_of(label) | {"#010203"}
    bilinear = cv2.remap(label, map1, map2, cv2.INTER_LINEAR)  # what the official tutorial does
    assert len(colors_of(bilinear) - colors_of(label)) > 100


def test_seg_is_the_exact_nearest_neighbour_undistortion_of_the_label(semantic, a2d2_real):
    """Each seg pixel takes the class of the source pixel nearest to where the lens model maps it.

    The ground truth is computed here from float maps; OpenCV's nearest-neighbour remap through
    fixed-point maps would miss it on tens of thousands of pixels of this label.
    """
    conv, frame, sample = semantic
    cam = json.loads((a2d2_real / "cams_lidars.json").read_text())["cameras"]["front_center"]
    mapx, mapy = cv2.initUndistortRectifyMap(
        np.array(cam["CamMatrixOriginal"]),
        np.array(cam["Distortion"]).reshape(-1),
        None,
        np.array(cam["CamMatrix"]),
        tuple(cam["Resolution"]),
        cv2.CV_32FC1,
    )
    col, row = np.floor(mapx + 0.5).astype(int), np.floor(mapy + 0.5).astype(int)
    inside = (col >= 0) & (col < 1920) & (row >= 0) & (row < 1208)
    class_list = json.loads((a2d2_real / "class_list.json").read_text())
    label = rgb(frame.paths["label"])
    ids_of = {int(c[1:], 16): SEG_TABLES["a2d2"][n] for c, n in class_list.items()}
    packed = (label[..., 0].astype(int) << 16) | (label[..., 1].astype(int) << 8) | label[..., 2]
    source_ids = np.vectorize(
        lambda p: IGNORE_INDEX if ids_of[p] == "ignore" else SEG_CLASSES.index(ids_of[p]), otypes=[np.uint8]
    )(packed)
    expected = np.full((1208, 1920), IGNORE_INDEX, np.uint8)
    expected[inside] = source_ids[row[inside], col[inside]]
    # exact up to pixels whose mapped coordinate sits on a .5 tie (float32 maps): a handful
    assert np.count_nonzero(sample.seg != expected) <= 10
    np.testing.assert_array_equal(sample.K, cam["CamMatrix"])
    assert sample.size == (1208, 1920) and sample.sequence == "20180807_145028"


def test_depth_pixels_equal_the_npz_depths_at_rounded_row_col(box_sample, a2d2_real):
    npz = np.load(
        a2d2_real
        / "camera_lidar_semantic_bboxes"
        / BOX_SCENE
        / "lidar"
        / "cam_front_center"
        / f"{BOX_PREFIX}_lidar_frontcenter_{BOX_ID}.npz"
    )
    row = np.floor(npz["row"] + 0.5).astype(int)
    col = np.floor(npz["col"] + 0.5).astype(int)
    best: dict[tuple[int, int], float] = {}
    for r, c, d in zip(row, col, npz["depth"]):
        if 0 <= r < 1208 and 0 <= c < 1920 and d < best.get((r, c), np.inf):
            best[(r, c)] = d
    rows, cols = np.nonzero(box_sample.depth)
    assert set(zip(rows.tolist(), cols.tolist())) == set(best)
    for (r, c), d in best.items():
        assert box_sample.depth[r, c] == pytest.approx(d, abs=1 / 512)
    np.testing.assert_allclose(npz["depth"], npz["points"][:, 0])  # depth is the optical z


def test_2d_boxes_equal_the_projected_3d_points(box_sample, a2d2_real):
    doc = json.loads(
        (
            a2d2_real
            / "camera_lidar_semantic_bboxes"
            / BOX_SCENE
            / "label3D"
            / "cam_front_center"
            / f"{BOX_PREFIX}_label3D_frontcenter_{BOX_ID}.json"
        ).read_text()
    )
    K = box_sample.K
    for i, name in enumerate(sorted(doc)):
        box = doc[name]
        np.testing.assert_array_equal(box_sample.det2d.boxes[i], box["2d_bbox"])
        uv, _ = geo.project(ag.view_to_optical(np.array(box["3d_points"])), K)
        np.testing.assert_allclose([*uv.min(0), *uv.max(0)], box["2d_bbox"], atol=1.0)
    assert [DET_CLASSES[c] for c in box_sample.det2d.classes] == ["truck", "cyclist", "cyclist", "car"]


def test_3d_box_corners_map_back_to_the_a2d2_3d_points(box_sample, a2d2_real):
    doc = json.loads(
        (
            a2d2_real
            / "camera_lidar_semantic_bboxes"
            / BOX_SCENE
            / "label3D"
            / "cam_front_center"
            / f"{BOX_PREFIX}_label3D_frontcenter_{BOX_ID}.json"
        ).read_text()
    )
    corners = geo.box3d_corners(box_sample.det3d.boxes)  # yaw only: every real axis is vertical
    assert box_sample.det3d.rotation is None
    for i, name in enumerate(sorted(doc)):
        back = corners[i] @ ag.VIEW_TO_OPTICAL  # optical -> view frame (the matrix is orthogonal)
        want = np.array(doc[name]["3d_points"])
        np.testing.assert_allclose(np.sort(back, axis=0), np.sort(want, axis=0), atol=0.01)
        # the centre is the geometric centre, in the optical frame
        np.testing.assert_allclose(box_sample.det3d.boxes[i, :3], ag.view_to_optical(want.mean(0))[0], atol=1e-9)


def test_steering_is_interpolated_at_the_camera_timestamp(box_sample):
    # the ramp starts 1 s - 3.333 ms before the camera time: angle = -20 + 40 * 0.996667
    assert box_sample.steer.angle_deg == pytest.approx(-20 + 40 * (1_000_000 - 3_333) / 1e6, abs=1e-9)
    assert box_sample.steer.speed_kmh == pytest.approx(50 + (1_000_000 - 3_333) / 1e5, abs=1e-9)
    assert box_sample.steer.gap_ms == pytest.approx(6.667)
    assert box_sample.timestamp_us == CAM_TSTAMP
    assert box_sample.tasks == ("depth", "det2d", "det3d", "steer")
    assert validate(box_sample, len(DET_CLASSES)) == []


def test_frame_beyond_the_bus_gap_gets_no_steer_and_is_counted(box_frame_root):
    conv = A2D2Converter(box_frame_root, A2D2Options(max_bus_gap_ms=5.0))
    sample = conv.convert(conv.frames()[0])
    assert sample.steer is None and sample.notes == {"steer_bus_gap": 1}


def test_val_scenes_move_whole_scenes(box_frame_root):
    conv = A2D2Converter(box_frame_root, A2D2Options(val_scenes=(BOX_SCENE,)))
    assert [f.split for f in conv.frames()] == ["val"]


def test_val_scenes_naming_an_unknown_scene_is_an_error_listing_the_scenes(box_frame_root):
    conv = A2D2Converter(box_frame_root, A2D2Options(val_scenes=(BOX_SCENE, "20180807_145029")))
    with pytest.raises(MtlDataError, match=rf"--val-scenes 20180807_145029: no such scene .*\(scenes: {BOX_SCENE}\)"):
        conv.frames()


def test_the_real_bbox_frame_without_its_camera_image_is_listed_and_reported(a2d2_real):
    """The fixture's lidar + label3D frame has no camera PNG: an error naming the image, not a lost frame."""
    conv = A2D2Converter(a2d2_real)
    frames = {f.id: f for f in conv.frames()}
    assert sorted(frames) == [SEM_ID, f"{BOX_PREFIX}_frontcenter_{BOX_ID}"]
    box_frame = frames[f"{BOX_PREFIX}_frontcenter_{BOX_ID}"]
    image = (
        a2d2_real
        / "camera_lidar_semantic_bboxes"
        / BOX_SCENE
        / "camera"
        / "cam_front_center"
        / f"{BOX_PREFIX}_camera_frontcenter_{BOX_ID}.png"
    )
    assert box_frame.primary_path == image
    with pytest.raises(InputError, match="camera image missing, but the frame has lidar and label3D files") as info:
        conv.convert(box_frame)
    assert info.value.path == str(image)


def test_sensor_fusion_npz_keys_are_accepted_and_invalid_points_dropped(box_frame_root, tmp_path):
    npz_path = next(box_frame_root.rglob("*.npz"))
    real = dict(np.load(npz_path))  # read fully before the file is rewritten
    valid = np.ones(len(real["depth"]), dtype=np.int64)
    valid[::2] = 0
    np.savez(
        npz_path,
        **{
            "pcloud_points": real["points"],
            "pcloud_attr.row": real["row"],
            "pcloud_attr.col": real["col"],
            "pcloud_attr.depth": real["depth"],
            "pcloud_attr.valid": valid,
        },
    )
    conv = A2D2Converter(box_frame_root)
    depth = conv.convert(conv.frames()[0]).depth
    kept = geo.rasterize_sparse_depth(
        np.column_stack([real["col"], real["row"]])[1::2], real["depth"][1::2], (1208, 1920)
    )
    np.testing.assert_array_equal(depth, kept)


def test_val_fraction_takes_whole_scenes_in_the_asked_proportion(synth_root):
    from mtl_data.ingest.splits import val_groups

    conv = A2D2Converter(synth_root("a2d2"), A2D2Options(val_fraction=0.34))
    frames = conv.frames()
    scenes = {f.paths["image"].parents[2].name: set() for f in frames}
    for f in frames:
        scenes[f.paths["image"].parents[2].name].add(f.split)
    assert all(len(s) == 1 for s in scenes.values()), scenes  # no scene on both sides
    assert sorted(s.pop() for s in scenes.values()) == ["train", "train", "val"]
    assert len(val_groups([f"s{i}" for i in range(23)], 0.1, "a2d2")) == 2
    assert val_groups(["a", "b"], 0.01, "x") and not val_groups(["a", "b"], 0.0, "x")


def test_frames_of_a_scene_without_bus_file_are_counted(synth_root):
    conv = A2D2Converter(synth_root("a2d2"))
    notes = [conv.convert(f).notes for f in conv.frames()]
    assert sum(n.get("steer_no_bus_file", 0) for n in notes) == 3  # synth: the third scene has no bus


def test_files_not_named_like_frames_are_not_frames(box_frame_root):
    cam_dir = box_frame_root / "camera_lidar_semantic_bboxes" / BOX_SCENE / "camera" / "cam_front_center"
    (cam_dir / "preview_camera_x.png").write_bytes(b"not a frame")
    (cam_dir / "notes.txt").write_text("hello")
    assert len(A2D2Converter(box_frame_root).frames()) == 1


@pytest.mark.parametrize("camera", ["front_center", "side_left"])  # telecam and fisheye lenses
def test_seg_of_each_lens_model_is_the_exact_nearest_neighbour_undistortion(synth_root, camera):
    root = synth_root("a2d2")
    conv = A2D2Converter(root, A2D2Options(cameras=(camera,)))
    cam = json.loads((root / "cams_lidars.json").read_text())["cameras"][camera]
    k0, k1 = np.array(cam["CamMatrixOriginal"]), np.array(cam["CamMatrix"])
    dist, size = np.array(cam["Distortion"]).reshape(-1), tuple(cam["Resolution"])
    if cam["Lens"] == "Fisheye":
        mapx, mapy = cv2.fisheye.initUndistortRectifyMap(k0, dist[:4], np.eye(3), k1, size, cv2.CV_32FC1)
    else:
        mapx, mapy = cv2.initUndistortRectifyMap(k0, dist, None, k1, size, cv2.CV_32FC1)
    col, row = np.floor(mapx + 0.5).astype(int), np.floor(mapy + 0.5).astype(int)
    inside = (col >= 0) & (col < size[0]) & (row >= 0) & (row < size[1])
    frames = conv.frames()
    assert frames and all(f.paths["image"].parent.name == f"cam_{camera}" for f in frames)
    for frame in frames:
        sample = conv.convert(frame)
        assert validate(sample, len(DET_CLASSES)) == [] and sample.extra == {"camera": camera}
        np.testing.assert_array_equal(sample.K, k1)
        label = rgb(frame.paths["label"]).astype(int)
        source_ids = conv._color_lut()[(label[..., 0] << 16) | (label[..., 1] << 8) | label[..., 2]]
        expected = np.full(sample.seg.shape, IGNORE_INDEX, np.uint8)
        expected[inside] = source_ids[row[inside], col[inside]]
        assert np.count_nonzero(sample.seg != expected) <= 5
        assert len(np.unique(sample.seg)) >= 4
