"""How every label of a ``Sample`` follows a resize or letterbox: pure functions of a ``Placement``.

A ``Placement`` says where a (h, w) source lands in an (H, W) output: scaled by ``(sx, sy)``
and, when letterboxed, offset by ``(left, top)`` inside padding. Coordinates follow the
pixel-centre convention of ``geometry.scale_pixel_coords``: ``c' = (c + 0.5) s - 0.5 + offset``.
The ingest's ``--max-side`` downscale (``ingest.resize``) and the loader's transforms
(``train.transforms``) both place labels with ``place_labels``; each resizes the image its own
way (area averaging at ingest, halving + bilinear in the loader).

* class maps (seg): ``INTER_NEAREST_EXACT``, padding 255 (ignore);
* lanes: redrawn from the scaled polylines (thickness scaled by the smaller ratio), padding 255;
* sparse depth: never interpolated (``geometry.resize_sparse_depth``), padding 0;
* 2D boxes, ignore regions, amodal boxes, the sign ROI and ``K``: scaled and offset;
* 3D boxes and steering: unchanged (metric / not in pixels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from mtl_data.schema import geometry as geo
from mtl_data.schema.lanes import NO_POINT, rasterize_lanes
from mtl_data.schema.sample import IGNORE_INDEX, Det2D, Lanes, Sample, Sign

#: letterbox padding of depth (no measurement); class maps use IGNORE_INDEX.
DEPTH_PAD = 0.0


@dataclass(frozen=True)
class Placement:
    """Where a (h, w) source lands in the output: ``c' = (c + 0.5) * s - 0.5 + offset`` per axis.

    Attributes:
        src_size: (h, w) of the labels' pixel grid.
        out_size: (H, W) of the output.
        content_size: (nh, nw) of the resized source inside the output (= out_size unless
            letterboxed).
        top, left: padding above / left of the content, pixels.
    """

    src_size: tuple[int, int]
    out_size: tuple[int, int]
    content_size: tuple[int, int]
    top: int = 0
    left: int = 0

    @property
    def sx(self) -> float:
        return self.content_size[1] / self.src_size[1]

    @property
    def sy(self) -> float:
        return self.content_size[0] / self.src_size[0]

    @property
    def padded(self) -> bool:
        return self.content_size != self.out_size

    @property
    def identity(self) -> bool:
        return self.src_size == self.out_size and not self.padded


def placement(src_hw: tuple[int, int], size_hw: tuple[int, int], letterbox: bool) -> Placement:
    """The ``Placement`` of a (h, w) source resized (or letterboxed) to ``size_hw``."""
    (h, w), (out_h, out_w) = src_hw, size_hw
    if not letterbox:
        return Placement((h, w), (out_h, out_w), (out_h, out_w))
    s = min(out_h / h, out_w / w)
    nh, nw = min(out_h, max(1, round(h * s))), min(out_w, max(1, round(w * s)))
    return Placement((h, w), (out_h, out_w), (nh, nw), top=(out_h - nh) // 2, left=(out_w - nw) // 2)


def map_boxes(boxes: np.ndarray, pl: Placement) -> np.ndarray:
    out = geo.scale_boxes2d(boxes, pl.sx, pl.sy)  # (N, 4)
    out[:, 0::2] += pl.left
    out[:, 1::2] += pl.top
    return out


def map_K(K: np.ndarray, pl: Placement) -> np.ndarray:
    out = geo.scale_intrinsics(K, pl.sx, pl.sy)  # (3, 3)
    out[0, 2] += pl.left
    out[1, 2] += pl.top
    return out


def pad(array: np.ndarray, pl: Placement, value: float) -> np.ndarray:
    if not pl.padded:
        return array
    (out_h, out_w), (nh, nw) = pl.out_size, pl.content_size
    return cv2.copyMakeBorder(
        array,
        pl.top,
        out_h - nh - pl.top,
        pl.left,
        out_w - nw - pl.left,
        cv2.BORDER_CONSTANT,
        value=value if array.ndim == 2 else (value,) * array.shape[2],
    )


def _resize_seg(seg: np.ndarray, pl: Placement) -> np.ndarray:
    nh, nw = pl.content_size
    # Nearest neighbour keeps class ids (no invented classes); the EXACT variant samples the
    # source pixel whose centre is nearest the target centre, matching the pixel-centre mapping
    # of the boxes. Plain INTER_NEAREST takes floor(c / s) and is shifted by half a pixel.
    seg = cv2.resize(seg, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)  # (nh, nw) uint8
    return pad(seg, pl, IGNORE_INDEX)


def place_depth_points(index: np.ndarray, value: np.ndarray, pl: Placement) -> np.ndarray:
    """Scatter measured pixels of the (h, w) source straight to the (H, W) output of ``pl``.

    The same map as ``_resize_depth`` of the dense source (in the value's own units): each
    point goes to the content pixel that contains its scaled centre ``floor((c + 0.5) s)``,
    offset by the letterbox padding, and the smallest value wins; pixels without a point are
    0. It costs O(points), not O(source pixels): the loader decodes ``depth.pts`` members to
    points and never builds the full-size map.

    Args:
        index: (n,) row-major flat indices into the (h, w) source, each pixel at most once.
        value: (n,) uint16 ``round(metres * 256)``, > 0.
        pl: the placement.

    Returns:
        (H, W) uint16 map, ``pl.out_size``.
    """
    (src_h, src_w), (nh, nw), (out_h, out_w) = pl.src_size, pl.content_size, pl.out_size
    # uint32 throughout (a frame has < 2^32 pixels): its division and gathers are 2-4x faster
    rows, cols = np.divmod(np.asarray(index).astype(np.uint32, copy=False), np.uint32(src_w))
    # Per source row / column its output row / column (what resize_sparse_depth computes per
    # point), looked up: a few thousand table entries instead of float maths on every point.
    row_of = (_pixel_map(src_h, nh, pl.top) * out_w).astype(np.uint32)  # (h,) output row offsets
    col_of = _pixel_map(src_w, nw, pl.left).astype(np.uint32)  # (w,)
    target = row_of[rows]
    target += col_of[cols]  # (n,) flat output pixels
    # Nearest wins: np.minimum.at (a fast unbuffered loop in NumPy 2: 2 ms for a million
    # points). Values are shifted down by one so that the fill 0xFFFF is above every point and
    # wraps to 0 (no measurement) when shifted back: exact for the whole uint16 range.
    out = np.full(out_h * out_w, 0xFFFF, np.uint16)
    np.minimum.at(out, target, np.asarray(value, np.uint16) - np.uint16(1))
    out += np.uint16(1)
    return out.reshape(out_h, out_w)


def _pixel_map(src: int, dst: int, offset: int) -> np.ndarray:
    """Output pixel of each source pixel along an axis: ``floor((c + 0.5) dst / src) + offset``,
    clipped to the content, as ``geometry.resize_sparse_depth`` maps points."""
    return np.minimum(np.floor((np.arange(src) + 0.5) * (dst / src)).astype(np.int64), dst - 1) + offset


def _resize_depth(depth: np.ndarray, pl: Placement) -> np.ndarray:
    depth = geo.resize_sparse_depth(depth, pl.content_size)  # (nh, nw) float32 metres, never interpolated
    return pad(depth, pl, DEPTH_PAD)


def _resize_det2d(det: Det2D, pl: Placement) -> Det2D:
    return dataclasses.replace(
        det,
        boxes=map_boxes(det.boxes, pl),
        ignore=map_boxes(det.ignore, pl),
        amodal=None if det.amodal is None else map_boxes(det.amodal, pl),
    )


def _resize_sign(sign: Sign, pl: Placement) -> Sign:
    if sign.roi is None:
        return sign
    roi = map_boxes(np.asarray(sign.roi, dtype=np.float64), pl)[0]
    return Sign(sign.class_id, tuple(float(v) for v in roi))


def _resize_lanes(lane: Lanes, pl: Placement) -> Lanes:
    # Redrawn from the scaled polylines: resampling a thin-line mask
    # would break the lines apart or thicken them unevenly.
    xs = np.where(lane.xs == NO_POINT, NO_POINT, geo.scale_pixel_coords(lane.xs, pl.sx) + pl.left)  # (N, R)
    h_samples = geo.scale_pixel_coords(lane.h_samples, pl.sy) + pl.top  # (R,)
    thickness = lane.thickness * min(pl.sx, pl.sy)
    mask = rasterize_lanes(xs, h_samples, pl.out_size, thickness)  # (H, W) uint8
    if pl.padded:
        (nh, nw), top, left = pl.content_size, pl.top, pl.left
        mask[:top] = IGNORE_INDEX
        mask[top + nh :] = IGNORE_INDEX
        mask[:, :left] = IGNORE_INDEX
        mask[:, left + nw :] = IGNORE_INDEX
    return Lanes(mask=mask, h_samples=h_samples, xs=xs, thickness=thickness)


#: task -> how its label follows a resize; det3d and steer are not geometric in pixels.
_RESIZERS: dict[str, Callable[[object, Placement], object]] = {
    "seg": _resize_seg,
    "depth": _resize_depth,
    "det2d": _resize_det2d,
    "sign": _resize_sign,
    "lane": _resize_lanes,
}


def place_labels(sample: Sample, pl: Placement, skip: tuple[str, ...] = ()) -> dict:
    """The sample's labels and ``K`` placed by ``pl``, as ``dataclasses.replace`` changes.

    Tasks the sample lacks, and those in ``skip`` (placed by the caller another way), are left
    out; the image is not touched (callers resize it).
    """
    changes = {
        task: fn(getattr(sample, task), pl)
        for task, fn in _RESIZERS.items()
        if getattr(sample, task) is not None and task not in skip
    }
    if sample.K is not None:
        changes["K"] = map_K(sample.K, pl)
    return changes
