"""Cityscapes and Cityscapes-3D frames, boxes and stereo depth (pure functions; arrays in, arrays out).

Frames (cityscapesScripts ``docs/Box3DImageTransform.ipynb``; raw-formats 5.5):

* **V**, ISO 8855 vehicle frame: origin on the ground below the rear-axle centre, x forward,
  y left, z up, metres. gtBbox3d ``3d.center`` and ``3d.rotation`` are in V.
* **C**, camera frame: origin at the left camera, axes forward-left-up like V;
  ``p_C = T[:, :3] p_V + T[:, 3]`` with ``T = sensor["sensor_T_ISO_8855"]`` (3x4).
* **Optical frame** of the project (the notebook's S): x right, y down, z forward,
  ``(X, Y, Z) = (-y_C, -z_C, x_C)``, projected with ``K = [[fx, 0, u0], [0, fy, v0], [0, 0, 1]]``.

A gtBbox3d box has corners ``c + R(q) (+-L/2, +-W/2, +-H/2)`` in V: length along its forward
axis, width along its left axis, height up (a forward-left-up box, as ``geometry.flu_boxes_to_optical``
expects). The quaternion ``q = [w, x, y, z]`` is in pyquaternion's (Hamilton) order.

Disparity PNGs hold ``p = 256 d + 1`` (uint16), ``p = 0`` invalid (cityscapesScripts README);
rectified stereo gives the depth along the optical axis ``Z = baseline * fx / d``.
"""

from __future__ import annotations

import numpy as np

from mtl_data.schema import geometry as geo

#: camera frame C (x fwd, y left, z up) -> optical frame (x right, y down, z fwd).
CAMERA_TO_OPTICAL = geo.FLU_TO_OPTICAL


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Rotation matrices of quaternions ``[w, x, y, z]`` (normalised first, as pyquaternion does).

    Args:
        quaternion: (4,) or (N, 4), any non-zero norm.

    Returns:
        (N, 3, 3) rotations ``R`` with ``R @ v`` rotating the vector ``v``.
    """
    q = np.asarray(quaternion, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(-1, 3, 3)


def vehicle_to_camera(points_vehicle: np.ndarray, sensor_T_iso: np.ndarray) -> np.ndarray:
    """(N, 3) points in V -> camera frame C through the 3x4 ``sensor_T_ISO_8855``."""
    return geo.transform_points(sensor_T_iso, points_vehicle)


def camera_to_optical(points_camera: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points (x fwd, y left, z up) -> optical frame: ``(-y, -z, x)``."""
    return np.asarray(points_camera, dtype=np.float64).reshape(-1, 3) @ CAMERA_TO_OPTICAL.T


def vehicle_boxes_to_optical(
    center: np.ndarray, dimensions: np.ndarray, rotation_wxyz: np.ndarray, sensor_T_iso: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """gtBbox3d boxes (V frame) -> the project's boxes in the optical frame.

    Args:
        center: (N, 3) box centres in V, metres.
        dimensions: (N, 3) ``[L, W, H]`` metres.
        rotation_wxyz: (N, 4) quaternions, box axes -> V.
        sensor_T_iso: (3, 4) V -> C.

    Returns:
        ``(boxes, rotation)``: (N, 7) ``[x, y, z, l, w, h, yaw]`` in the optical frame and the
        (N, 3, 3) full rotation (see ``geometry.flu_boxes_to_optical``).
    """
    return frame_boxes_to_optical(center, dimensions, quaternion_to_matrix(rotation_wxyz), sensor_T_iso)


def frame_boxes_to_optical(
    center: np.ndarray, dimensions: np.ndarray, rotation: np.ndarray, sensor_T_iso: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``vehicle_boxes_to_optical`` with rotation matrices; ``sensor_T_iso=None`` reads the boxes
    in the camera frame C instead of V (an identity extrinsic).

    Args:
        center: (N, 3) box centres in V (or C), metres.
        dimensions: (N, 3) ``[L, W, H]`` metres.
        rotation: (N, 3, 3) forward-left-up box axes -> V (or C).
        sensor_T_iso: (3, 4) V -> C, or None.

    Returns:
        As ``vehicle_boxes_to_optical``.
    """
    center = np.asarray(center, dtype=np.float64).reshape(-1, 3)
    rotation = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    if sensor_T_iso is None:
        return geo.flu_boxes_to_optical(center, dimensions, rotation)
    T = np.asarray(sensor_T_iso, dtype=np.float64).reshape(3, 4)
    center_c = vehicle_to_camera(center, T)
    rotation_c = T[None, :, :3] @ rotation  # box axes -> C
    return geo.flu_boxes_to_optical(center_c, dimensions, rotation_c)


def camera_to_vehicle(points_camera: np.ndarray, sensor_T_iso: np.ndarray) -> np.ndarray:
    """(N, 3) points in C -> V: the inverse of ``vehicle_to_camera`` (``T`` inverted as a 4x4)."""
    T = np.eye(4)
    T[:3] = np.asarray(sensor_T_iso, dtype=np.float64).reshape(3, 4)
    return geo.transform_points(np.linalg.inv(T), points_camera)


def optical_boxes_to_frame(
    boxes: np.ndarray, rotation: np.ndarray | None, sensor_T_iso: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The project's optical-frame boxes -> Cityscapes-3D boxes in V (or in C without ``T``).

    The inverse of ``frame_boxes_to_optical`` (and so of the ingest's conversion): optical ->
    C (``(z, -x, -y)``), then C -> V through the inverse of ``sensor_T_ISO_8855``.

    Args:
        boxes: (N, 7) ``[x, y, z, l, w, h, yaw]`` optical frame.
        rotation: (N, 3, 3) full rotations, or None for ``yaw_to_rotation(yaw)``.
        sensor_T_iso: (3, 4) V -> C, or None to stay in C (identity extrinsic).

    Returns:
        ``(center, dimensions, rotation)``: (N, 3) centres, (N, 3) ``[L, W, H]`` and (N, 3, 3)
        forward-left-up box axes -> V (or C), the matrix of gtBbox3d's ``3d.rotation``.
    """
    center_c, size, rotation_c = geo.optical_boxes_to_flu(boxes, rotation)
    if sensor_T_iso is None:
        return center_c, size, rotation_c
    T = np.asarray(sensor_T_iso, dtype=np.float64).reshape(3, 4)
    return camera_to_vehicle(center_c, T), size, np.linalg.inv(T[:, :3])[None] @ rotation_c


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Quaternions ``[w, x, y, z]`` (w >= 0) of rotation matrices; inverse of ``quaternion_to_matrix``.

    Shepperd's method (1978): the largest of ``w, x, y, z`` is taken from the diagonal, the rest
    from the off-diagonal sums, so the result is accurate for every rotation.

    Args:
        rotation: (3, 3) or (N, 3, 3).

    Returns:
        (N, 4) unit quaternions.
    """
    r = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    trace = r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    # 4 w^2, 4 x^2, 4 y^2, 4 z^2 (each >= 0 for a rotation); the largest is the stable pivot
    squares = np.stack(
        [1 + trace, 1 + 2 * r[:, 0, 0] - trace, 1 + 2 * r[:, 1, 1] - trace, 1 + 2 * r[:, 2, 2] - trace], axis=1
    )  # (N, 4)
    pivot = np.argmax(squares, axis=1)
    big = np.sqrt(np.maximum(squares[np.arange(len(r)), pivot], 0.0))  # (N,) = 2 |q_pivot|
    # q_a q_b products from the off-diagonals: 4 w x = R21 - R12, 4 w y = R02 - R20, 4 w z = R10 - R01,
    # 4 x y = R01 + R10, 4 x z = R02 + R20, 4 y z = R12 + R21
    wx, wy, wz = r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]
    xy, xz, yz = r[:, 0, 1] + r[:, 1, 0], r[:, 0, 2] + r[:, 2, 0], r[:, 1, 2] + r[:, 2, 1]
    products = np.stack(
        [
            np.stack([squares[:, 0], wx, wy, wz], axis=1),
            np.stack([wx, squares[:, 1], xy, xz], axis=1),
            np.stack([wy, xy, squares[:, 2], yz], axis=1),
            np.stack([wz, xz, yz, squares[:, 3]], axis=1),
        ],
        axis=1,
    )  # (N, 4 pivot, 4) = 4 q_pivot q
    q = products[np.arange(len(r)), pivot] / (2.0 * big[:, None])  # (N, 4) = +-q
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def quaternion_yaw_pitch_roll(quaternion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(yaw, pitch, roll)`` as pyquaternion's ``Quaternion.yaw_pitch_roll`` computes them.

    cityscapesScripts' 3D evaluator compares orientations with these angles of the gtBbox3d
    quaternions (V frame), so the formula is reproduced term for term (normalised first):
    ``yaw = atan2(2 (w z - x y), 1 - 2 (y^2 + z^2))``, ``pitch = asin(2 (w y + z x))``,
    ``roll = atan2(2 (w x - y z), 1 - 2 (x^2 + y^2))``. For a rotation about a single axis they
    are that axis's angle; combined, they are pyquaternion's own convention (not exactly z-y-x
    Euler angles). Every term is quadratic in q, so ``q`` and ``-q`` give the same angles. The
    asin argument is clipped to [-1, 1] (rounding could push it out and give NaN).

    Args:
        quaternion: (4,) or (N, 4) ``[w, x, y, z]``.

    Returns:
        Three (N,) arrays, radians.
    """
    q = np.asarray(quaternion, dtype=np.float64).reshape(-1, 4)
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    yaw = np.arctan2(2 * (w * z - x * y), 1 - 2 * (y**2 + z**2))
    pitch = np.arcsin(np.clip(2 * (w * y + z * x), -1.0, 1.0))
    roll = np.arctan2(2 * (w * x - y * z), 1 - 2 * (x**2 + y**2))
    return yaw, pitch, roll


def intrinsics(fx: float, fy: float, u0: float, v0: float) -> np.ndarray:
    """(3, 3) ``K`` from the camera json ``intrinsic`` (or gtBbox3d ``sensor``) values."""
    return np.array([[fx, 0.0, u0], [0.0, fy, v0], [0.0, 0.0, 1.0]], dtype=np.float64)


def extrinsic_to_sensor_T(x: float, y: float, z: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The 3x4 V -> C transform of a camera json ``extrinsic`` (camera pose in V, radians).

    The camera's axes in V are ``R = Rz(yaw) Ry(pitch) Rx(roll)`` and its origin ``t = (x, y, z)``;
    the result is ``[R^T | -R^T t]``. Checked against the official gtBbox3d sample, whose
    ``sensor_T_ISO_8855`` it reproduces from the matching camera json (roll 0 there, so the
    place of roll in the product is not verified).
    """
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    R = rz @ ry @ rx
    return np.column_stack([R.T, -R.T @ np.array([x, y, z], dtype=np.float64)])


def disparity_from_png(values: np.ndarray) -> np.ndarray:
    """Disparity in pixels of a disparity PNG's uint16 values: ``(p - 1) / 256``; 0 where ``p == 0``.

    ``p == 1`` gives a disparity of exactly 0 (a point at infinity); ``p == 0`` (no stereo
    match) is returned as 0 too. Both have no finite depth.
    """
    p = np.asarray(values).astype(np.float64)
    return np.where(p > 0, (p - 1.0) / 256.0, 0.0)


def disparity_to_depth(disparity: np.ndarray, baseline_m: float, fx_px: float) -> np.ndarray:
    """Depth along the optical axis ``baseline * fx / d`` in metres; 0 where ``d <= 0`` (none).

    Not quantized or clipped: ``geometry.quantize_depth`` does that.
    """
    d = np.asarray(disparity, dtype=np.float64)
    valid = d > 0
    out = np.zeros(d.shape, dtype=np.float64)
    out[valid] = baseline_m * fx_px / d[valid]
    return out
