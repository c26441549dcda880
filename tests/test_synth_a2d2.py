"""The synthetic A2D2 writer: native layout, the real file formats (checked against the real
fixtures), and consistency between label PNGs, label3D boxes, LiDAR npz and bus signals."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fixture_path

from mtl_data.synth.a2d2 import synth_a2d2, synth_speed_kmh, synth_steering_deg
from mtl_data.synth.registry import SYNTHESIZERS

SCENE_DIR = re.compile(r"^\d{8}_\d{6}$")
WIDTH, HEIGHT = 480, 302
CAMERA_JSON_KEYS = ["cam_tstamp", "cam_name", "image_zoom", "image_png", "pcld_npz", "pcld_view", "lidar_ids"]
LIDAR_IDS = {"0": "front_center", "1": "front_left", "2": "front_right", "3": "rear_left", "4": "rear_right"}
#: label3D class -> the class_list class its pixels carry (any instance shade)
SEMANTIC = {
    "Car": "Car",
    "VanSUV": "Car",
    "Truck": "Truck",
    "Pedestrian": "Pedestrian",
    "Cyclist": "Bicycle",
    "Bicycle": "Bicycle",
}
REAL_NPZ = (
    "camera_lidar_semantic_bboxes/20180810_142822/lidar/cam_front_center/20180810142822_lidar_frontcenter_000015196.npz"
)
REAL_LABEL3D = (
    "camera_lidar_semantic_bboxes/20180810_142822/label3D/cam_front_center/"
    "20180810142822_label3D_frontcenter_000015196.json"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset written once for the read-only tests below."""
    out = tmp_path_factory.mktemp("a2d2")
    synth_a2d2(out, seed=0)
    return out


@pytest.fixture(scope="module")
def config(root: Path) -> dict:
    return json.loads((root / "cams_lidars.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sibling(path: Path, kind: str, ext: str) -> Path:
    """The file of another kind for the same frame (the tutorial's split-on-'_' rule)."""
    prefix, _, token, frame_id = path.stem.split("_")
    return path.parents[2] / kind / path.parent.name / f"{prefix}_{kind}_{token}_{frame_id}.{ext}"


def _camera_jsons(root: Path, subset: str = "camera_lidar_semantic") -> list[Path]:
    return sorted((root / subset).glob("*/camera/cam_*/*.json"))


def _label3d_files(root: Path) -> list[Path]:
    return sorted((root / "camera_lidar_semantic_bboxes").glob("*/label3D/cam_*/*.json"))


def _hex(bgr: np.ndarray) -> list[str]:
    return [f"#{r:02x}{g:02x}{b:02x}" for b, g, r in np.asarray(bgr).reshape(-1, 3)]


def _undistorted_label(path: Path, camera: dict) -> np.ndarray:
    """The label PNG undistorted as the tutorial does it, but with nearest-neighbour sampling."""
    K, K0, D = (np.array(camera[k], np.float64) for k in ("CamMatrix", "CamMatrixOriginal", "Distortion"))
    size = tuple(camera["Resolution"])
    if camera["Lens"] == "Fisheye":
        mx, my = cv2.fisheye.initUndistortRectifyMap(K0, D, np.eye(3), K, size, cv2.CV_32FC1)
    else:
        mx, my = cv2.initUndistortRectifyMap(K0, D, None, K, size, cv2.CV_32FC1)
    return cv2.remap(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), mx, my, cv2.INTER_NEAREST)


def _tutorial_corners(box: dict) -> np.ndarray:
    """A2D2 tutorial ``axis_angle_to_rotation_mat`` + ``get_points``, written out independently."""
    axis, angle = np.array(box["axis"], np.float64), box["rot_angle"]
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)
    hl, hw, hh = np.array(box["size"]) / 2.0
    brl, bfl, bfr, brr = [-hl, hw, -hh], [hl, hw, -hh], [hl, -hw, -hh], [-hl, -hw, -hh]
    trl, tfl, tfr, trr = [-hl, hw, hh], [hl, hw, hh], [hl, -hw, hh], [-hl, -hw, hh]
    return np.array([brl, bfl, bfr, brr, trl, tfl, tfr, trr]) @ rot.T + np.array(box["center"])


def _project(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """raw-formats 1.4: col = fx (-y)/x + cx, row = fy (-z)/x + cy."""
    return K[0, 0] * -points[:, 1] / points[:, 0] + K[0, 2], K[1, 1] * -points[:, 2] / points[:, 0] + K[1, 2]


# ---- layout and determinism ----------------------------------------------------------------


def test_synth_a2d2_is_registered_under_a2d2():
    assert SYNTHESIZERS["a2d2"] is synth_a2d2


def test_writes_the_a2d2_layout(root: Path):
    files = set(_files(root))
    scenes = sorted(p.name for p in (root / "camera_lidar_semantic").iterdir() if p.is_dir())
    assert len(scenes) == 3 and all(SCENE_DIR.match(s) for s in scenes)
    expected = {"cams_lidars.json", "camera_lidar_semantic/class_list.json"}
    for scene in scenes:
        cams = sorted(p.name for p in (root / "camera_lidar_semantic" / scene / "camera").iterdir())
        assert cams == (["cam_front_center", "cam_side_left"] if scene == scenes[0] else ["cam_front_center"])
    pattern = re.compile(r"^(\d{14})_camera_(frontcenter|sideleft)_(\d{9})\.json$")
    for path in _camera_jsons(root):
        scene, cam = path.parts[-4], path.parts[-2]
        match = pattern.match(path.name)
        assert match and match[1] == scene.replace("_", "") and match[2] == cam[4:].replace("_", "")
        rel = path.relative_to(root / "camera_lidar_semantic")
        frame = [
            rel.as_posix(),
            rel.with_suffix(".png").as_posix(),
            _sibling(rel, "lidar", "npz").as_posix(),
            _sibling(rel, "label", "png").as_posix(),
        ]
        expected |= {f"camera_lidar_semantic/{f}" for f in frame}
        if scene == scenes[0] and cam == "cam_front_center":
            frame.append(_sibling(rel, "label3D", "json").as_posix())
            expected |= {f"camera_lidar_semantic_bboxes/{f}" for f in frame}
    assert len(_camera_jsons(root)) == 12
    p0, p1 = scenes[0].replace("_", ""), scenes[1].replace("_", "")
    expected |= {
        f"camera_lidar_semantic_bus/{scenes[0]}/bus/{p0}_bus_signals.json",
        f"camera_lidar/{scenes[1]}/bus/{p1}_bus_signals.json",
    }
    assert files == expected
    assert len(files) == 67


def test_bbox_subset_holds_the_same_frame_files(root: Path):
    boxes = root / "camera_lidar_semantic_bboxes"
    for path in boxes.rglob("*"):
        if path.is_file() and "label3D" not in path.parts:
            assert path.read_bytes() == (root / "camera_lidar_semantic" / path.relative_to(boxes)).read_bytes()


def test_same_seed_gives_byte_identical_files(root: Path, tmp_path: Path):
    synth_a2d2(tmp_path / "again", seed=0)
    assert _files(tmp_path / "again") == _files(root)
    assert not list(tmp_path.rglob("*.tmp"))


def test_different_seed_gives_different_frames(root: Path, tmp_path: Path):
    synth_a2d2(tmp_path / "other", seed=1)
    a, b = _files(root), _files(tmp_path / "other")
    assert a["camera_lidar_semantic/class_list.json"] == b["camera_lidar_semantic/class_list.json"]
    assert a["cams_lidars.json"] == b["cams_lidars.json"]
    assert {k for k in a if k.endswith(".png")} != {k for k in b if k.endswith(".png")}  # other IDs


# ---- configuration files -----------------------------------------------------------------------


def test_class_list_is_the_real_one(root: Path):
    real = fixture_path("a2d2", "class_list.json").read_bytes()
    ours = (root / "camera_lidar_semantic/class_list.json").read_bytes()
    assert len(json.loads(ours)) == 55
    assert ours == real


def test_cams_lidars_has_the_real_structure_scaled_to_a_quarter(config: dict):
    real = json.loads(fixture_path("a2d2", "cams_lidars.json").read_text())
    assert list(config) == list(real) == ["vehicle", "lidars", "cameras"]
    assert config["vehicle"] == real["vehicle"]
    assert config["lidars"] == real["lidars"]
    assert list(config["cameras"]) == ["front_center", "side_left"]
    for name, cam in config["cameras"].items():
        ref = real["cameras"][name]
        assert list(cam) == list(ref)  # same keys in the same order
        for key in ("view", "view_", "Lens", "Distortion", "tstamp_delay"):
            assert cam[key] == ref[key]
        for key in ("CamMatrix", "CamMatrixOriginal"):
            expected = np.array(ref[key])
            expected[:2] *= 0.25
            assert np.array_equal(np.array(cam[key]), expected)
        assert cam["Resolution"] == [WIDTH, HEIGHT]
    assert config["cameras"]["front_center"]["Lens"] == "Telecam"
    assert config["cameras"]["side_left"]["Lens"] == "Fisheye"


def test_camera_jsons_carry_the_frame_info(root: Path, config: dict):
    lo = datetime(2018, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6
    hi = datetime(2019, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6
    by_camera: dict[tuple[str, str], list[int]] = {}
    for path in _camera_jsons(root):
        info = json.loads(path.read_text())
        assert list(info) == CAMERA_JSON_KEYS
        cam = path.parent.name[4:]
        assert info["cam_name"] == cam
        assert isinstance(info["cam_tstamp"], int) and lo < info["cam_tstamp"] < hi
        assert info["image_png"] == path.with_suffix(".png").name
        assert info["pcld_npz"] == _sibling(path, "lidar", "npz").name
        assert info["pcld_view"] == config["cameras"][cam]["view"]
        assert info["lidar_ids"] == LIDAR_IDS
        by_camera.setdefault((path.parts[-4], cam), []).append(info["cam_tstamp"])
    for stamps in by_camera.values():  # files sort by ID; consecutive frames ~33 ms apart
        assert len(stamps) == 3 and all(30_000 < d < 37_000 for d in np.diff(stamps))


def test_images_and_labels_are_8_bit_rgb_at_a_quarter_size(root: Path):
    for path in _camera_jsons(root):
        for png in (path.with_suffix(".png"), _sibling(path, "label", "png")):
            data = png.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(data[16:20], "big") == WIDTH and int.from_bytes(data[20:24], "big") == HEIGHT
            assert data[24:26] == b"\x08\x02"  # bit depth 8, colour type 2 (RGB)


# ---- semantic labels -----------------------------------------------------------------------------


def test_label_colours_are_all_in_class_list(root: Path):
    class_list = json.loads((root / "camera_lidar_semantic/class_list.json").read_text())
    for path in _camera_jsons(root):
        label = cv2.imread(str(_sibling(path, "label", "png")), cv2.IMREAD_UNCHANGED)
        packed = np.unique(label.reshape(-1, 3).astype(np.int64) @ [1, 1 << 8, 1 << 16])
        colours = set(_hex(np.stack([packed & 255, packed >> 8 & 255, packed >> 16], -1)))
        assert colours <= set(class_list), colours - set(class_list)
        assert {"#ff00ff", "#87ceff", "#48d1cc"} <= colours  # road, sky, ego car


def test_undistorted_label_has_each_box_in_its_class_colour(root: Path, config: dict):
    class_list = json.loads((root / "camera_lidar_semantic/class_list.json").read_text())
    files = _label3d_files(root)
    assert len(files) == 3
    for path in files:
        label = _undistorted_label(_sibling(path, "label", "png"), config["cameras"]["front_center"])
        for box in json.loads(path.read_text()).values():
            x0, y0, x1, y1 = box["2d_bbox"]
            region = label[int(np.ceil(y0)) : int(y1) + 1, int(np.ceil(x0)) : int(x1) + 1]
            names = [class_list[c].rsplit(" ", 1)[0] for c in _hex(region)]
            share = np.mean([n == SEMANTIC[box["class"]] for n in names])
            assert share > 0.75, (path.name, box["class"], share)


def test_lidar_points_land_on_their_objects_in_the_undistorted_label(root: Path, config: dict):
    """Both lenses: no point on the sky, and points inside a 3D box on that box's class colour."""
    class_list = json.loads((root / "camera_lidar_semantic/class_list.json").read_text())
    for path in _camera_jsons(root):
        camera = config["cameras"][path.parent.name[4:]]
        label = _undistorted_label(_sibling(path, "label", "png"), camera)
        npz = np.load(_sibling(path, "lidar", "npz"))
        rows = np.clip(np.floor(npz["row"] + 0.5).astype(int), 0, HEIGHT - 1)
        cols = np.clip(np.floor(npz["col"] + 0.5).astype(int), 0, WIDTH - 1)
        names = np.array([class_list[c] for c in _hex(label[rows, cols])])
        assert np.mean(names == "Sky") < 0.002, path.name
        label3d = (
            _sibling(path, "label3D", "json")
            .as_posix()
            .replace("camera_lidar_semantic/", "camera_lidar_semantic_bboxes/")
        )
        if not Path(label3d).exists():
            continue
        for box in json.loads(Path(label3d).read_text()).values():
            corners = _tutorial_corners(box)
            axes = np.stack([corners[1] - corners[0], corners[3] - corners[0], corners[4] - corners[0]])
            lengths = np.linalg.norm(axes, axis=1)
            local = (npz["points"] - corners[0]) @ (axes / lengths[:, None]).T  # metres from brl
            inside = np.all((local > [-0.05, -0.05, 0.05]) & (local < lengths + 0.05), axis=1)
            assert inside.sum() > 0
            hit = [n.rsplit(" ", 1)[0] == SEMANTIC[box["class"]] for n in names[inside]]
            assert np.mean(hit) > 0.8, (path.name, box["class"], np.mean(hit))


# ---- LiDAR -------------------------------------------------------------------------------------------


def test_npz_has_the_real_keys_and_dtypes(root: Path):
    real = np.load(fixture_path("a2d2", *REAL_NPZ.split("/")))
    for path in _camera_jsons(root):
        npz = np.load(_sibling(path, "lidar", "npz"))
        assert npz.files == real.files
        n = len(npz["points"])
        assert 300 <= n <= 10_000
        for key in real.files:
            assert npz[key].dtype == real[key].dtype, key
            assert npz[key].shape == ((n, 3) if key == "points" else (n,)), key


def test_npz_values_follow_the_documented_semantics(root: Path, config: dict):
    for path in _camera_jsons(root):
        info = json.loads(path.read_text())
        K = np.array(config["cameras"][info["cam_name"]]["CamMatrix"])
        npz = np.load(_sibling(path, "lidar", "npz"))
        points = npz["points"]
        col, row = _project(points, K)
        np.testing.assert_allclose(npz["col"], col, atol=1e-9)
        np.testing.assert_allclose(npz["row"], row, atol=1e-9)
        assert np.array_equal(npz["depth"], points[:, 0])
        np.testing.assert_allclose(npz["distance"], np.linalg.norm(points, axis=1), rtol=1e-12)
        assert (npz["col"] >= -0.5).all() and (npz["col"] < WIDTH - 0.5).all()
        assert (npz["row"] >= -0.5).all() and (npz["row"] < HEIGHT - 0.5).all()
        assert set(np.unique(npz["lidar_id"])) <= {0.0, 1.0, 2.0, 3.0, 4.0}
        assert npz["reflectance"].min() >= 1 and npz["reflectance"].max() <= 251
        assert (npz["azimuth"] >= 0).all() and (npz["azimuth"] < 2 * np.pi).all()
        assert np.abs(npz["timestamp"] - info["cam_tstamp"]).max() <= 60_000
        assert points[:, 2].min() > -1.9  # the road is 1.75 m below the camera


def test_npz_is_written_uncompressed_with_fixed_zip_dates(root: Path):
    import zipfile

    for path in (root / "camera_lidar_semantic").rglob("*.npz"):
        with zipfile.ZipFile(path) as zf:
            assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


# ---- 3D boxes ----------------------------------------------------------------------------------------


def test_tutorial_corner_helper_reproduces_the_real_fixture():
    real = json.loads(fixture_path("a2d2", *REAL_LABEL3D.split("/")).read_text())
    for box in real.values():
        np.testing.assert_allclose(_tutorial_corners(box), box["3d_points"], atol=1e-9)


def test_label3d_has_the_real_format(root: Path):
    real = json.loads(fixture_path("a2d2", *REAL_LABEL3D.split("/")).read_text())
    real_keys = list(real["box_0"])
    for path in _label3d_files(root):
        text = path.read_text()
        boxes = json.loads(text)
        assert text == json.dumps(boxes, indent=4, sort_keys=True)  # the real file's formatting
        assert list(boxes) == [f"box_{i}" for i in range(len(boxes))] and 2 <= len(boxes) <= 4
        for i, box in enumerate(boxes.values()):
            assert list(box) == real_keys
            assert box["id"] == i and box["class"] in SEMANTIC
            assert box["axis"] in ([0.0, 0.0, -1.0], [0.0, 0.0, 1.0])
            assert 6.0 <= box["center"][0] <= 40.0
            assert box["center"][2] - box["size"][2] / 2 == pytest.approx(-1.75, abs=1e-4)  # on the road
            assert (box["truncation"], box["occlusion"], box["alpha"]) == (0.0, 0.0, 0.0)


def test_label3d_corners_and_2d_boxes_follow_from_the_box(root: Path, config: dict):
    K = np.array(config["cameras"]["front_center"]["CamMatrix"])
    for path in _label3d_files(root):
        for box in json.loads(path.read_text()).values():
            corners = _tutorial_corners(box)
            np.testing.assert_allclose(box["3d_points"], corners, atol=1e-9)
            col, row = _project(corners, K)
            extent = [col.min(), row.min(), col.max(), row.max()]
            np.testing.assert_allclose(box["2d_bbox"], extent, atol=1e-3)
            assert 0 <= extent[0] and extent[2] < WIDTH and 0 <= extent[1] and extent[3] < HEIGHT


# ---- bus signals -------------------------------------------------------------------------------------


def _bus_files(root: Path) -> tuple[Path, Path]:
    (semantic,) = (root / "camera_lidar_semantic_bus").glob("*/bus/*_bus_signals.json")
    (fusion,) = (root / "camera_lidar").glob("*/bus/*_bus_signals.json")
    return semantic, fusion


def test_bus_files_belong_to_scenes_one_and_two(root: Path):
    scenes = sorted(p.name for p in (root / "camera_lidar_semantic").iterdir() if p.is_dir())
    semantic, fusion = _bus_files(root)
    assert semantic.parts[-3] == scenes[0] and semantic.name == f"{scenes[0].replace('_', '')}_bus_signals.json"
    assert fusion.parts[-3] == scenes[1] and fusion.name == f"{scenes[1].replace('_', '')}_bus_signals.json"


def test_semantic_bus_array_averages_to_the_known_signals(root: Path):
    semantic, _ = _bus_files(root)
    entries = json.loads(semantic.read_text())
    frames = {
        p.name: json.loads(p.read_text())["cam_tstamp"]
        for p in (root / "camera_lidar_semantic" / semantic.parts[-3]).glob("camera/*/*.json")
    }
    assert isinstance(entries, list) and len(entries) == len(frames) == 6
    assert {e["frame_name"]: e["timestamp"] for e in entries} == frames
    for entry in entries:
        assert list(entry) == ["frame_name", "timestamp", "flexray"]
        flexray, t = entry["flexray"], entry["timestamp"]
        for spec in flexray.values():
            assert set(spec) == {"unit", "values"} and isinstance(spec["values"], list)
        magnitude = np.array(flexray["steering_angle_calculated"]["values"])
        sign = flexray["steering_angle_calculated_sign"]["values"]
        assert len(set(sign)) == 1 and (magnitude >= 0).all()
        signed = np.where(np.array(sign) == 1, -magnitude, magnitude)
        assert signed.mean() == pytest.approx(synth_steering_deg(t), abs=1e-9)
        assert np.mean(flexray["vehicle_speed"]["values"]) == pytest.approx(synth_speed_kmh(t), abs=1e-9)
        assert flexray["steering_angle_calculated"]["unit"] == "Unit_DegreOfArc"
        assert flexray["vehicle_speed"]["unit"] == "Unit_KiloMeterPerHour"
        assert {"accelerator_pedal", "brake_pressure"} <= set(flexray)


def test_sensor_fusion_bus_object_interpolates_to_the_known_signals(root: Path):
    _, fusion = _bus_files(root)
    doc = json.loads(fusion.read_text())
    assert isinstance(doc, dict)
    assert {
        "steering_angle_calculated",
        "steering_angle_calculated_sign",
        "vehicle_speed",
        "accelerator_pedal",
        "brake_pressure",
    } <= set(doc)
    series = {}
    for name, spec in doc.items():
        assert set(spec) == {"unit", "values"}
        t = np.array([pair[0] for pair in spec["values"]])
        assert all(isinstance(pair[0], int) and len(pair) == 2 for pair in spec["values"])
        assert (np.diff(t) == 10_000).all()  # 100 Hz
        series[name] = (t, np.array([pair[1] for pair in spec["values"]], np.float64))
    t, magnitude = series["steering_angle_calculated"]
    t_sign, sign = series["steering_angle_calculated_sign"]
    assert np.array_equal(t, t_sign) and set(np.unique(sign)) <= {0.0, 1.0}
    signed = np.where(sign == 1, -magnitude, magnitude)
    stamps = [
        json.loads(p.read_text())["cam_tstamp"]
        for p in (root / "camera_lidar_semantic" / fusion.parts[-3]).glob("camera/*/*.json")
    ]
    assert len(stamps) == 3
    for stamp in stamps:
        assert t[0] < stamp < t[-1]
        assert np.interp(stamp, t, signed) == pytest.approx(synth_steering_deg(stamp), abs=1e-2)
        speed_t, speed = series["vehicle_speed"]
        assert np.interp(stamp, speed_t, speed) == pytest.approx(synth_speed_kmh(stamp), abs=1e-3)
    assert doc["vehicle_speed"]["unit"] == "Unit_KiloMeterPerHour"
    assert doc["steering_angle_calculated_sign"]["unit"] is None


def test_steering_function_is_signed_and_periodic():
    assert synth_steering_deg(0) == 0.0
    assert synth_steering_deg(1_000_000) == pytest.approx(30.0)
    assert synth_steering_deg(3_000_000) == pytest.approx(-30.0)
    assert synth_steering_deg(1_533_646_500_000_000 + 4_000_000) == pytest.approx(
        synth_steering_deg(1_533_646_500_000_000)
    )
    assert synth_steering_deg(np.array([0, 1_000_000])).shape == (2,)
