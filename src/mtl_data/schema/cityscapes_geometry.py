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
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)


def vehicle_to_camera(points_vehicle: np.ndarray, sensor_T_iso: np.ndarray) -> np.ndarray:
    """(N, 3) points in V -> camera frame C through the 3x4 ``sensor_T_ISO_8855``."""
    return geo.transform_points(sensor_T_iso, points_vehicle)


def camera_to_optical(points_camera: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points (x fwd, y left, z up) -> optical frame: ``(-y, -z, x)``."""
    return np.asarray(points_camera, dtype=np.float64).reshape(-1, 3) @ CAMERA_TO_OPTICAL.T


def vehicle_boxes_to_optical(center: np.ndarray, dimensions: np.ndarray, rotation_wxyz: np.ndarray,
                             sensor_T_iso: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    T = np.asarray(sensor_T_iso, dtype=np.float64).reshape(3, 4)
    center_c = vehicle_to_camera(center, T)
    rotation_c = T[None, :, :3] @ quaternion_to_matrix(rotation_wxyz)  # box axes -> C
    return geo.flu_boxes_to_optical(center_c, dimensions, rotation_c)


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
