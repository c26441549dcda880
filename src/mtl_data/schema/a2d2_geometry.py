"""A2D2 frames, boxes and lens models (pure functions; ``cams_lidars.json`` entries in, arrays out).

Frames:

* **A2D2 camera view frame** (LiDAR ``points``, label3D ``center``/``3d_points``): x forward,
  y left, z up, metres, origin at the camera.
* **Optical frame** of the stored (undistorted) image: x right, y down, z forward, so that
  ``(X, Y, Z)_optical = (-y, -z, x)_view``; the undistorted ``CamMatrix`` projects it.

The converter needs no transform between sensors (the LiDAR npz of a camera already holds its
pixel rows/columns and forward distances), so the ``cams_lidars.json`` views are not read here.
"""

from __future__ import annotations

import cv2
import numpy as np

from mtl_data.schema import geometry as geo

#: view frame (x fwd, y left, z up) -> optical frame (x right, y down, z fwd).
VIEW_TO_OPTICAL = geo.FLU_TO_OPTICAL


def view_to_optical(points: np.ndarray) -> np.ndarray:
    """(N, 3) camera-view-frame points -> optical frame: ``(-y, -z, x)``."""
    return np.asarray(points, dtype=np.float64).reshape(-1, 3) @ VIEW_TO_OPTICAL.T


def axis_angle_to_matrix(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: ``R = cos I + sin [a]x + (1 - cos) a a^T`` for (N, 3) unit axes, (N,) angles."""
    a = np.asarray(axis, dtype=np.float64).reshape(-1, 3)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    t = np.asarray(angle, dtype=np.float64).reshape(-1)
    c, s = np.cos(t)[:, None, None], np.sin(t)[:, None, None]
    zero = np.zeros(len(a))
    cross = np.stack([zero, -a[:, 2], a[:, 1], a[:, 2], zero, -a[:, 0], -a[:, 1], a[:, 0], zero], axis=1)
    return c * np.eye(3) + s * cross.reshape(-1, 3, 3) + (1 - c) * np.einsum("ni,nj->nij", a, a)


def a2d2_boxes_to_optical(
    center: np.ndarray, size: np.ndarray, axis: np.ndarray, angle: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Convert label3D boxes to the project's 3D box convention in the optical frame.

    Args:
        center: (N, 3) box centres, view frame. size: (N, 3) ``[l, w, h]`` metres.
        axis: (N, 3) rotation axes. angle: (N,) radians about ``axis``.

    Returns:
        ``(boxes, rotation)`` as ``geometry.flu_boxes_to_optical``.
    """
    return geo.flu_boxes_to_optical(center, size, axis_angle_to_matrix(axis, angle))


def undistort_maps(camera: dict) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """``cv2.remap`` maps from the original (distorted) image to the undistorted one.

    Uses the camera's own model, as the official tutorial: ``Lens == "Fisheye"`` ->
    ``cv2.fisheye`` with 4 coefficients, otherwise (``Telecam``) the pinhole model with 5;
    ``CamMatrixOriginal`` in, ``CamMatrix`` out, same size (``Resolution`` = [cols, rows]).

    Returns:
        ``((map1, map2), label_map)``: fixed-point maps for bilinear remapping of the image, and
        an int16 (H, W, 2) map already rounded to the nearest source pixel, for class maps
        (``remap(ids, label_map, None, INTER_NEAREST)``). Nearest-neighbour remapping through the
        fixed-point pair samples a pixel next to the nearest one on most pixels (OpenCV issue
        24106): on the real front-center label 30,979 unified class ids differed from true
        nearest neighbour (BENCHMARKS.md, A2D2).
    """
    K_dist = np.asarray(camera["CamMatrixOriginal"], dtype=np.float64)
    K_new = np.asarray(camera["CamMatrix"], dtype=np.float64)
    dist = np.asarray(camera["Distortion"], dtype=np.float64).reshape(-1)
    size = tuple(int(v) for v in camera["Resolution"])
    if camera.get("Lens") == "Fisheye":
        mapx, mapy = cv2.fisheye.initUndistortRectifyMap(K_dist, dist[:4], np.eye(3), K_new, size, cv2.CV_32FC1)
    else:
        mapx, mapy = cv2.initUndistortRectifyMap(K_dist, dist, None, K_new, size, cv2.CV_32FC1)
    image_maps = cv2.convertMaps(mapx, mapy, cv2.CV_16SC2)
    label_map, _ = cv2.convertMaps(mapx, mapy, cv2.CV_16SC2, nninterpolation=True)
    return image_maps, label_map
