"""The synthetic KITTI writer: native layout, real file formats, and geometric consistency
between labels, calibration, images and point clouds."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl_data.schema.geometry import box3d_corners, project, transform_points
from mtl_data.schema.kitti_calib import (
    kitti_label_to_box3d,
    parse_kitti_calib,
    split_projection,
    velo_to_optical,
)
from mtl_data.synth import SYNTHESIZERS
from mtl_data.synth.kitti import PREV_FRAMES, synth_kitti

N_TRAIN, N_TEST = 6, 2
CALIB_KEYS = ["P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"]
KITTI_TYPES = {"Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare"}
REAL_CALIB = Path(__file__).resolve().parents[2] / "shared/fixtures/kitti/object/training/calib/000000.txt"
CALIB_NUMBER = re.compile(r"^-?\d\.\d{12}e[+-]\d{2}$")  # the real files' %.12e style
TWO_DECIMALS = re.compile(r"^-?\d+\.\d{2}$")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset written once for the read-only tests below (writing takes about a second)."""
    out = tmp_path_factory.mktemp("kitti")
    synth_kitti(out, seed=0)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _frames(root: Path, split: str = "training") -> list[str]:
    return sorted(p.stem for p in (root / split / "calib").iterdir())


def _labels(root: Path, frame: str) -> list[list[str]]:
    return [line.split() for line in (root / "training/label_2" / f"{frame}.txt").read_text().splitlines()]


def _objects(fields: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4) 2D boxes, (N, 3) locations, (N, 3) hwl, (N,) rotation_y of the non-DontCare lines."""
    rows = np.array([[float(v) for v in f[1:]] for f in fields if f[0] != "DontCare"]).reshape(-1, 14)
    return rows[:, 3:7], rows[:, 10:13], rows[:, 7:10], rows[:, 13]


def _calib(root: Path, split: str, frame: str):
    return parse_kitti_calib((root / split / "calib" / f"{frame}.txt").read_text())


def test_synth_kitti_is_registered_under_kitti():
    assert SYNTHESIZERS["kitti"] is synth_kitti


def test_writes_exactly_the_kitti_object_layout(root: Path):
    expected = set()
    for split, count, folders in [
        ("training", N_TRAIN, ["image_2", "label_2", "calib", "velodyne"]),
        ("testing", N_TEST, ["image_2", "calib", "velodyne"]),
    ]:
        ext = {"image_2": "png", "label_2": "txt", "calib": "txt", "velodyne": "bin"}
        expected |= {f"{split}/{d}/{i:06d}.{ext[d]}" for d in folders for i in range(count)}
    # the previous frames of the frames PREV_FRAMES names (training first, then testing)
    frames = [("training", i) for i in range(N_TRAIN)] + [("testing", i) for i in range(N_TEST)]
    expected |= {f"{split}/prev_2/{i:06d}_{k:02d}.png" for (split, i), ks in zip(frames, PREV_FRAMES) for k in ks}
    assert any(PREV_FRAMES) and not all(PREV_FRAMES)  # some frames have them, some do not
    assert set(_files(root)) == expected


def test_same_seed_gives_byte_identical_files(tmp_path: Path):
    synth_kitti(tmp_path / "a", seed=3)
    synth_kitti(tmp_path / "b", seed=3)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_different_seed_gives_different_images(tmp_path: Path):
    synth_kitti(tmp_path / "a", seed=0)
    synth_kitti(tmp_path / "b", seed=1)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    images = [k for k in a if k.endswith(".png")]
    assert all(a[k] != b[k] for k in images)


def test_images_are_8bit_rgb_png_and_sizes_vary_across_frames(root: Path):
    sizes = set()
    for png in sorted(root.rglob("*.png")):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert (data[24], data[25]) == (8, 2)  # IHDR bit depth 8, colour type 2 = RGB
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        sizes.add(image.shape[:2])
    assert len(sizes) >= 3


def test_calib_files_have_seven_keys_and_end_with_an_empty_line(root: Path):
    for split in ("training", "testing"):
        for frame in _frames(root, split):
            text = (root / split / "calib" / f"{frame}.txt").read_text()
            assert text.endswith("\n\n") and not text.endswith("\n\n\n")
            assert [line.split(":")[0] for line in text.splitlines()[:-1]] == CALIB_KEYS
            calib = parse_kitti_calib(text)
            assert calib.Tr_velo_to_cam is not None and set(calib.P) == {"P0", "P1", "P2", "P3"}


def test_calib_numbers_use_the_real_files_format(root: Path):
    files = [root / "training/calib/000000.txt"] + ([REAL_CALIB] if REAL_CALIB.exists() else [])
    for path in files:
        lines = path.read_text().splitlines()[:-1]
        counts = [len(line.split()) - 1 for line in lines]
        assert counts == [12, 12, 12, 12, 9, 12, 12], path
        assert all(CALIB_NUMBER.match(v) for line in lines for v in line.split()[1:]), path


def test_principal_point_fits_each_image(root: Path):
    for split in ("training", "testing"):
        for frame in _frames(root, split):
            height, width = cv2.imread(str(root / split / "image_2" / f"{frame}.png")).shape[:2]
            K, t = split_projection(_calib(root, split, frame).P2)
            assert abs(K[0, 2] - width / 2) < 20 and abs(K[1, 2] - height / 2) < 20
            assert 690 < K[0, 0] < 730 and K[0, 0] == K[1, 1]
            assert 0.05 < t[0] < 0.07  # camera 2 sits about 6 cm left of camera 0


def test_label_lines_have_15_fields_and_each_frame_has_a_dontcare(root: Path):
    for frame in _frames(root):
        fields = _labels(root, frame)
        assert all(len(f) == 15 and f[0] in KITTI_TYPES for f in fields)
        dontcare = [f for f in fields if f[0] == "DontCare"]
        dontcare_3d = ["-1"] * 3 + ["-1000"] * 3 + ["-10"]
        assert dontcare and all(f[1:4] == ["-1", "-1", "-10"] and f[8:] == dontcare_3d for f in dontcare)
        objects = [f for f in fields if f[0] != "DontCare"]
        assert objects, f"frame {frame} has no labelled object"
        assert all(f[2] == "0" and all(TWO_DECIMALS.match(v) for v in f[1:2] + f[3:]) for f in objects)


def test_alpha_is_rotation_y_minus_the_viewing_angle(root: Path):
    for frame in _frames(root):
        objects = [f for f in _labels(root, frame) if f[0] != "DontCare"]
        _, location, _, rotation_y = _objects(objects)
        alpha = np.array([float(f[3]) for f in objects])
        expected = np.angle(np.exp(1j * (rotation_y - np.arctan2(location[:, 0], location[:, 2]))))
        assert np.allclose(np.angle(np.exp(1j * (alpha - expected))), 0.0, atol=0.011)


def test_projected_3d_boxes_reproduce_the_2d_boxes(root: Path):
    for frame in _frames(root):
        height, width = cv2.imread(str(root / "training/image_2" / f"{frame}.png")).shape[:2]
        K, t = split_projection(_calib(root, "training", frame).P2)
        fields = _labels(root, frame)
        boxes2d, location, hwl, rotation_y = _objects(fields)
        corners = box3d_corners(kitti_label_to_box3d(location, hwl, rotation_y, t))  # (N, 8, 3)
        uv, _ = project(corners.reshape(-1, 3), K)
        uv = uv.reshape(-1, 8, 2)
        extent = np.concatenate([uv.min(1), uv.max(1)], axis=1)
        clipped = np.clip(extent, 0, [width - 1, height - 1, width - 1, height - 1])
        assert np.abs(clipped - boxes2d).max() < 0.5
        # truncated is the share of the unclipped box outside the image
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        truncated = np.array([float(f[1]) for f in fields if f[0] != "DontCare"])
        assert np.allclose(truncated, 1 - area(clipped) / area(extent), atol=0.006)


def test_velodyne_is_float32_n_by_4_with_reflectance_in_0_1(root: Path):
    for path in sorted(root.rglob("*.bin")):
        assert path.stat().st_size % 16 == 0
        points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
        assert len(points) > 10_000
        assert np.isfinite(points).all()
        assert points[:, 3].min() >= 0.0 and points[:, 3].max() <= 1.0
        assert np.linalg.norm(points[:, :3], axis=1).max() <= 80.1  # nothing beyond the range


def test_lidar_points_inside_each_2d_box_lie_on_its_3d_box(root: Path):
    for frame in _frames(root):
        calib = _calib(root, "training", frame)
        K, t = split_projection(calib.P2)
        points = np.fromfile(root / "training/velodyne" / f"{frame}.bin", dtype="<f4").reshape(-1, 4)
        uv, depth = project(transform_points(velo_to_optical(calib), points[:, :3]), K)
        boxes2d, location, hwl, rotation_y = _objects(_labels(root, frame))
        corners = box3d_corners(kitti_label_to_box3d(location, hwl, rotation_y, t))
        near, far = corners[:, :, 2].min(1), corners[:, :, 2].max(1)

        def inside(box: np.ndarray, uv: np.ndarray = uv) -> np.ndarray:
            with np.errstate(invalid="ignore"):
                return (uv[:, 0] >= box[0]) & (uv[:, 0] <= box[2]) & (uv[:, 1] >= box[1]) & (uv[:, 1] <= box[3])

        checked = 0
        for i in range(len(boxes2d)):
            # Points hidden behind a nearer object's 2D box belong to that object, not this one.
            mask = inside(boxes2d[i]) & (depth > 0)
            for j in np.flatnonzero(near < near[i]):
                mask &= ~inside(boxes2d[j])
            if mask.sum() < 5:
                continue  # far away or hidden behind nearer objects
            checked += 1
            d = depth[mask]
            on_box = (d >= near[i] - 1.0) & (d <= far[i] + 1.0)
            assert near[i] - 1.0 <= np.median(d) <= far[i] + 1.0, (frame, i)
            assert on_box.mean() > 0.8, (frame, i, on_box.mean())
        assert checked >= 1, f"frame {frame}: no object had lidar points to check"
