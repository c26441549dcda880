"""Bad A2D2 raw input and bad A2D2 options: one clear ``error:`` line, a non-zero exit, no
traceback and nothing half-written; under ``--on-error skip`` the bad frame is recorded in
``rejects.jsonl`` and the other frame converted.

The raw root is built from the real fixtures (cams_lidars.json, the npz + label3D of frame
000015196, class_list.json and the semantic label of frame 000006882) with a generated camera
image, frame json and a sensor-fusion bus ramp; a second frame 000015197 of the same scene
reuses the same files with its own ``cam_tstamp`` 33.333 ms later (which falls exactly on a bus
sample, while the first frame is 6.667 ms from its nearest samples).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import (
    FrameCorruption,
    assert_fails_before_writing,
    assert_fails_cleanly,
    assert_skipped_cleanly,
    file_and_line,
    fixture_path,
    ingest_cli,
    ingest_corrupted,
    read_manifest,
    read_rejects,
    read_report,
)

from mtl_data.schema import a2d2_geometry as ag
from mtl_data.schema.sample import IGNORE_INDEX
from mtl_data.schema.taxonomy import SEG_CLASSES
from mtl_data.shards.reader import ShardSet

SCENE, PREFIX = "20180810_142822", "20180810142822"
IDS = ("000015196", "000015197")
CAM_TSTAMP = 1533904617100000
TSTAMPS = {IDS[0]: CAM_TSTAMP, IDS[1]: CAM_TSTAMP + 33_333}
BBOX = f"camera_lidar_semantic_bboxes/{SCENE}"
BUS_REL = f"camera_lidar/{SCENE}/bus/{PREFIX}_bus_signals.json"
CAMERAS = ("front_left", "front_right", "front_center", "side_left", "side_right", "rear_center")
KNOWN_DET = (
    "Car",
    "VanSUV",
    "Truck",
    "Bus",
    "Pedestrian",
    "Cyclist",
    "MotorBiker",
    "Motorcycle",
    "Bicycle",
    "UtilityVehicle",
    "EmergencyVehicle",
    "Trailer",
    "CaravanTransporter",
    "Animal",
)
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]
SEM_LABEL = (
    "a2d2",
    "camera_lidar_semantic",
    "20180807_145028",
    "label",
    "cam_front_center",
    "20180807145028_label_frontcenter_000006882.png",
)


def rel(kind: str, frame_id: str, ext: str) -> str:
    """A frame's file of ``kind`` (camera, lidar, label, label3D), relative to the raw root."""
    return f"{BBOX}/{kind}/cam_front_center/{PREFIX}_{kind}_frontcenter_{frame_id}.{ext}"


def frame_key(frame_id: str) -> str:
    return f"a2d2_train_{PREFIX}_frontcenter_{frame_id}"


# ---- the raw root -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def camera_png(tmp_path_factory) -> Path:
    """One 1920x1208 camera PNG, written once (fast compression) and copied into every root."""
    path = tmp_path_factory.mktemp("a2d2_template") / "camera.png"
    rows, cols = np.indices((1208, 1920))
    image = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    assert cv2.imwrite(str(path), image, PNG_FAST)
    return path


def _bus_ramp() -> dict:
    """Sensor-fusion bus file: angle = -20 + 40 deg/s * t through zero, 100 Hz, around CAM_TSTAMP."""
    t = CAM_TSTAMP - 1_000_000 + np.arange(0, 2_000_000, 10_000) + 3_333
    angle = -20.0 + 40.0 * (t - t[0]) / 1e6
    return {
        "steering_angle_calculated": {
            "unit": "Unit_DegreOfArc",
            "values": [[int(a), abs(float(b))] for a, b in zip(t, angle)],
        },
        "steering_angle_calculated_sign": {"unit": None, "values": [[int(a), int(b < 0)] for a, b in zip(t, angle)]},
        "vehicle_speed": {"unit": "Unit_KiloMeterPerHour", "values": [[int(a), 50.0 + (a - t[0]) / 1e5] for a in t]},
    }


def build_root(root: Path, camera_png: Path) -> Path:
    """Two frames of one scene in the bbox part, plus the scene's sensor-fusion bus file."""
    real = fixture_path("a2d2")
    root.mkdir(parents=True)
    shutil.copy(real / "cams_lidars.json", root / "cams_lidars.json")
    for frame_id in IDS:
        for kind, ext in (("lidar", "npz"), ("label3D", "json")):
            dst = root / rel(kind, frame_id, ext)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(real / rel(kind, IDS[0], ext), dst)
        image = root / rel("camera", frame_id, "png")
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(camera_png, image)
        image.with_suffix(".json").write_text(
            json.dumps(
                {"cam_tstamp": TSTAMPS[frame_id], "cam_name": "front_center", "lidar_ids": {"0": "front_center"}}
            )
        )
    bus = root / BUS_REL
    bus.parent.mkdir(parents=True)
    bus.write_text(json.dumps(_bus_ramp()))
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture
def a2d2_root(tmp_path, camera_png) -> Path:
    return build_root(tmp_path / "a2d2_raw", camera_png)


# ---- helpers ----------------------------------------------------------------------------------


def _add_class_list(root: Path) -> None:
    (root / "camera_lidar_semantic").mkdir(exist_ok=True)
    shutil.copy(fixture_path("a2d2", "class_list.json"), root / "camera_lidar_semantic" / "class_list.json")


def _edit_json(path: Path, edit: Callable[[object], object]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


# ---- per-frame corruptions --------------------------------------------------------------------


def _label_wrong_size(root: Path) -> None:
    _add_class_list(root)
    path = root / rel("label", IDS[1], "png")
    path.parent.mkdir(parents=True)
    assert cv2.imwrite(str(path), np.zeros((50, 100, 3), np.uint8))


def _npz_only_points(root: Path) -> None:
    path = root / rel("lidar", IDS[0], "npz")
    points = np.load(path)["points"]
    np.savez(path, points=points)


def _box_without_3d_points(root: Path) -> None:
    def edit(doc):
        del doc["box_0"]["3d_points"]
        return doc

    _edit_json(root / rel("label3D", IDS[1], "json"), edit)


def _unknown_class(root: Path) -> None:
    def edit(doc):
        doc["box_1"]["class"] = "Spaceship"
        return doc

    _edit_json(root / rel("label3D", IDS[0], "json"), edit)


def _json_without_cam_tstamp(root: Path) -> None:
    def edit(doc):
        del doc["cam_tstamp"]
        return doc

    _edit_json(root / rel("camera", IDS[1], "json"), edit)


def _camera_garbage(root: Path) -> None:
    (root / rel("camera", IDS[0], "png")).write_bytes(b"this is not a png at all\n" * 200)


def _camera_wrong_size(root: Path) -> None:
    assert cv2.imwrite(str(root / rel("camera", IDS[1], "png")), np.zeros((600, 960, 3), np.uint8), PNG_FAST)


def _set_box_field(frame_id: str, box: str, key: str, value) -> Callable[[Path], None]:
    """Set ``box.key`` of the frame's label3D file to ``value``."""

    def apply(root: Path) -> None:
        def edit(doc):
            doc[box][key] = value
            return doc

        _edit_json(root / rel("label3D", frame_id, "json"), edit)

    return apply


def _npz_truncated(root: Path) -> None:
    path = root / rel("lidar", IDS[1], "npz")
    data = path.read_bytes()
    path.unlink()  # a copy of the fixture: write a new file, not into it
    path.write_bytes(data[:100])


def _npz_single_npy(root: Path) -> None:
    path = root / rel("lidar", IDS[0], "npz")
    row = np.load(path)["row"]
    path.unlink()
    with open(path, "wb") as f:  # np.save on a path would add ".npy"
        np.save(f, row)


def _npz_row_two_dimensional(root: Path) -> None:
    path = root / rel("lidar", IDS[1], "npz")
    arrays = dict(np.load(path))
    arrays["row"] = np.stack([arrays["row"], arrays["row"]], axis=1)
    path.unlink()
    np.savez(path, **arrays)


def _camera_png_missing(root: Path) -> None:
    (root / rel("camera", IDS[0], "png")).unlink()


def _cam_tstamp_beyond_int64(root: Path) -> None:
    def edit(doc):
        doc["cam_tstamp"] = 2**63
        return doc

    _edit_json(root / rel("camera", IDS[1], "json"), edit)


@dataclass(frozen=True)
class Corruption(FrameCorruption):
    """A corruption of one of the two frames, and what the error must say."""

    @property
    def good_id(self) -> str:
        return next(f for f in IDS if f != self.bad_id)


CORRUPTIONS = {
    "label_png_wrong_size": Corruption(
        _label_wrong_size, IDS[1], rel("label", IDS[1], "png"), None, ("100x50", "1920x1208")
    ),
    "npz_without_expected_keys": Corruption(
        _npz_only_points,
        IDS[0],
        rel("lidar", IDS[0], "npz"),
        None,
        ("['points']", "expected", "{row, col, depth}", "pcloud_attr.depth"),
    ),
    "label3d_box_without_3d_points": Corruption(
        _box_without_3d_points, IDS[1], rel("label3D", IDS[1], "json"), None, ("box_0", "lacks 3d_points", "2d_bbox")
    ),
    "label3d_unknown_class": Corruption(
        _unknown_class,
        IDS[0],
        rel("label3D", IDS[0], "json"),
        None,
        ("box_1", "unknown class", "'Spaceship'", *KNOWN_DET, "--taxonomy"),
    ),
    "frame_json_without_cam_tstamp": Corruption(
        _json_without_cam_tstamp, IDS[1], rel("camera", IDS[1], "json"), None, ("cam_tstamp",)
    ),
    "camera_png_does_not_decode": Corruption(
        _camera_garbage, IDS[0], rel("camera", IDS[0], "png"), None, ("does not decode",)
    ),
    "camera_png_wrong_size": Corruption(
        _camera_wrong_size,
        IDS[1],
        rel("camera", IDS[1], "png"),
        None,
        ("960x600", "cams_lidars.json", "1920x1208", "front_center"),
    ),
    # ---- label3D fields of the wrong shape: the file, the JSON path, what was expected and found
    "label3d_2d_bbox_a_string": Corruption(
        _set_box_field(IDS[0], "box_0", "2d_bbox", "abcd"),
        IDS[0],
        rel("label3D", IDS[0], "json"),
        None,
        ("box_0.2d_bbox: expected a list of 4 finite numbers", 'found the string "abcd"'),
    ),
    "label3d_2d_bbox_two_numbers": Corruption(
        _set_box_field(IDS[1], "box_2", "2d_bbox", [1, 2]),
        IDS[1],
        rel("label3D", IDS[1], "json"),
        None,
        ("box_2.2d_bbox: expected a list of 4 finite numbers", "found a list of 2 items [1, 2]"),
    ),
    "label3d_center_a_string": Corruption(
        _set_box_field(IDS[0], "box_1", "center", "12.5"),
        IDS[0],
        rel("label3D", IDS[0], "json"),
        None,
        ("box_1.center: expected a list of 3 finite numbers", 'found the string "12.5"'),
    ),
    "label3d_size_with_nan": Corruption(
        _set_box_field(IDS[1], "box_3", "size", [4.0, float("nan"), 1.5]),
        IDS[1],
        rel("label3D", IDS[1], "json"),
        None,
        ("box_3.size: expected a list of 3 finite numbers", "[4.0, NaN, 1.5]"),
    ),
    "label3d_rot_angle_a_list": Corruption(
        _set_box_field(IDS[0], "box_2", "rot_angle", [0.1]),
        IDS[0],
        rel("label3D", IDS[0], "json"),
        None,
        ("box_2.rot_angle: expected a finite number", "found a list of 1 item [0.1]"),
    ),
    "label3d_3d_points_seven_corners": Corruption(
        _set_box_field(IDS[1], "box_0", "3d_points", [[0.0, 0.0, 0.0]] * 7),
        IDS[1],
        rel("label3D", IDS[1], "json"),
        None,
        ("box_0.3d_points: expected 8 rows of 3 finite numbers",),
    ),
    "label3d_axis_zero": Corruption(
        _set_box_field(IDS[0], "box_3", "axis", [0, 0, 0]),
        IDS[0],
        rel("label3D", IDS[0], "json"),
        None,
        ("box_3.axis [0.0, 0.0, 0.0]", "rotation axis, not zero"),
    ),
    "label3d_2d_bbox_reversed": Corruption(
        _set_box_field(IDS[1], "box_1", "2d_bbox", [500.0, 300.0, 400.0, 350.0]),
        IDS[1],
        rel("label3D", IDS[1], "json"),
        None,
        ("box_1.2d_bbox [500.0, 300.0, 400.0, 350.0]", "x1 <= x2"),
    ),
    # ---- containers
    "npz_truncated_to_100_bytes": Corruption(
        _npz_truncated, IDS[1], rel("lidar", IDS[1], "npz"), None, ("not a readable npz file", "BadZipFile")
    ),
    "npz_a_single_npy_array": Corruption(
        _npz_single_npy, IDS[0], rel("lidar", IDS[0], "npz"), None, ("single .npy array", "npz archive")
    ),
    "npz_row_two_dimensional": Corruption(
        _npz_row_two_dimensional,
        IDS[1],
        rel("lidar", IDS[1], "npz"),
        None,
        ("array 'row' is float64 (8196, 2)", "expected 1-D real numbers", "'depth' ((8196,))"),
    ),
    # ---- no silent loss: a frame with lidar and boxes but no image is an error naming the image
    "camera_png_missing_beside_lidar_and_label3d": Corruption(
        _camera_png_missing,
        IDS[0],
        rel("camera", IDS[0], "png"),
        None,
        ("camera image missing, but the frame has lidar and label3D files", "--on-error skip"),
    ),
    "frame_json_cam_tstamp_beyond_int64": Corruption(
        _cam_tstamp_beyond_int64,
        IDS[1],
        rel("camera", IDS[1], "json"),
        None,
        ("cam_tstamp: expected an integer >= 0 <= 9223372036854775807", "9223372036854775808"),
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_frame_fails_with_one_error_line_naming_the_file(case, cli, a2d2_root, tmp_path):
    result, out = ingest_corrupted(cli, "a2d2", case.apply, a2d2_root, tmp_path)
    assert_fails_cleanly(result, out, "a2d2", file_and_line(a2d2_root / case.rel, case.line) + ": ", *case.says)


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_frame_is_rejected_and_the_other_converted_under_on_error_skip(case, cli, a2d2_root, tmp_path):
    result, out = ingest_corrupted(cli, "a2d2", case.apply, a2d2_root, tmp_path, "--on-error", "skip")
    assert_skipped_cleanly(
        result,
        out,
        "a2d2",
        split="train",
        frame_id=f"{PREFIX}_frontcenter_{case.bad_id}",
        path_suffix=case.rel,
        line=case.line,
        expected_keys=[frame_key(case.good_id)],
    )
    assert read_report(out, "a2d2")["splits"]["train"]["rejects"] == 1


# ---- the scene's bus file ---------------------------------------------------------------------


def _bus_not_json(root: Path) -> None:
    # valid up to line 3, where a bare word stands for a value
    (root / BUS_REL).write_text('{\n "steering_angle_calculated": {\n  "unit": Unit_DegreOfArc,\n  "values": []}\n}\n')


def _bus_out_of_order(root: Path) -> None:
    def edit(doc):
        values = doc["steering_angle_calculated"]["values"]
        values[5], values[6] = values[6], values[5]
        return doc

    _edit_json(root / BUS_REL, edit)


BUS_CORRUPTIONS = {
    "bus_file_not_json": (_bus_not_json, 3, ("not valid JSON", "line 3")),
    "bus_timestamps_out_of_order": (
        _bus_out_of_order,
        None,
        ("'steering_angle_calculated'", "out of order at sample 6", "expected strictly increasing timestamps"),
    ),
}


@pytest.mark.parametrize("corrupt, line, says", BUS_CORRUPTIONS.values(), ids=BUS_CORRUPTIONS.keys())
def test_bad_bus_file_fails_with_one_error_line_naming_it(corrupt, line, says, cli, a2d2_root, tmp_path):
    result, out = ingest_corrupted(cli, "a2d2", corrupt, a2d2_root, tmp_path)
    assert_fails_cleanly(result, out, "a2d2", file_and_line(a2d2_root / BUS_REL, line) + ": ", *says)


@pytest.mark.parametrize("corrupt, line, says", BUS_CORRUPTIONS.values(), ids=BUS_CORRUPTIONS.keys())
def test_bad_bus_file_rejects_every_frame_of_its_scene_under_on_error_skip(
    corrupt, line, says, cli, a2d2_root, tmp_path
):
    """The bus file belongs to the scene: each frame of the scene is rejected, naming it."""
    result, out = ingest_corrupted(cli, "a2d2", corrupt, a2d2_root, tmp_path, "--on-error", "skip")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    rejects = read_rejects(out, "a2d2")
    assert [r["id"] for r in rejects] == [f"{PREFIX}_frontcenter_{i}" for i in IDS]
    for reject in rejects:
        assert Path(reject["path"]).as_posix().endswith(BUS_REL)
        assert reject["line"] == line
    assert read_manifest(out, "a2d2") == []
    assert read_report(out, "a2d2")["splits"]["train"]["samples"] == 0
    assert list(out.rglob("*.part")) == []


# ---- layout errors ----------------------------------------------------------------------------


def test_missing_cams_lidars_json_is_a_layout_error_naming_it(cli, a2d2_root, tmp_path):
    (a2d2_root / "cams_lidars.json").unlink()
    out = tmp_path / "shards"
    result = ingest_cli(cli, "a2d2", a2d2_root, out)
    assert_fails_cleanly(result, out, "a2d2", f"{a2d2_root / 'cams_lidars.json'}: missing", "expected")


def test_unknown_camera_names_cams_lidars_json_and_lists_the_cameras(cli, a2d2_root, tmp_path):
    out = tmp_path / "shards"
    result = ingest_cli(cli, "a2d2", a2d2_root, out, "--cameras", "nosuchcam")
    assert_fails_cleanly(result, out, "a2d2", f"{a2d2_root / 'cams_lidars.json'}: ", "'nosuchcam'", *CAMERAS)


def _set_camera_field(key: str, value) -> Callable[[dict], dict]:
    def edit(doc):
        doc["cameras"]["front_center"][key] = value
        return doc

    return edit


CONFIG_CORRUPTIONS = {
    "cam_matrix_two_rows": (
        _set_camera_field("CamMatrix", [[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]]),
        ("cameras.front_center.CamMatrix: expected 3 rows of 3 finite numbers", "found a list of 2 items"),
    ),
    "resolution_strings": (
        _set_camera_field("Resolution", ["1920", "1208"]),
        ("cameras.front_center.Resolution: expected a list of 2, each an integer >= 1", '["1920", "1208"]'),
    ),
    "distortion_three_coefficients": (
        _set_camera_field("Distortion", [[0.1, 0.2, 0.3]]),
        ("cameras.front_center.Distortion: expected a list of 4 or 5 or 8 or 12 or 14 finite numbers",),
    ),
    "cam_matrix_original_missing": (
        lambda doc: doc["cameras"]["front_center"].pop("CamMatrixOriginal") and doc,
        ("cameras.front_center.CamMatrixOriginal: missing (expected 3 rows of 3 finite numbers",),
    ),
    "cameras_a_list": (
        lambda doc: {**doc, "cameras": list(doc["cameras"])},
        ("cameras: expected an object, found a list of 6 items",),
    ),
}


@pytest.mark.parametrize("edit, says", CONFIG_CORRUPTIONS.values(), ids=CONFIG_CORRUPTIONS.keys())
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_bad_camera_config_fails_before_any_frame_naming_the_field(edit, says, on_error, cli, a2d2_root, tmp_path):
    """cams_lidars.json serves every frame: a bad field stops the run, also under --on-error skip."""
    _edit_json(a2d2_root / "cams_lidars.json", edit)
    out = tmp_path / "shards"
    result = ingest_cli(cli, "a2d2", a2d2_root, out, "--on-error", on_error)
    assert_fails_before_writing(result, out, "a2d2", f"error: {a2d2_root / 'cams_lidars.json'}: ", *says)


@pytest.mark.parametrize(
    "colors, says",
    [
        ({"#ff0000": "Car 1", "red": "Car 2"}, ("key 'red'", '"#rrggbb"')),
        ({"#ff0000": ["Car 1"]}, ("#ff0000: expected a string, found a list of 1 item",)),
        (["#ff0000"], ("top level: expected an object",)),
    ],
    ids=["key_not_a_colour", "name_not_a_string", "not_an_object"],
)
def test_bad_class_list_fails_before_any_frame_naming_the_entry(colors, says, cli, a2d2_root, tmp_path):
    _add_class_list(a2d2_root)
    path = a2d2_root / "camera_lidar_semantic" / "class_list.json"
    path.write_text(json.dumps(colors))
    label = a2d2_root / rel("label", IDS[0], "png")
    label.parent.mkdir(parents=True)
    shutil.copy(fixture_path(*SEM_LABEL), label)
    out = tmp_path / "shards"
    assert_fails_before_writing(ingest_cli(cli, "a2d2", a2d2_root, out), out, "a2d2", f"error: {path}: ", *says)


def test_file_named_like_a_frame_but_not_one_is_an_error_not_nothing(cli, a2d2_root, tmp_path):
    """A file with a broken name (here as a second download names it) is reported, never silently left out."""
    npz = a2d2_root / rel("lidar", IDS[0], "npz")
    bad = npz.with_name(f"{npz.stem} (1){npz.suffix}")
    npz.rename(bad)
    out = tmp_path / "shards"
    line = ingest_cli(cli, "a2d2", a2d2_root, out).one_error_line()
    assert f"error: {bad}: not a frame file name" in line and "_lidar_<camera token>_<ID>.npz" in line

    result = ingest_cli(cli, "a2d2", a2d2_root, tmp_path / "skipped", "--on-error", "skip")
    assert result.code == 0, result.err
    [reject] = read_rejects(tmp_path / "skipped", "a2d2")
    assert reject["split"] == "train" and "not a frame file name" in reject["error"]
    # both frames still convert (the first without depth: its npz is no longer its own)
    rows = read_manifest(tmp_path / "skipped", "a2d2")
    assert [(r["key"], r["has_depth"]) for r in rows] == [(frame_key(IDS[0]), False), (frame_key(IDS[1]), True)]


def test_label_png_without_class_list_json_names_the_missing_class_list(cli, a2d2_root, tmp_path):
    """A label PNG can only be read with class_list.json; without one: a clear error, no traceback."""
    label = a2d2_root / rel("label", IDS[0], "png")
    label.parent.mkdir(parents=True)
    shutil.copy(fixture_path(*SEM_LABEL), label)
    out = tmp_path / "shards"
    assert_fails_cleanly(ingest_cli(cli, "a2d2", a2d2_root, out), out, "a2d2", "class_list.json")


# ---- not errors: counted in ingest.json -------------------------------------------------------


def test_label_colour_not_in_class_list_is_ignored_and_counted(cli, a2d2_root, tmp_path):
    _add_class_list(a2d2_root)
    label_path = a2d2_root / rel("label", IDS[0], "png")
    label_path.parent.mkdir(parents=True)
    label = cv2.imread(str(fixture_path(*SEM_LABEL)), cv2.IMREAD_COLOR)  # BGR
    r0, c0 = 1000, 700  # "RD normal street" (road) in the real label
    patch = np.zeros(label.shape[:2], np.uint8)
    patch[r0 : r0 + 10, c0 : c0 + 10] = 1
    label[patch == 1] = (0x56, 0x34, 0x12)  # #123456 in BGR order
    assert cv2.imwrite(str(label_path), label, PNG_FAST)

    out = tmp_path / "shards"
    result = ingest_cli(cli, "a2d2", a2d2_root, out)
    assert result.code == 0, result.err
    assert [r["key"] for r in read_manifest(out, "a2d2")] == [frame_key(i) for i in IDS]
    assert read_rejects(out, "a2d2") == []
    # counted on the label as delivered (before undistortion): exactly the 10x10 patch
    assert read_report(out, "a2d2")["splits"]["train"]["notes"]["seg_unknown_color_px"] == 100

    seg = ShardSet.open(out).read_sample(frame_key(IDS[0])).seg
    cam = json.loads((a2d2_root / "cams_lidars.json").read_text())["cameras"]["front_center"]
    _, label_map = ag.undistort_maps(cam)
    moved = cv2.remap(patch, label_map, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT) == 1
    assert moved.sum() > 50
    assert (seg[moved] == IGNORE_INDEX).all()
    # the same place without the patch is road: the 255 comes from the unknown colour
    around = cv2.dilate(moved.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~moved
    assert np.mean(seg[around] == SEG_CLASSES.index("road")) > 0.9


def test_frame_beyond_the_bus_gap_converts_without_steer_and_is_counted(cli, a2d2_root, tmp_path):
    out = tmp_path / "shards"
    result = ingest_cli(cli, "a2d2", a2d2_root, out, "--max-bus-gap-ms", 1)
    assert result.code == 0, result.err
    rows = {r["id"].rsplit("_", 1)[1]: r for r in read_manifest(out, "a2d2")}
    # 000015196 is 6.667 ms from its bus samples, 000015197 falls on one
    assert rows[IDS[0]]["has_steer"] is False and rows[IDS[0]]["has_det2d"] is True
    assert rows[IDS[1]]["has_steer"] is True
    assert read_rejects(out, "a2d2") == []
    assert read_report(out, "a2d2")["splits"]["train"]["notes"] == {"steer_bus_gap": 1}


# ---- bad options ------------------------------------------------------------------------------

BAD_OPTIONS = {
    "val_fraction_above_one": (["--val-fraction", "1.5"], ("--val-fraction", "1.5", "0.0<=x<1.0")),
    "parts_not_a_part": (
        ["--parts", "nosuchpart"],
        ("--parts", "nosuchpart", "camera_lidar_semantic", "camera_lidar_semantic_bboxes", "camera_lidar"),
    ),
    "val_scenes_not_a_scene": (
        ["--val-scenes", SCENE, "--val-scenes", "20990101_000000"],
        ("--val-scenes 20990101_000000: no such scene", f"(scenes: {SCENE})"),
    ),
}


@pytest.mark.parametrize("args, says", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_fails_with_one_error_line(args, says, cli, a2d2_root, tmp_path):
    out = tmp_path / "shards"
    assert_fails_before_writing(ingest_cli(cli, "a2d2", a2d2_root, out, *args), out, "a2d2", *says)
