"""KITTI calibration files and the frame changes they define (pure functions).

A KITTI object calibration file has seven ``key: v1 v2 ...`` lines (row-major matrices) and
usually a trailing empty line::

    P0: 12 values      3x4 rectified projection of camera 0 .. 3 (P2 = left colour camera)
    P1: ...
    P2: ...
    P3: ...
    R0_rect: 9 values  3x3 rectifying rotation of camera 0
    Tr_velo_to_cam: 12 values   3x4 velodyne -> camera 0 (unrectified)
    Tr_imu_to_velo: 12 values   3x4 IMU -> velodyne

The tracking benchmark writes ``R_rect``, ``Tr_velo_cam`` and ``Tr_imu_velo`` without the colon;
both spellings are accepted.

Frames: KITTI labels are in *rectified camera 0* coordinates. The image of camera 2 is the one
stored, and ``P2 = K [I | t]``: camera 2's centre of projection is offset from camera 0's by
``-t`` (about 6 cm along x). The optical frame of the stored image is therefore
``X_optical = X_rect + t``, which makes ``K @ X_optical == P2 @ [X_rect, 1]`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_data.errors import InputError
from mtl_data.schema.parsing import parse_numbers

# name in the file -> (canonical name, number of values)
_KEYS = {
    "P0": ("P0", 12),
    "P1": ("P1", 12),
    "P2": ("P2", 12),
    "P3": ("P3", 12),
    "R0_rect": ("R0_rect", 9),
    "R_rect": ("R0_rect", 9),
    "Tr_velo_to_cam": ("Tr_velo_to_cam", 12),
    "Tr_velo_cam": ("Tr_velo_to_cam", 12),
    "Tr_imu_to_velo": ("Tr_imu_to_velo", 12),
    "Tr_imu_velo": ("Tr_imu_to_velo", 12),
}
_REQUIRED = ("P2", "R0_rect")


@dataclass(frozen=True)
class KittiCalib:
    """Matrices of one KITTI calibration file.

    Attributes:
        P2: (3, 4) projection of rectified camera-0 coordinates into the camera-2 image.
        R0_rect: (3, 3) rectifying rotation of camera 0.
        Tr_velo_to_cam: (3, 4) velodyne -> unrectified camera 0, metres; None if absent.
        P: every projection matrix present, by name (``P0`` .. ``P3``).
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray | None
    P: dict[str, np.ndarray]


def parse_kitti_calib(text: str, path: str | Path = "<calib>") -> KittiCalib:
    """Parse the text of a KITTI calibration file.

    Blank lines and unknown keys are skipped (raw-data calib files carry extra keys).

    Raises:
        InputError: a line is not ``key[:] numbers``, a known key has the wrong number of
            values or a value that is not a finite number, ``P2``/``R0_rect`` is missing, or
            ``P2`` is no camera projection (its ``K`` is singular).
    """
    found: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, *rest = line.split(None, 1)
        name = name.rstrip(":")
        if name not in _KEYS:
            continue
        canonical, count = _KEYS[name]
        fields = rest[0].split() if rest else []
        values = parse_numbers(fields, path, lineno, prefix=f"{name}: ")
        if values.size != count:
            raise InputError(path, f"{name}: expected {count} numbers, found {values.size}", line=lineno)
        found[canonical] = values
    missing = [k for k in _REQUIRED if k not in found]
    if missing:
        raise InputError(
            path,
            f"missing {', '.join(missing)}",
            hint="a KITTI object calib file has lines P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo",
        )
    K = found["P2"].reshape(3, 4)[:, :3]
    if not (K[0, 0] and K[1, 1] and K[2, 2]) or abs(np.linalg.det(K)) < 1e-12:
        raise InputError(
            path,
            f"P2: its left 3x3 block (K) {np.array2string(K.ravel(), precision=4)} is singular, "
            "not a camera projection (expected fx 0 cx; 0 fy cy; 0 0 1)",
        )
    tr = found.get("Tr_velo_to_cam")
    return KittiCalib(
        P2=found["P2"].reshape(3, 4),
        R0_rect=found["R0_rect"].reshape(3, 3),
        Tr_velo_to_cam=None if tr is None else tr.reshape(3, 4),
        P={k: v.reshape(3, 4) for k, v in found.items() if k.startswith("P")},
    )


def split_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a rectified projection ``P = K [I | t]`` into ``K`` (3, 3) and ``t`` (3,) metres.

    KITTI's rectified projections have an identity rotation, so ``P[:, :3]`` is ``K`` itself.
    """
    P = np.asarray(P, dtype=np.float64)
    K = P[:, :3].copy()
    t = np.linalg.solve(K, P[:, 3])
    return K, t


def velo_to_rect(calib: KittiCalib) -> np.ndarray:
    """(4, 4) transform velodyne -> rectified camera 0: ``R0_rect @ Tr_velo_to_cam``."""
    if calib.Tr_velo_to_cam is None:
        raise ValueError("calibration has no Tr_velo_to_cam")
    r0 = np.eye(4)
    r0[:3, :3] = calib.R0_rect
    tr = np.eye(4)
    tr[:3, :] = calib.Tr_velo_to_cam
    return r0 @ tr


def velo_to_optical(calib: KittiCalib) -> np.ndarray:
    """(4, 4) transform velodyne -> optical frame of the camera-2 image."""
    _, t = split_projection(calib.P2)
    shift = np.eye(4)
    shift[:3, 3] = t
    return shift @ velo_to_rect(calib)


def kitti_label_to_box3d(location: np.ndarray, hwl: np.ndarray, rotation_y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Convert KITTI label geometry to the project's 3D box convention.

    Args:
        location: (N, 3) bottom-centre of the box, rectified camera-0 frame, metres.
        hwl: (N, 3) height, width, length, metres (KITTI's field order).
        rotation_y: (N,) radians about the camera y axis.
        t: (3,) camera-2 offset from ``split_projection(P2)``.

    Returns:
        (N, 7) ``[x, y, z, l, w, h, yaw]`` with (x, y, z) the geometric centre in the optical
        frame of the camera-2 image (y points down, so the centre is ``h/2`` above the bottom).
    """
    location = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    hwl = np.asarray(hwl, dtype=np.float64).reshape(-1, 3)
    centre = location + np.asarray(t, dtype=np.float64)[None, :]
    centre[:, 1] -= 0.5 * hwl[:, 0]
    return np.column_stack([centre, hwl[:, 2], hwl[:, 1], hwl[:, 0], np.asarray(rotation_y, np.float64)])
