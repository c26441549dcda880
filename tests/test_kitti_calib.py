"""KITTI calibration parsing and frame changes, on the real calibration files."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_data.errors import InputError
from mtl_data.schema import geometry as geo
from mtl_data.schema.kitti_calib import (
    kitti_label_to_box3d,
    parse_kitti_calib,
    split_projection,
    velo_to_optical,
    velo_to_rect,
)


@pytest.fixture
def calib_text(kitti_real) -> str:
    return (kitti_real / "training" / "calib" / "000000.txt").read_text()


def test_real_calib_parses_with_its_trailing_blank_line(calib_text):
    assert calib_text.endswith("\n\n")
    calib = parse_kitti_calib(calib_text)
    assert calib.P2[0, 0] == 7.070493e02 and calib.P2[0, 3] == 4.575831e01
    assert calib.R0_rect[0, 1] == 1.009263e-02
    assert calib.Tr_velo_to_cam[1, 3] == -6.127237e-02
    assert sorted(calib.P) == ["P0", "P1", "P2", "P3"]


def test_colon_less_tracking_variant_parses_to_the_same_matrices(calib_text):
    tracking = (
        calib_text.replace("R0_rect:", "R_rect")
        .replace("Tr_velo_to_cam:", "Tr_velo_cam")
        .replace("Tr_imu_to_velo:", "Tr_imu_velo")
        .replace("P2:", "P2")
    )
    a, b = parse_kitti_calib(calib_text), parse_kitti_calib(tracking)
    np.testing.assert_array_equal(a.P2, b.P2)
    np.testing.assert_array_equal(a.R0_rect, b.R0_rect)
    np.testing.assert_array_equal(a.Tr_velo_to_cam, b.Tr_velo_to_cam)


def test_tab_after_the_key_is_accepted(calib_text):
    calib = parse_kitti_calib(calib_text.replace("P2: ", "P2:\t"))
    assert calib.P2[0, 0] == 7.070493e02


def test_missing_p2_names_the_file_and_the_key(calib_text):
    text = "\n".join(ln for ln in calib_text.splitlines() if not ln.startswith("P2"))
    with pytest.raises(InputError, match=r"calib/000000.txt: missing P2"):
        parse_kitti_calib(text, "calib/000000.txt")


def test_non_numeric_value_names_the_line(calib_text):
    text = calib_text.replace("R0_rect: 9.999128000000e-01", "R0_rect: nine")
    with pytest.raises(InputError, match=r"c.txt:5: R0_rect: value 1 is not a number: 'nine'"):
        parse_kitti_calib(text, "c.txt")


def test_wrong_number_of_values_names_the_line(calib_text):
    lines = calib_text.splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])  # P2 with 11 numbers
    with pytest.raises(InputError, match=r"c.txt:3: P2: expected 12 numbers, found 11"):
        parse_kitti_calib("\n".join(lines), "c.txt")


def test_split_projection_recovers_k_and_camera_offset(calib_text):
    calib = parse_kitti_calib(calib_text)
    K, t = split_projection(calib.P2)
    np.testing.assert_allclose(K @ t, calib.P2[:, 3])
    assert 0.05 < t[0] < 0.07  # camera 2 sits ~6 cm from camera 0 (KITTI setup)
    np.testing.assert_array_equal(K, calib.P2[:, :3])


def test_velo_to_optical_projects_like_the_devkit_recipe(calib_text):
    """K @ (velo_to_optical @ X) must equal P2 @ R0_rect @ Tr_velo_to_cam @ X (raw-formats 2.5)."""
    calib = parse_kitti_calib(calib_text)
    pts = np.array([[10.0, 1.0, -1.0], [30.0, -4.0, 0.5], [5.0, 0.0, -1.6]])
    r0 = np.eye(4)
    r0[:3, :3] = calib.R0_rect
    tr = np.vstack([calib.Tr_velo_to_cam, [0, 0, 0, 1]])
    uvw = (calib.P2 @ r0 @ tr @ np.c_[pts, np.ones(3)].T).T
    K, _ = split_projection(calib.P2)
    uv, z = geo.project(geo.transform_points(velo_to_optical(calib), pts), K)
    np.testing.assert_allclose(uv, uvw[:, :2] / uvw[:, 2:], rtol=1e-10)
    np.testing.assert_allclose(z, uvw[:, 2], rtol=1e-10)
    np.testing.assert_allclose(velo_to_rect(calib), r0 @ tr)


def test_label_location_bottom_centre_becomes_geometric_centre_in_optical_frame():
    t = np.array([0.06, -0.0003, 0.0027])
    box = kitti_label_to_box3d([[1.84, 1.47, 8.41]], [[1.89, 0.48, 1.20]], [0.01], t)[0]
    np.testing.assert_allclose(box, [1.84 + 0.06, 1.47 - 0.0003 - 1.89 / 2, 8.41 + 0.0027, 1.20, 0.48, 1.89, 0.01])
