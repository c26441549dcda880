"""The unified ``Sample`` record: one image and whatever labels its source provides.

An absent task is ``None`` (no label), never an empty label: a KITTI frame with no objects has a
``Det2D`` with zero boxes; a GTSRB crop has ``det2d = None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

#: the schema version ``meta.json`` carries in the samples this tool writes.
SCHEMA_VERSION = 2

#: the schema versions this tool reads, and what changed between them (nothing else did):
#: 1 = depth as ``depth.png`` (16-bit PNG of the whole frame);
#: 2 = depth as ``depth.pts`` (the measured pixels only, ``shards.depthpoints``).
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

#: the seven tasks, in the order their members are written to a shard.
TASKS: tuple[str, ...] = ("seg", "depth", "det2d", "det3d", "steer", "sign", "lane")

#: the tasks whose labels are class ids, named per source in the ``classes.json`` beside its shards.
CLASS_TASKS: tuple[str, ...] = ("seg", "det2d", "det3d", "sign")

#: value of an ignored pixel in ``seg`` and ``lane`` maps.
IGNORE_INDEX = 255

#: the most previous frames a sample carries (``--prev-frames N``, N <= this): ``prev1`` .. ``prev3``.
MAX_PREV_FRAMES = 3

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(source: str, split: str, native_id: str) -> str:
    """Stable sample key ``<source>_<split>_<native id>`` restricted to ``[A-Za-z0-9_-]``.

    Anything else (dots, slashes, spaces) becomes ``_``. Dots matter most: webdataset cuts a
    member name at its first dot, so a dotted key would silently merge samples.
    """
    return _KEY_UNSAFE.sub("_", f"{source}_{split}_{native_id}")


@dataclass(frozen=True)
class Det2D:
    """2D boxes in pixels of the stored image.

    Attributes:
        boxes: (N, 4) float64 ``[x1, y1, x2, y2]`` px, pixel-centre convention.
        classes: (N,) int64 class ids of the sample's detection taxonomy.
        ignore: (M, 4) float64 regions where detections are neither rewarded nor punished
            (KITTI ``DontCare``).
        truncated: (N,) float64 in [0, 1], or None when the source has none.
        occluded: (N,) int64 (KITTI: 0 visible, 1 partly, 2 largely, 3 unknown), or None.
        native_class: (N,) the source's own class names, or None.
        amodal: (N, 4) float64 full extent including occluded parts, where the source has it
            (Cityscapes-3D); ``boxes`` then hold the visible (modal) extent.
    """

    boxes: np.ndarray
    classes: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    truncated: np.ndarray | None = None
    occluded: np.ndarray | None = None
    native_class: tuple[str, ...] | None = None
    amodal: np.ndarray | None = None


@dataclass(frozen=True)
class Det3D:
    """3D boxes in the optical frame of the stored image (x right, y down, z forward).

    Attributes:
        boxes: (N, 7) float64 ``[x, y, z, l, w, h, yaw]``: geometric centre (m), length along
            the box x axis, width along z, height along y (m), rotation about optical y (rad).
        classes: (N,) int64 class ids (same taxonomy as ``Det2D``).
        rotation: (N, 3, 3) full rotation where the source has roll/pitch, else None.
        native_class: (N,) the source's own class names, or None.
    """

    boxes: np.ndarray
    classes: np.ndarray
    rotation: np.ndarray | None = None
    native_class: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Steer:
    """Steering-wheel angle at the image timestamp.

    Attributes:
        angle_deg: degrees, positive = left (counter-clockwise).
        speed_kmh: vehicle speed in km/h, or None.
        gap_ms: distance in time to the nearest bus sample used.
    """

    angle_deg: float
    speed_kmh: float | None
    gap_ms: float


@dataclass(frozen=True)
class Sign:
    """Traffic-sign class of a crop.

    Attributes:
        class_id: GTSRB class id (0..42).
        roi: ``[x1, y1, x2, y2]`` px of the sign inside the stored crop, or None.
    """

    class_id: int
    roi: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Lanes:
    """Lane instances.

    Attributes:
        mask: (H, W) uint8: 0 background, 1..N lanes ordered left to right at the image
            bottom, 255 ignore.
        h_samples: (R,) row coordinates px of the native polylines (TuSimple).
        xs: (N, R) column px per lane and row, -2 where the lane has no point.
        thickness: line width px the mask was drawn with (``schema.lanes.rasterize_lanes``), so
            resizing redraws the polylines instead of resampling the mask.
    """

    mask: np.ndarray
    h_samples: np.ndarray
    xs: np.ndarray
    thickness: float = 5.0


@dataclass(frozen=True)
class Sample:
    """One image with every label its source provides.

    Attributes:
        key: unique, stable, ``[A-Za-z0-9_-]`` (see ``make_key``).
        source: dataset name (``kitti``, ``a2d2`` ...).
        split: ``train``, ``val`` or ``test``.
        id: the source's own frame id.
        image: (H, W, 3) uint8 RGB.
        orig_size: (height, width) of the source image before any resizing.
        sequence: drive / scene / track / clip id, or None.
        K: (3, 3) float64 intrinsics of the stored image, or None.
        timestamp_us: microseconds, or None.
        seg: (H, W) uint8 class ids, 255 = ignore, or None.
        depth: (H, W) float32 metres along the optical axis, multiples of 1/256, 0 = none.
        det2d, det3d, steer, sign, lane: task labels, or None.
        extra: additional JSON-serializable ``meta.json`` keys (never overriding the standard ones).
        notes: counts of recoverable input problems in this frame (``seg_unknown_color_px``,
            ``steer_bus_gap`` ...): written to ``meta.json`` and summed per split in ingest.json.
        prev: the frames before this one, t-1 first (``prev[k - 1]`` is t-k), each (H, W, 3) uint8
            RGB of the stored image's size, through the same image path; consecutive: t-k is
            here only if t-1 .. t-k-1 are. Empty when the source has none or none was asked for.
    """

    key: str
    source: str
    split: str
    id: str
    image: np.ndarray
    orig_size: tuple[int, int]
    sequence: str | None = None
    K: np.ndarray | None = None
    timestamp_us: int | None = None
    seg: np.ndarray | None = None
    depth: np.ndarray | None = None
    det2d: Det2D | None = None
    det3d: Det3D | None = None
    steer: Steer | None = None
    sign: Sign | None = None
    lane: Lanes | None = None
    extra: dict = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    prev: tuple[np.ndarray, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the stored image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this sample has labels for, in ``TASKS`` order."""
        return tuple(t for t in TASKS if getattr(self, t) is not None)
