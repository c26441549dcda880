"""Lane polylines -> instance masks (pure)."""

from __future__ import annotations

import cv2
import numpy as np

#: x value of "no point on this row" in lane polylines (TuSimple's convention).
NO_POINT = -2.0


def rasterize_lanes(xs: np.ndarray, h_samples: np.ndarray, size: tuple[int, int], thickness: float) -> np.ndarray:
    """Draw lanes as connected polylines into a uint8 instance mask.

    Lane ``i`` (0-based row of ``xs``) is drawn with value ``i + 1``, in order (a later lane
    overwrites an earlier one where they touch). Rows without a point (``NO_POINT``) are skipped
    and the points on either side joined, as LaneNet's ground-truth generator does; points
    outside the image are kept (OpenCV clips the lines). Coordinates are rounded to pixels.

    Args:
        xs: (N, R) column of each lane on each row, ``NO_POINT`` where absent.
        h_samples: (R,) row coordinates.
        size: (height, width) of the mask.
        thickness: line width in pixels (rounded half up, at least 1).

    Returns:
        (H, W) uint8, 0 = background.
    """
    mask = np.zeros(size, dtype=np.uint8)
    h_samples = np.asarray(h_samples, dtype=np.float64)
    for i, lane in enumerate(np.asarray(xs, dtype=np.float64).reshape(-1, len(h_samples)), start=1):
        valid = lane != NO_POINT
        if valid.sum() == 0:
            continue
        pts = np.rint(np.column_stack([lane[valid], h_samples[valid]])).astype(np.int32)
        cv2.polylines(mask, [pts.reshape(-1, 1, 2)], isClosed=False, color=i, thickness=max(1, int(thickness + 0.5)))
    return mask
