"""Pure geometry: frames, projection, sparse depth, 3D boxes, resizing of pixel coordinates.

Conventions used everywhere in this project (see docs/conventions.md):

* **Optical frame** of a camera: x right, y down, z forward, metres, origin at the centre of
  projection of the *stored* image, so that ``u = K @ X`` with the 3x3 ``K`` of ``meta.json``.
* **Pixel coordinates**: (u, v) = (column, row); integer values are pixel *centres* (OpenCV's
  convention). A point at (u, v) falls in pixel ``(floor(v + 0.5), floor(u + 0.5))``.
* **3D box** ``[x, y, z, l, w, h, yaw]``: (x, y, z) the geometric centre in the optical frame,
  length l along the box's x axis, height h along its y axis, width w along its z axis, then
  rotated by ``yaw`` about the optical y axis (KITTI's ``rotation_y``).

Nothing here reads files or keeps state; every function is tested against hand-computed values.
"""

from __future__ import annotations

import numpy as np

#: depth is stored as uint16 ``round(metres * DEPTH_SCALE)``; 0 means "no measurement".
DEPTH_SCALE = 256.0
#: the largest depth a uint16 PNG can hold; farther points are clipped to it (never wrapped).
MAX_DEPTH_M = 65535.0 / DEPTH_SCALE

#: sign pattern of the 8 corners in box coordinates (x along l, y along h, z along w).
#: Corners 0-3 are the bottom face (+y is down), 4-7 the top face; 0/4 is front-left-ish
#: (+x, +z). This is the KITTI devkit order (``computeBox3D``).
_CORNER_SIGNS = np.array(
    [
        [1, 1, 1],
        [1, 1, -1],
        [-1, 1, -1],
        [-1, 1, 1],
        [1, -1, 1],
        [1, -1, -1],
        [-1, -1, -1],
        [-1, -1, 1],
    ],
    dtype=np.float64,
)  # (8, 3)


#: forward-left-up frame (A2D2 camera views, Cityscapes camera C, ISO 8855) -> optical frame.
FLU_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])

#: this project's box axes (x along l, y along h pointing down, z along w) expressed in a
#: forward-left-up box's axes (x along l, y along w pointing left, z along h pointing up).
_PROJECT_TO_FLU_BOX = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def yaw_to_rotation(yaw: np.ndarray | float) -> np.ndarray:
    """Rotation about the optical y axis: ``[[c, 0, s], [0, 1, 0], [-s, 0, c]]``.

    Args:
        yaw: radians, scalar or (N,).

    Returns:
        (3, 3) for a scalar, else (N, 3, 3).
    """
    yaw = np.asarray(yaw, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    zeros, ones = np.zeros_like(yaw), np.ones_like(yaw)
    rot = np.stack([c, zeros, s, zeros, ones, zeros, -s, zeros, c], axis=-1)
    return rot.reshape(yaw.shape + (3, 3))


def box3d_corners(boxes: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """The 8 corners of each 3D box, in the frame the centres are in.

    Args:
        boxes: (N, 7) ``[x, y, z, l, w, h, yaw]``, metres and radians.
        rotation: optional (N, 3, 3) full rotation that replaces ``yaw_to_rotation(yaw)``
            (sources with roll and pitch).

    Returns:
        (N, 8, 3) corners in the order of ``_CORNER_SIGNS`` (bottom face 0-3, top face 4-7).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    half = 0.5 * boxes[:, [3, 5, 4]]  # (N, 3): l/2 along x, h/2 along y, w/2 along z
    local = _CORNER_SIGNS[None, :, :] * half[:, None, :]  # (N, 8, 3)
    rot = yaw_to_rotation(boxes[:, 6]) if rotation is None else np.asarray(rotation, np.float64)
    return np.einsum("nij,nkj->nki", rot, local) + boxes[:, None, :3]


def flu_boxes_to_optical(
    center: np.ndarray, size_lwh: np.ndarray, rotation_flu: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes given in a forward-left-up camera frame -> the project's boxes in the optical frame.

    Args:
        center: (N, 3) box centres, forward-left-up camera frame, metres.
        size_lwh: (N, 3) length (along the box's forward axis), width (left), height (up).
        rotation_flu: (N, 3, 3) box axes -> camera frame, both forward-left-up.

    Returns:
        ``(boxes, rotation)``: (N, 7) ``[x, y, z, l, w, h, yaw]`` in the optical frame, yaw the
        heading about optical y (``atan2(R[0, 2], R[0, 0])``), and (N, 3, 3) the full rotation
        ``R = FLU_TO_OPTICAL @ rotation_flu @ M`` (equal to ``yaw_to_rotation(yaw)`` when the box
        is upright).
    """
    rot = FLU_TO_OPTICAL[None] @ np.asarray(rotation_flu, np.float64).reshape(-1, 3, 3) @ _PROJECT_TO_FLU_BOX[None]
    size = np.asarray(size_lwh, dtype=np.float64).reshape(-1, 3)
    centre = np.asarray(center, dtype=np.float64).reshape(-1, 3) @ FLU_TO_OPTICAL.T
    yaw = np.arctan2(rot[:, 0, 2], rot[:, 0, 0])
    return np.column_stack([centre, size, yaw]), rot


def is_upright(rotation: np.ndarray, tol: float = 1e-9) -> bool:
    """Whether every (3, 3) optical-frame rotation turns about the optical y axis only."""
    rotation = np.asarray(rotation).reshape(-1, 3, 3)
    yaw = np.arctan2(rotation[:, 0, 2], rotation[:, 0, 0])
    return bool(np.allclose(rotation, yaw_to_rotation(yaw), atol=tol))


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a rigid/affine transform to points.

    Args:
        transform: (3, 4) or (4, 4) matrix mapping source-frame to target-frame coordinates.
        points: (N, 3) in the source frame.

    Returns:
        (N, 3) in the target frame.
    """
    transform = np.asarray(transform, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return points @ transform[:3, :3].T + transform[:3, 3]


def project(points_optical: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of optical-frame points.

    Args:
        points_optical: (N, 3) metres, optical frame (x right, y down, z forward).
        K: (3, 3) intrinsics.

    Returns:
        ``(uv, z)``: (N, 2) pixel coordinates and (N,) depth along the optical axis. Points with
        ``z <= 0`` get NaN coordinates; the caller decides what to keep.
    """
    pts = np.asarray(points_optical, dtype=np.float64).reshape(-1, 3)
    z = pts[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = pts @ np.asarray(K, dtype=np.float64).T  # (N, 3)
        uv = uvw[:, :2] / uvw[:, 2:3]
    uv[z <= 0] = np.nan
    return uv, z


def quantize_depth(depth_m: np.ndarray) -> np.ndarray:
    """Round metric depth to the stored resolution (1/256 m), clipping at ``MAX_DEPTH_M``.

    Returns float32 metres whose values are exact multiples of 1/256, so encoding them as
    uint16 is lossless. Non-positive values become 0 (no measurement).
    """
    d = np.clip(np.asarray(depth_m, dtype=np.float64), 0.0, MAX_DEPTH_M)
    return (np.rint(d * DEPTH_SCALE) / DEPTH_SCALE).astype(np.float32)


def rasterize_sparse_depth(uv: np.ndarray, z: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Z-buffer projected points into a sparse depth image; the nearest point wins per pixel.

    Args:
        uv: (N, 2) pixel coordinates (NaN allowed: dropped).
        z: (N,) metres along the optical axis; points with ``z <= 0`` are dropped.
        size: (height, width) of the image.

    Returns:
        (H, W) float32 metres quantized by ``quantize_depth``; 0 where no point fell.
        Points beyond ``MAX_DEPTH_M`` are clipped to it, never wrapped.
    """
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    return _zbuffer(uv[:, 0], uv[:, 1], np.asarray(z, dtype=np.float64).reshape(-1), size)


def _zbuffer(u: np.ndarray, v: np.ndarray, z: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    with np.errstate(invalid="ignore"):
        col = np.floor(u + 0.5)
        row = np.floor(v + 0.5)
        keep = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = row[keep].astype(np.int64) * w + col[keep].astype(np.int64)
    # Quantizing first is safe (rounding is monotonic) and min is order-independent, so
    # repeated pixels need no sorting: the nearest point wins whatever the point order.
    out = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(out, flat, quantize_depth(z[keep]))
    out[out == np.inf] = 0.0
    return out.reshape(h, w)


def project_to_depth(points: np.ndarray, P: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sparse depth image of 3D points seen through a 3x4 projection ``P = K [R | t]``.

    The fused equivalent of ``transform_points`` + ``project`` + ``rasterize_sparse_depth``
    for whole LiDAR scans: points behind the camera are dropped before the division, and the
    products are written out per coordinate, which avoids (N, 3) temporaries and BLAS threads
    (a worker process must stay on its one core).

    Args:
        points: (N, >=3) points in the source frame (extra columns, e.g. reflectance, ignored).
        P: (3, 4) source frame -> pixels; its last row must give the optical-axis depth
            (true for ``K @ T[:3]`` with a pinhole ``K`` whose last row is ``[0, 0, 1]``).
        size: (height, width) of the image.

    Returns:
        (H, W) float32 metres, as ``rasterize_sparse_depth``.
    """
    P = np.asarray(P, dtype=np.float64)
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    z = points[:, 2].astype(np.float64)
    depth = P[2, 0] * x + P[2, 1] * y + P[2, 2] * z + P[2, 3]
    front = depth > 0
    x, y, z, depth = x[front], y[front], z[front], depth[front]
    u = (P[0, 0] * x + P[0, 1] * y + P[0, 2] * z + P[0, 3]) / depth
    v = (P[1, 0] * x + P[1, 1] * y + P[1, 2] * z + P[1, 3]) / depth
    return _zbuffer(u, v, depth, size)


def scaled_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) after shrinking so that the longer side is at most ``max_side``.

    Never upscales; each side is rounded to the nearest integer and at least 1.
    """
    h, w = size
    if max_side is None or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def scale_pixel_coords(coords: np.ndarray, scale: float) -> np.ndarray:
    """Map a pixel coordinate to a resized image (pixel-centre convention): ``(c + 0.5) s - 0.5``.

    This is the mapping OpenCV's area/linear resizing uses, so labels stay on the image content.
    """
    return (np.asarray(coords, dtype=np.float64) + 0.5) * scale - 0.5


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics of an image resized by (sx, sy), consistent with ``scale_pixel_coords``.

    Projecting with the result equals projecting with ``K`` and then scaling the pixel
    coordinates, for every point.
    """
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, :] *= sx
    K[1, :] *= sy
    K[0, 2] += 0.5 * sx - 0.5
    K[1, 2] += 0.5 * sy - 0.5
    return K


def scale_boxes2d(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Scale (N, 4) ``[x1, y1, x2, y2]`` pixel boxes with ``scale_pixel_coords``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(boxes)
    out[:, 0::2] = scale_pixel_coords(boxes[:, 0::2], sx)
    out[:, 1::2] = scale_pixel_coords(boxes[:, 1::2], sy)
    return out


def resize_sparse_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a sparse depth image without interpolating: each point keeps its own depth.

    Interpolating sparse depth mixes real depths with the zeros of empty pixels; here every
    measured pixel is sent to the target pixel that contains its scaled centre
    ``floor((c + 0.5) s)`` and the smallest depth wins: min-pooling when shrinking, point
    reprojection when enlarging (each point lands in its own pixel, the rest stays 0).
    Measured pixels are found with ``flatnonzero(depth != 0)``: ``np.nonzero`` on a float32 map
    costs 1.8 ms on a KITTI frame, this 0.1 ms.

    Args:
        depth: (H, W) float32 metres, 0 = none.
        size: target (height, width), larger or smaller on either axis.

    Returns:
        (h, w) float32 metres; every non-zero value is one of the input's.
    """
    src_h, src_w = depth.shape
    h, w = size
    flat = np.flatnonzero(depth != 0)  # (P,) measured pixels
    rows, cols = np.divmod(flat, src_w)
    trow = np.minimum(np.floor((rows + 0.5) * (h / src_h)).astype(np.int64), h - 1)
    tcol = np.minimum(np.floor((cols + 0.5) * (w / src_w)).astype(np.int64), w - 1)
    out = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(out, trow * w + tcol, depth.ravel()[flat])
    out[np.isinf(out)] = 0.0
    return out.reshape(h, w)


def box_extent_in_image(corners: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Axis-aligned pixel extent of projected 3D boxes.

    Args:
        corners: (N, 8, 3) optical-frame corners (see ``box3d_corners``).
        K: (3, 3) intrinsics.

    Returns:
        (N, 4) ``[u_min, v_min, u_max, v_max]``, unclipped; NaN for a box with a corner at or
        behind the camera plane (its projection is not a bounded box).
    """
    corners = np.asarray(corners, dtype=np.float64)
    n = corners.shape[0]
    uv, _ = project(corners.reshape(-1, 3), K)
    uv = uv.reshape(n, 8, 2)
    out = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)  # NaN propagates
    return out


# ---- full rotations: yaw, pitch, roll -------------------------------------------------------


def _rotation_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    zeros, ones = np.zeros_like(angle), np.ones_like(angle)
    return np.stack([c, -s, zeros, s, c, zeros, zeros, zeros, ones], axis=-1).reshape(angle.shape + (3, 3))


def _rotation_x(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    zeros, ones = np.zeros_like(angle), np.ones_like(angle)
    return np.stack([ones, zeros, zeros, zeros, c, -s, zeros, s, c], axis=-1).reshape(angle.shape + (3, 3))


def yaw_pitch_roll_to_rotation(
    yaw: np.ndarray | float, pitch: np.ndarray | float, roll: np.ndarray | float
) -> np.ndarray:
    """A full box rotation in the optical frame: ``R = R_y(yaw) @ R_z(pitch) @ R_x(roll)``.

    Intrinsic y-z'-x'' angles of the project's box axes (x along the length, y down along the
    height, z along the width): ``yaw`` turns the box about the optical y axis exactly as
    ``yaw_to_rotation`` (KITTI ``rotation_y``), ``pitch`` then turns it about its own width axis
    (the nose goes down for a positive pitch: +x towards +y), ``roll`` last about its own length
    axis. ``pitch = roll = 0`` gives ``yaw_to_rotation(yaw)``. A horizontal flip of the scene
    (``transforms``: ``R -> M R N``) maps ``(yaw, pitch, roll)`` to ``(pi - yaw, pitch, -roll)``.

    Args:
        yaw, pitch, roll: radians, scalars or arrays of one shape S.

    Returns:
        S + (3, 3) rotations.
    """
    yaw, pitch, roll = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (yaw, pitch, roll)))
    return yaw_to_rotation(yaw) @ _rotation_z(pitch) @ _rotation_x(roll)


def rotation_to_yaw_pitch_roll(rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``yaw_pitch_roll_to_rotation``: ``(yaw, pitch, roll)`` of rotations.

    From ``R = R_y(yaw) R_z(pitch) R_x(roll)``: ``sin(pitch) = R[1, 0]``,
    ``yaw = atan2(-R[2, 0], R[0, 0])`` (the heading of the box's length axis in the ground
    plane), ``roll = atan2(-R[1, 2], R[1, 1])``. Ranges: yaw and roll in (-pi, pi], pitch in
    [-pi/2, pi/2]. At ``|pitch| = pi/2`` (a box standing on its nose) yaw and roll are not
    separable; the formula then still returns angles whose rotation is R.

    For a tilted box this yaw differs from ``atan2(R[0, 2], R[0, 0])``, the ``yaw`` column the
    converters store (``flu_boxes_to_optical``), by a term of order pitch x roll.

    Args:
        rotation: (..., 3, 3) rotation matrices.

    Returns:
        Three arrays of shape (...,), radians.
    """
    r = np.asarray(rotation, dtype=np.float64)
    pitch = np.arcsin(np.clip(r[..., 1, 0], -1.0, 1.0))
    yaw = np.arctan2(-r[..., 2, 0], r[..., 0, 0])
    roll = np.arctan2(-r[..., 1, 2], r[..., 1, 1])
    return yaw, pitch, roll


def optical_boxes_to_flu(
    boxes: np.ndarray, rotation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``flu_boxes_to_optical``: the project's boxes -> a forward-left-up camera frame.

    Args:
        boxes: (N, 7) ``[x, y, z, l, w, h, yaw]`` in the optical frame.
        rotation: (N, 3, 3) full rotations, or None for ``yaw_to_rotation(yaw)``.

    Returns:
        ``(center, size_lwh, rotation_flu)``: (N, 3) centres in the forward-left-up camera frame
        (``(z, -x, -y)`` of the optical centre), (N, 3) length, width, height, and (N, 3, 3) the
        rotation taking a forward-left-up box's axes (length forward, width left, height up) to
        the camera frame: ``FLU_TO_OPTICAL.T @ R @ M.T``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    rot = yaw_to_rotation(boxes[:, 6]) if rotation is None else np.asarray(rotation, np.float64).reshape(-1, 3, 3)
    rot_flu = FLU_TO_OPTICAL.T[None] @ rot @ _PROJECT_TO_FLU_BOX.T[None]
    return boxes[:, :3] @ FLU_TO_OPTICAL, boxes[:, 3:6].copy(), rot_flu


#: the 12 edges of a box between the corners of ``box3d_corners`` (bottom face, top face, verticals).
BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


def clipped_box_extent(corners: np.ndarray, K: np.ndarray, near: float = 0.01) -> np.ndarray:
    """Axis-aligned pixel extent of 3D boxes cut at the plane ``z = near`` (no clipping to the image).

    The part of the box in front of the plane is what a camera sees, so its extent is that of
    the corners with ``z > near`` and of the points where the box edges cross the plane. This
    is how cityscapesScripts (``Box3dImageTransform.get_amodal_box_2d``, near = 1 cm) turns a 3D
    box into its amodal 2D box: it cuts each face polygon at the plane, which yields the same
    points (each crossing computed from the corner behind, ``p + k (p - q)``, as it does).

    Args:
        corners: (N, 8, 3) optical-frame corners in ``box3d_corners`` order.
        K: (3, 3) intrinsics.
        near: metres; corners at or behind the plane are replaced by the crossings.

    Returns:
        (N, 4) ``[u_min, v_min, u_max, v_max]``; NaN rows for boxes wholly behind the plane.
    """
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3)
    n = corners.shape[0]
    p, q = corners[:, BOX_EDGES[:, 0]], corners[:, BOX_EDGES[:, 1]]  # (N, 12, 3) edge ends
    zp, zq = p[..., 2], q[..., 2]
    crossing = (zp > near) != (zq > near)  # (N, 12)
    behind, front = np.where((zp <= near)[..., None], p, q), np.where((zp <= near)[..., None], q, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (near - behind[..., 2]) / (behind[..., 2] - front[..., 2])  # (N, 12)
        cut = behind + k[..., None] * (behind - front)  # (N, 12, 3) on the plane
    points = np.concatenate([corners, cut], axis=1)  # (N, 20, 3)
    keep = np.concatenate([corners[..., 2] > near, crossing], axis=1)  # (N, 20)
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = points @ np.asarray(K, dtype=np.float64).T
        uv = uvw[..., :2] / uvw[..., 2:3]  # (N, 20, 2)
    lo = np.where(keep[..., None], uv, np.inf).min(axis=1)
    hi = np.where(keep[..., None], uv, -np.inf).max(axis=1)
    out = np.concatenate([lo, hi], axis=1)  # (N, 4)
    out[~keep.any(axis=1)] = np.nan
    return out.reshape(n, 4)
