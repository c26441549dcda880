"""Bad Cityscapes raw input: one clear ``error:`` line naming the file (and line), a non-zero
exit, no traceback and nothing half-written; under ``--on-error skip`` the bad frame is recorded
in ``rejects.jsonl`` and the four other frames of the synthetic dataset are converted."""

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
    assert_error_line,
    assert_fails_before_writing,
    assert_fails_cleanly,
    assert_skipped_cleanly,
    file_and_line,
    ingest_cli,
    ingest_corrupted,
    read_report,
)

FRAMES = {  # id -> split of the synthetic dataset
    "aachen_000000_000019": "train",
    "aachen_000001_000019": "train",
    "bochum_000000_000313": "train",
    "frankfurt_000000_000294": "val",
    "frankfurt_000001_000019": "val",
}
KNOWN_BOX_LABELS = ("car", "truck", "bus", "train", "motorcycle", "bicycle", "caravan", "trailer")


@pytest.fixture
def raw(tmp_path, synth_root) -> Path:
    """A writable copy of the synthetic dataset (5 frames in train and val)."""
    dst = tmp_path / "cityscapes_raw"
    shutil.copytree(synth_root("cityscapes"), dst)
    return dst


def rel(package: str, frame_id: str, suffix: str) -> str:
    return f"{package}/{FRAMES[frame_id]}/{frame_id.split('_')[0]}/{frame_id}{suffix}"


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=4))


# ---- per-frame corruptions -------------------------------------------------------------------------

DISPARITY = rel("disparity", "aachen_000000_000019", "_disparity.png")
CAMERA = rel("camera", "frankfurt_000000_000294", "_camera.json")
BOXES_A1 = rel("gtBbox3d", "aachen_000001_000019", "_gtBbox3d.json")
BOXES_F0 = rel("gtBbox3d", "frankfurt_000000_000294", "_gtBbox3d.json")
BOXES_B0 = rel("gtBbox3d", "bochum_000000_000313", "_gtBbox3d.json")
LABEL_B0 = rel("gtFine", "bochum_000000_000313", "_gtFine_labelIds.png")
LABEL_A1 = rel("gtFine", "aachen_000001_000019", "_gtFine_labelIds.png")
IMAGE_F1 = rel("leftImg8bit", "frankfurt_000001_000019", "_leftImg8bit.png")


def _disparity_8bit(root: Path) -> None:
    values = cv2.imread(str(root / DISPARITY), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(root / DISPARITY), (values >> 4).astype(np.uint8))


def _camera_missing(root: Path) -> None:
    (root / CAMERA).unlink()


def _sensor_missing(root: Path) -> None:
    _edit_json(root / BOXES_A1, lambda doc: doc.pop("sensor"))


def _box_without_3d(root: Path) -> None:
    _edit_json(root / BOXES_F0, lambda doc: doc["objects"][1].pop("3d"))


def _label_wrong_size(root: Path) -> None:
    assert cv2.imwrite(str(root / LABEL_B0), np.full((50, 100), 7, np.uint8))


def _label_unknown_id(root: Path) -> None:
    label = cv2.imread(str(root / LABEL_A1), cv2.IMREAD_UNCHANGED)
    label[3, 5:17] = 34
    assert cv2.imwrite(str(root / LABEL_A1), label)


def _boxes_not_json(root: Path) -> None:
    # valid up to line 4, where a comma is missing
    (root / BOXES_B0).write_text('{\n    "imgWidth": 256,\n    "imgHeight": 128\n    "sensor": {}\n}\n')


def _box_unknown_label(root: Path) -> None:
    _edit_json(root / BOXES_F0, lambda doc: doc["objects"][0].update(label="spaceship"))


def _sensor_intrinsics_differ(root: Path) -> None:
    _edit_json(root / BOXES_F0, lambda doc: doc["sensor"].update(fx=doc["sensor"]["fx"] + 5.0))


def _image_missing(root: Path) -> None:
    (root / IMAGE_F1).unlink()


def _boxes_for_another_image_size(root: Path) -> None:
    _edit_json(root / BOXES_A1, lambda doc: doc.update(imgWidth=2048, imgHeight=1024))


def _modal_negative_width(root: Path) -> None:
    _edit_json(root / BOXES_F0, lambda doc: doc["objects"][0]["2d"].update(modal=[10, 20, -5, 8]))


def _center_a_string(root: Path) -> None:
    _edit_json(root / BOXES_A1, lambda doc: doc["objects"][0]["3d"].update(center="34.4, -3.3, 0.8"))


def _sensor_t_short_row(root: Path) -> None:
    _edit_json(root / BOXES_B0, lambda doc: doc["sensor"]["sensor_T_ISO_8855"][1].pop())


def _camera_yaw_a_string(root: Path) -> None:
    _edit_json(root / CAMERA, lambda doc: doc["extrinsic"].update(yaw="0.0193"))


def _boxes_a_folder(root: Path) -> None:
    (root / BOXES_A1).unlink()
    (root / BOXES_A1).mkdir()


def _label_zero_bytes(root: Path) -> None:
    (root / LABEL_B0).write_bytes(b"")


@dataclass(frozen=True)
class Corruption(FrameCorruption):
    """A corruption of one synthetic frame, and what the error must say."""


CORRUPTIONS = {
    "disparity_png_8bit": Corruption(
        _disparity_8bit,
        "aachen_000000_000019",
        DISPARITY,
        None,
        ("disparity PNG is 8-bit", "expected 16-bit single-channel"),
    ),
    "camera_json_missing_for_disparity": Corruption(
        _camera_missing, "frankfurt_000000_000294", CAMERA, None, ("camera json", "missing", "disparity")
    ),
    "gtbbox3d_without_sensor": Corruption(
        _sensor_missing, "aachen_000001_000019", BOXES_A1, None, ("no 'sensor' block", "sensor_T_ISO_8855")
    ),
    "gtbbox3d_box_without_3d": Corruption(
        _box_without_3d,
        "frankfurt_000000_000294",
        BOXES_F0,
        None,
        ("objects[1]", "lacks '3d'", "3d.center", "3d.rotation"),
    ),
    "labelids_wrong_size": Corruption(
        _label_wrong_size, "bochum_000000_000313", LABEL_B0, None, ("100x50", "expected 256x128", "leftImg8bit")
    ),
    "labelids_unknown_id": Corruption(
        _label_unknown_id,
        "aachen_000001_000019",
        LABEL_A1,
        None,
        ("label id 34", "12 px", "row 3, col 5", "expected 0..33"),
    ),
    "gtbbox3d_not_json": Corruption(_boxes_not_json, "bochum_000000_000313", BOXES_B0, 4, ("not valid JSON", "line 4")),
    "gtbbox3d_unknown_label": Corruption(
        _box_unknown_label,
        "frankfurt_000000_000294",
        BOXES_F0,
        None,
        ("objects[0]", "unknown label 'spaceship'", *KNOWN_BOX_LABELS),
    ),
    "gtbbox3d_intrinsics_differ_from_camera_json": Corruption(
        _sensor_intrinsics_differ,
        "frankfurt_000000_000294",
        BOXES_F0,
        None,
        ("sensor intrinsics", "differ from the camera json", "frankfurt_000000_000294_camera.json"),
    ),
    "gtbbox3d_for_another_image_size": Corruption(
        _boxes_for_another_image_size, "aachen_000001_000019", BOXES_A1, None, ("2048x1024", "256x128")
    ),
    "image_missing_for_labels": Corruption(
        _image_missing, "frankfurt_000001_000019", IMAGE_F1, None, ("leftImg8bit image missing",)
    ),
    "gtbbox3d_modal_with_negative_width": Corruption(
        _modal_negative_width,
        "frankfurt_000000_000294",
        BOXES_F0,
        None,
        ("objects[0].2d.modal [10.0, 20.0, -5.0, 8.0]", "w >= 0 and h >= 0"),
    ),
    "gtbbox3d_center_a_string": Corruption(
        _center_a_string,
        "aachen_000001_000019",
        BOXES_A1,
        None,
        ("objects[0].3d.center: expected a list of 3 finite numbers", 'found the string "34.4, -3.3, 0.8"'),
    ),
    "gtbbox3d_sensor_t_row_of_three": Corruption(
        _sensor_t_short_row,
        "bochum_000000_000313",
        BOXES_B0,
        None,
        ("sensor.sensor_T_ISO_8855: expected 3 rows of 4 finite numbers",),
    ),
    "camera_json_yaw_a_string": Corruption(
        _camera_yaw_a_string,
        "frankfurt_000000_000294",
        CAMERA,
        None,
        ("extrinsic.yaw: expected a finite number", 'found the string "0.0193"'),
    ),
    "gtbbox3d_a_folder": Corruption(_boxes_a_folder, "aachen_000001_000019", BOXES_A1, None, ("gtBbox3d json",)),
    "labelids_zero_bytes": Corruption(
        _label_zero_bytes, "bochum_000000_000313", LABEL_B0, None, ("labelIds PNG does not decode",)
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_frame_fails_with_one_error_line_naming_the_file(case, cli, raw, tmp_path):
    result, out = ingest_corrupted(cli, "cityscapes", case.apply, raw, tmp_path)
    assert_fails_cleanly(
        result, out, "cityscapes", "error: " + file_and_line(raw / case.rel, case.line) + ": ", *case.says
    )


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_frame_is_rejected_and_the_others_converted_under_on_error_skip(case, cli, raw, tmp_path):
    result, out = ingest_corrupted(cli, "cityscapes", case.apply, raw, tmp_path, "--on-error", "skip")
    assert_skipped_cleanly(
        result,
        out,
        "cityscapes",
        split=FRAMES[case.bad_id],
        frame_id=case.bad_id,
        path_suffix=case.rel,
        line=case.line,
        error_says=case.says,
        expected_keys=[f"cityscapes_{s}_{i}" for i, s in FRAMES.items() if i != case.bad_id],
    )
    assert read_report(out, "cityscapes")["splits"][FRAMES[case.bad_id]]["rejects"] == 1


# ---- layout errors (whole root; not skippable) -------------------------------------------------------


def test_empty_root_names_it_and_the_expected_tree(cli, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    out = tmp_path / "shards"
    for extra in ((), ("--on-error", "skip")):
        assert_error_line(
            ingest_cli(cli, "cityscapes", root, out, *extra),
            f"error: {root}: no leftImg8bit folder",
            "leftImg8bit/{train,val,test}/<city>/",
        )
    assert not (out / "cityscapes").exists()


def test_root_one_level_too_high_suggests_the_dataset_folder(cli, raw, tmp_path):
    parent = raw.parent
    line = ingest_cli(cli, "cityscapes", parent, tmp_path / "shards").one_error_line()
    assert f"{parent}: no leftImg8bit folder" in line and f"did you mean {raw}?" in line


def test_leftimg8bit_with_only_demovideo_says_it_is_not_converted(cli, tmp_path):
    root = tmp_path / "raw"
    (root / "leftImg8bit" / "demoVideo" / "stuttgart_00").mkdir(parents=True)
    line = ingest_cli(cli, "cityscapes", root, tmp_path / "shards").one_error_line()
    assert f"{root / 'leftImg8bit'}: no split folder to convert" in line
    assert "found: demoVideo" in line and "never converted" in line


def test_disparity_split_without_camera_split_is_a_layout_error(cli, raw, tmp_path):
    shutil.rmtree(raw / "camera" / "val")
    out = tmp_path / "shards"
    result = ingest_cli(cli, "cityscapes", raw, out, "--on-error", "skip")
    assert_fails_before_writing(
        result, out, "cityscapes", f"error: {raw / 'camera' / 'val'}: missing folder", "disparity/val"
    )
