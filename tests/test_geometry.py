"""Pure geometry against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_data.schema import geometry as geo

K = np.array([[100.0, 0.0, 50.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])


def test_yaw_rotation_turns_forward_x_into_minus_z_at_90_degrees():
    r = geo.yaw_to_rotation(np.pi / 2)
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(r @ [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], atol=1e-12)


def test_box_corners_follow_length_width_height_axes():
    box = np.array([[1.0, 2.0, 10.0, 4.0, 2.0, 1.5, 0.0]])  # l=4 along x, w=2 along z, h=1.5 along y
    c = geo.box3d_corners(box)[0]
    np.testing.assert_allclose(c[0], [3.0, 2.75, 11.0])  # +l/2, +h/2 (bottom), +w/2
    np.testing.assert_allclose(c[6], [-1.0, 1.25, 9.0])  # -l/2, -h/2 (top), -w/2
    np.testing.assert_allclose(c.mean(axis=0), [1.0, 2.0, 10.0])  # geometric centre
    assert np.all(c[:4, 1] > c[4:, 1])  # corners 0-3 are the bottom face (y points down)


def test_box_corners_rotate_about_the_centre():
    box = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]])
    c = geo.box3d_corners(box)[0]
    # local (2, 0.75, 1) rotated by yaw 90 deg -> (1, 0.75, -2)
    np.testing.assert_allclose(c[0], [1.0, 0.75, -2.0], atol=1e-12)


def test_project_hand_computed_pixel_and_drops_points_behind_camera():
    uv, z = geo.project(np.array([[1.0, 2.0, 10.0], [1.0, 1.0, -5.0], [0.0, 0.0, 0.0]]), K)
    np.testing.assert_allclose(uv[0], [60.0, 100.0])  # 100*0.1+50, 200*0.2+60
    np.testing.assert_allclose(z, [10.0, -5.0, 0.0])
    assert np.isnan(uv[1]).all() and np.isnan(uv[2]).all()


def test_rasterize_keeps_nearest_point_whatever_the_order():
    uv = np.array([[3.2, 1.1], [2.8, 0.9], [3.0, 1.0]])
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        z = np.array([10.0, 5.0, 7.5])
        d = geo.rasterize_sparse_depth(uv[order], z[order], (4, 6))
        assert d[1, 3] == 5.0
        assert np.count_nonzero(d) == 1


def test_rasterize_rounds_to_nearest_pixel_centre_and_drops_outside():
    uv = np.array([[-0.5, 0.0], [-0.51, 0.0], [5.49, 3.49], [5.5, 0.0], [0.0, 3.5], [np.nan, 1.0]])
    d = geo.rasterize_sparse_depth(uv, np.full(6, 2.0), (4, 6))
    assert d[0, 0] == 2.0 and d[3, 5] == 2.0
    assert np.count_nonzero(d) == 2


def test_rasterize_drops_points_behind_and_clips_far_points_instead_of_wrapping():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    d = geo.rasterize_sparse_depth(uv, np.array([-3.0, 300.0, 255.99]), (1, 3))
    assert d[0, 0] == 0.0
    assert d[0, 1] == pytest.approx(65535 / 256)  # clipped at the uint16 limit, not 300 mod 256
    assert d[0, 2] == pytest.approx(round(255.99 * 256) / 256)


def test_quantize_depth_is_exact_in_uint16_units():
    q = geo.quantize_depth(np.array([1.0 / 512 + 1e-9, 12.3456, 0.0, -1.0]))
    np.testing.assert_array_equal(q * 256, np.rint(q * 256))
    assert q[0] == 1.0 / 256 and q[2] == 0 and q[3] == 0
    assert abs(q[1] - 12.3456) <= 1 / 512


def test_scaled_size_keeps_aspect_and_never_upscales():
    assert geo.scaled_size((370, 1224), 612) == (185, 612)
    assert geo.scaled_size((375, 1242), 621) == (188, 621)  # 187.5 rounds to even -> 188
    assert geo.scaled_size((370, 1224), 2000) == (370, 1224)
    assert geo.scaled_size((370, 1224), None) == (370, 1224)


def test_scaled_intrinsics_project_where_scaled_pixels_land():
    rng = np.random.default_rng(0)
    pts = rng.uniform([-5, -2, 1], [5, 2, 50], size=(100, 3))
    sx, sy = 0.5, 0.25
    uv, _ = geo.project(pts, K)
    uv2, _ = geo.project(pts, geo.scale_intrinsics(K, sx, sy))
    np.testing.assert_allclose(uv2[:, 0], geo.scale_pixel_coords(uv[:, 0], sx))
    np.testing.assert_allclose(uv2[:, 1], geo.scale_pixel_coords(uv[:, 1], sy))


def test_scale_pixel_coords_maps_pixel_edges_to_pixel_edges():
    # the left edge of pixel 0 (-0.5) and the right edge of pixel 9 (9.5) of a 10-px row map to
    # the edges of a 5-px row
    np.testing.assert_allclose(geo.scale_pixel_coords([-0.5, 9.5], 0.5), [-0.5, 4.5])


def test_resize_sparse_depth_min_pools_and_never_mixes_in_zeros():
    d = np.zeros((4, 4), np.float32)
    d[0, 0], d[1, 1] = 8.0, 4.0  # block (0, 0): min is 4
    d[0, 3] = 6.0  # block (0, 1): single point, kept exactly (no averaging with zeros)
    out = geo.resize_sparse_depth(d, (2, 2))
    np.testing.assert_array_equal(out, [[4.0, 6.0], [0.0, 0.0]])


def test_resize_sparse_depth_non_integer_factor_sends_each_point_to_its_centre_pixel():
    d = np.zeros((3, 5), np.float32)
    d[2, 4] = 1.5
    d[1, 2] = 2.5
    out = geo.resize_sparse_depth(d, (2, 3))
    # (4 + 0.5) * 3/5 = 2.7 -> col 2 ; (2 + 0.5) * 2/3 = 1.67 -> row 1
    assert out[1, 2] == 1.5
    # (2 + 0.5) * 3/5 = 1.5 -> col 1 ; (1 + 0.5) * 2/3 = 1.0 -> row 1
    assert out[1, 1] == 2.5
    assert np.count_nonzero(out) == 2


def test_box_extent_of_a_box_straight_ahead_is_symmetric_about_the_principal_point():
    box = np.array([[0.0, 0.0, 10.0, 2.0, 2.0, 2.0, 0.0]])
    ext = geo.box_extent_in_image(geo.box3d_corners(box), K)[0]
    # nearest face at z = 9: u = 50 +- 100 * 1/9, v = 60 +- 200 * 1/9
    np.testing.assert_allclose(ext, [50 - 100 / 9, 60 - 200 / 9, 50 + 100 / 9, 60 + 200 / 9])


def test_box_extent_is_nan_for_a_box_through_the_camera_plane():
    box = np.array([[0.0, 0.0, 0.5, 4.0, 2.0, 2.0, 0.0]])
    assert np.isnan(geo.box_extent_in_image(geo.box3d_corners(box), K)).all()


def test_fused_projection_to_depth_equals_transform_project_rasterize():
    rng = np.random.default_rng(3)
    pts = rng.uniform([-20, -20, -3], [60, 20, 3], size=(5000, 3))
    yaw = geo.yaw_to_rotation(0.1)
    T = np.eye(4)
    T[:3, :3] = yaw @ np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]])  # x fwd/y left/z up -> optical
    T[:3, 3] = [0.1, -0.2, 0.3]
    composed = geo.rasterize_sparse_depth(*geo.project(geo.transform_points(T, pts), K), (120, 100))
    fused = geo.project_to_depth(pts, K @ T[:3], (120, 100))
    assert np.count_nonzero(fused) > 100
    np.testing.assert_array_equal(fused, composed)
