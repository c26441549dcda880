"""Fixed-shape training targets: one transformed ``Sample`` -> an example, examples -> a batch.

``encode_example`` runs in loader workers and returns numpy arrays in their smallest exact
dtype (uint8 image and class maps, depth uint16 ``round(metres * 256)`` as stored); ``collate``
stacks them into torch tensors and converts dtypes once, vectorized over the batch. Keeping the
narrow dtypes until the batch makes what a worker sends 2-8x smaller (a 256x512 image is
384 KiB as uint8, 1.5 MiB as float32; a seg map 128 KiB vs 1 MiB as int64; depth 256 KiB vs
512 KiB as float32). ``collate(examples, compact=True)`` keeps them narrow all the way, for a
trainer that widens on the GPU with ``expand``; ``collate(..., out=slot)`` writes the dense
arrays into preallocated tensors (a loader worker's shared-memory ring, ``stages.BatchRing``).

The batch (design.md section 6). B samples, (H, W) = ``TargetConfig.image_size``,
S = ``grid``, A = ``anchors``, C = ``num_classes``, M = ``max_boxes``. Every configured task
has its keys in every batch with a fixed shape; where a sample lacks the task they hold zeros
(box classes: -1 padding) and ``present[task]`` is False, so losses must be masked by
``present`` (and by the ignore values inside dense labels).

=====================  ================  ========  ==========================================
key                    shape             dtype     content
=====================  ================  ========  ==========================================
``image``              (B, 3, H, W)      float32   RGB, ``(x / 255 - mean) / std`` ImageNet
``image_prev``         (B, N, 3, H, W)   float32   previous frames t-1..t-N, as ``image``; zeros
                                                   where absent (only with ``prev_frames`` N > 0)
``prev_present``       (B, N)            bool      whether the sample has frame t-k
``key``, ``source``    list of B str               sample key / dataset ("" for a dummy)
``present``            dict task->(B,)   bool      True where the sample labels the task
``K``                  (B, 3, 3)         float32   intrinsics of the output image, px; zeros if unknown
``K_known``            (B,)              bool      whether ``K`` is known
``size``               (B, 2)            int64     (h, w) of the stored image; 0 for a dummy
``scale``              (B, 2)            float32   (sy, sx): output px per stored px; 0 for a dummy
``offset``             (B, 2)            float32   (top, left) letterbox padding, px
``flipped``            (B,)              bool      mirrored after the placement (``View``)
``seg``                (B, H, W)         int64     unified class id, 255 ignore
``depth``              (B, H, W)         float32   metres along the optical axis, 0 = none (exact:
                                                   the stored ``round(m * 256)`` / 256)
``det2d``              (B, S, S, A, 5+C) float32   YOLO target, see below
``det2d_mask``         (B, S, S, A)      bool      object mask of the grid slots
``det2d_boxes``        (B, M, 4)         float32   ``[x1, y1, x2, y2]`` px (pixel centres), 0 padding
``det2d_classes``      (B, M)            int64     class id, -1 padding
``det2d_count``        (B,)              int64     valid rows of ``det2d_boxes``
``det2d_ignore``       (B, M, 4)         float32   ignore regions px, 0 padding
``det2d_ignore_count`` (B,)              int64     valid rows of ``det2d_ignore``
``det2d_dropped``      (B,)              int64     boxes of the sample missing from the grid
``det3d_boxes``        (B, M, 7)         float32   ``[x, y, z, l, w, h, yaw]`` m / rad, optical frame
``det3d_classes``      (B, M)            int64     class id, -1 padding
``det3d_count``        (B,)              int64     valid rows of ``det3d_boxes``
``det3d_dropped``      (B,)              int64     boxes beyond M, not in ``det3d_boxes``
``det3d_rotation``     (B, M, 3, 3)      float32   the box's rotation: the source's full one, else R_y(yaw)
``det3d_full``         (B, M)            bool      the row's rotation is the source's own (pitch, roll known)
``steer``              (B,)              float32   steering-wheel angle, degrees, + = left
``sign``               (B,)              int64     GTSRB class id
``lane``               (B, H, W)         int64     0 background, 1..N lanes left to right, 255 ignore
``lane_h``             (B, R)            float32   rows of the lane polylines, px; 0 padding
``lane_rows``          (B,)              int64     valid entries of ``lane_h``
``lane_xs``            (B, L, R)         float32   x px per lane and row, -2 = no point; 0 padding
``lane_count``         (B,)              int64     valid lanes of ``lane_xs`` (the first L kept)
=====================  ================  ========  ==========================================

``size``, ``scale``, ``offset`` and ``flipped`` say where each output pixel came from in the
stored image (``transforms.View``), so predictions can be written back in stored pixels, as the
benchmarks' own tools read them. R = ``lane_rows``, L = ``max_lanes``.

Decisions:

* **Raw box lists** keep the first M boxes in the sample's order (det2d and det3d alike), so a
  KITTI row i of ``det2d_boxes`` and of ``det3d_boxes`` is still the same object.
* **YOLO grid** (YOLOv1, Redmon et al. 2016, "You Only Look Once"): the image spans
  ``[-0.5, W - 0.5]`` (pixel-centre convention), so a box centre cx maps to
  ``u = (cx + 0.5) / W`` in [0, 1). The box goes to cell ``(row, col) = (floor(v S), floor(u S))``;
  within a cell boxes take slots 0..A-1 by descending area (ties: sample order). The vector is
  ``[u S - col, v S - row, (x2 - x1) / W, (y2 - y1) / H, 1, one-hot C]``. Only the M kept boxes
  are gridded; a box whose centre is outside the image, or that finds its cell full, is
  dropped. ``det2d_dropped`` = boxes of the sample - boxes in the grid. ``decode_grid`` is the
  exact inverse.
* **Ignore regions** beyond M are left out (``det2d_ignore_count`` = min(n, M)).
* ``K`` is carried whatever the tasks (depth and 3D detection need it).
* Absent labels are zeros as the design says (seg / lane zeros are class 0, not ignore):
  ``present`` is the mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from mtl_data.schema.geometry import DEPTH_SCALE, yaw_to_rotation
from mtl_data.schema.sample import TASKS, Sample
from mtl_data.schema.taxonomy import DET_CLASSES
from mtl_data.train.data.transforms import View

#: ImageNet statistics of RGB in [0, 1] (torchvision's pretrained weights expect them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: padding of box class ids.
PAD_CLASS = -1


@dataclass(frozen=True)
class TargetConfig:
    """What a batch carries and how detection targets are laid out.

    Attributes:
        tasks: the tasks batches carry (a subset of ``schema.sample.TASKS``).
        image_size: (H, W) of the images and dense labels (the transform's output size).
        grid: S, the YOLO grid is S x S cells.
        anchors: A, box slots per cell (the reference thesis used 8 x 8 x 10).
        num_classes: C, detection classes (one-hot length).
        max_boxes: M, padded raw boxes per sample (det2d, its ignore regions, det3d).
        max_lanes: L, lane polylines per sample (TuSimple has at most 5 or 6).
        lane_rows: R, polyline rows per sample (TuSimple: 48 or 56).
        prev_frames: N, previous frames per sample (``image_prev`` (N, ...) and
            ``prev_present`` (N,)); 0 = none, and the batch has neither key.
    """

    tasks: tuple[str, ...] = TASKS
    image_size: tuple[int, int] = (256, 512)
    grid: int = 8
    anchors: int = 10
    num_classes: int = len(DET_CLASSES)
    max_boxes: int = 64
    max_lanes: int = 8
    lane_rows: int = 64
    prev_frames: int = 0

    def __post_init__(self) -> None:
        if self.prev_frames < 0:
            raise ValueError(f"prev_frames must be >= 0, got {self.prev_frames}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; allowed: {', '.join(TASKS)}")
        for name in ("grid", "anchors", "num_classes", "max_boxes", "max_lanes", "lane_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))


# ---- the YOLO grid ---------------------------------------------------------------------------


def encode_grid(
    boxes: np.ndarray, classes: np.ndarray, image_size: tuple[int, int], grid: int, anchors: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Assign boxes to an S x S x A grid (see the module docstring).

    Args:
        boxes: (N, 4) ``[x1, y1, x2, y2]`` px of an image of ``image_size``.
        classes: (N,) ids in ``0..num_classes-1``.
        image_size: (H, W).
        grid, anchors, num_classes: S, A, C.

    Returns:
        ``(target, mask)``: (S, S, A, 5 + C) float32 and (S, S, A) bool. Boxes without a slot
        are not in them (count them as ``N - mask.sum()``).

    Raises:
        ValueError: a class id is outside ``0..num_classes-1``.
    """
    h, w = image_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"box class ids {sorted(set(classes.tolist()))} outside 0..{num_classes - 1} "
            f"(TargetConfig.num_classes={num_classes})"
        )
    target = np.zeros((grid, grid, anchors, 5 + num_classes), dtype=np.float32)
    mask = np.zeros((grid, grid, anchors), dtype=bool)
    u = ((boxes[:, 0] + boxes[:, 2]) / 2 + 0.5) / w * grid  # (N,) centre in cell units
    v = ((boxes[:, 1] + boxes[:, 3]) / 2 + 0.5) / h * grid
    inside = (u >= 0) & (u < grid) & (v >= 0) & (v < grid)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return target, mask
    col, row = np.floor(u[idx]).astype(np.int64), np.floor(v[idx]).astype(np.int64)
    area = (boxes[idx, 2] - boxes[idx, 0]) * (boxes[idx, 3] - boxes[idx, 1])
    cell = row * grid + col
    order = np.lexsort((idx, -area, cell))  # by cell, then larger first, then sample order
    cell_sorted = cell[order]
    first = np.r_[True, cell_sorted[1:] != cell_sorted[:-1]]  # start of each cell's run
    run_start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    slot = np.arange(order.size) - run_start  # (n,) rank inside the cell
    keep = slot < anchors
    sel, slot = order[keep], slot[keep]
    r, c, b = row[sel], col[sel], idx[sel]
    vec = target[r, c, slot]  # (k, 5 + C) gathered copy, written back below
    vec[:, 0] = u[b] - c
    vec[:, 1] = v[b] - r
    vec[:, 2] = (boxes[b, 2] - boxes[b, 0]) / w
    vec[:, 3] = (boxes[b, 3] - boxes[b, 1]) / h
    vec[:, 4] = 1.0
    vec[np.arange(b.size), 5 + classes[b]] = 1.0
    target[r, c, slot] = vec
    mask[r, c, slot] = True
    return target, mask


def decode_grid(grid, mask, image_size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inverse of ``encode_grid``: the boxes and classes held by masked slots.

    Args:
        grid: (B, S, S, A, 5 + C) or (S, S, A, 5 + C) target (numpy or CPU torch).
        mask: (B, S, S, A) or (S, S, A) bool.
        image_size: (H, W) the boxes are in.

    Returns:
        Per sample ``(boxes, classes)``: (K, 4) float64 px and (K,) int64, in cell order (row,
        column, slot).
    """
    grid, mask = np.asarray(grid), np.asarray(mask, dtype=bool)
    if grid.ndim == 4:
        grid, mask = grid[None], mask[None]
    h, w = image_size
    s = grid.shape[1]
    out = []
    for target, valid in zip(grid, mask):
        r, c, a = np.nonzero(valid)
        vec = target[r, c, a].astype(np.float64)  # (K, 5 + C)
        cx = (c + vec[:, 0]) / s * w - 0.5
        cy = (r + vec[:, 1]) / s * h - 0.5
        bw, bh = vec[:, 2] * w, vec[:, 3] * h
        boxes = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]).reshape(-1, 4)
        out.append((boxes, np.argmax(vec[:, 5:], axis=1).astype(np.int64)))
    return out


# ---- one example -----------------------------------------------------------------------------


def _pad_rows(values: np.ndarray, rows: int, width: int, dtype, fill) -> np.ndarray:
    out = np.full((rows, width) if width else (rows,), fill, dtype=dtype)
    n = min(rows, len(values))
    out[:n] = values[:n]
    return out


def _det2d_fields(sample: Sample | None, config: TargetConfig) -> dict:
    det = None if sample is None else sample.det2d
    m = config.max_boxes
    boxes = np.zeros((0, 4)) if det is None else np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.zeros(0, np.int64) if det is None else np.asarray(det.classes, dtype=np.int64)
    ignore = np.zeros((0, 4)) if det is None else np.asarray(det.ignore, dtype=np.float64).reshape(-1, 4)
    kept = min(len(boxes), m)
    grid, mask = encode_grid(
        boxes[:kept], classes[:kept], config.image_size, config.grid, config.anchors, config.num_classes
    )
    return {
        "det2d": grid,  # (S, S, A, 5 + C) float32
        "det2d_mask": mask,  # (S, S, A) bool
        "det2d_boxes": _pad_rows(boxes, m, 4, np.float32, 0.0),  # (M, 4) px
        "det2d_classes": _pad_rows(classes, m, 0, np.int64, PAD_CLASS),  # (M,)
        "det2d_count": np.int64(kept),
        "det2d_ignore": _pad_rows(ignore, m, 4, np.float32, 0.0),  # (M, 4) px
        "det2d_ignore_count": np.int64(min(len(ignore), m)),
        "det2d_dropped": np.int64(len(boxes) - int(mask.sum())),
    }


def _det3d_fields(sample: Sample | None, config: TargetConfig) -> dict:
    det = None if sample is None else sample.det3d
    m = config.max_boxes
    boxes = np.zeros((0, 7)) if det is None else np.asarray(det.boxes, dtype=np.float64).reshape(-1, 7)
    classes = np.zeros(0, np.int64) if det is None else np.asarray(det.classes, dtype=np.int64)
    kept = min(len(boxes), m)
    rotation = np.zeros((m, 3, 3), np.float32)
    full = np.zeros(m, bool)
    if kept:
        if det.rotation is not None:
            rotation[:kept] = np.asarray(det.rotation, dtype=np.float64).reshape(-1, 3, 3)[:kept]
            full[:kept] = True
        else:
            rotation[:kept] = yaw_to_rotation(boxes[:kept, 6])
    return {
        "det3d_boxes": _pad_rows(boxes, m, 7, np.float32, 0.0),  # (M, 7) m / rad
        "det3d_classes": _pad_rows(classes, m, 0, np.int64, PAD_CLASS),  # (M,)
        "det3d_count": np.int64(kept),
        "det3d_dropped": np.int64(max(0, len(boxes) - m)),
        "det3d_rotation": rotation,  # (M, 3, 3)
        "det3d_full": full,  # (M,)
    }


def _dense_field(
    name: str, dtype, label_of: Callable[[Sample], np.ndarray | None]
) -> Callable[[Sample | None, TargetConfig], dict]:
    def fields(sample: Sample | None, config: TargetConfig) -> dict:
        label = None if sample is None else label_of(sample)
        if label is None:
            return {name: np.zeros(config.image_size, dtype=dtype)}  # (H, W)
        return {name: np.asarray(label, dtype=dtype)}  # (H, W), no copy when already dtype

    return fields


def _lane_fields(sample: Sample | None, config: TargetConfig) -> dict:
    label = None if sample is None else sample.lane
    rows, lanes = config.lane_rows, config.max_lanes
    h = np.zeros(rows, np.float32)
    xs = np.zeros((lanes, rows), np.float32)
    n_rows = n_lanes = 0
    if label is not None:
        n_rows, n_lanes = len(label.h_samples), min(len(label.xs), lanes)
        if n_rows > rows:
            raise ValueError(
                f"sample {sample.key} has lane polylines of {n_rows} rows; TargetConfig.lane_rows is {rows}: raise it"
            )
        h[:n_rows] = label.h_samples
        xs[:n_lanes, :n_rows] = np.asarray(label.xs, dtype=np.float64).reshape(-1, n_rows)[:n_lanes]
    mask = np.zeros(config.image_size, np.uint8) if label is None else np.asarray(label.mask, dtype=np.uint8)
    return {
        "lane": mask,  # (H, W) uint8
        "lane_h": h,  # (R,) px
        "lane_rows": np.int64(n_rows),
        "lane_xs": xs,  # (L, R) px, NO_POINT where a lane has no point, 0 padding
        "lane_count": np.int64(n_lanes),
    }


def _view_fields(sample: Sample | None, view: View | None) -> dict:
    if sample is None:
        return {
            "size": np.zeros(2, np.int64),
            "scale": np.zeros(2, np.float32),
            "offset": np.zeros(2, np.float32),
            "flipped": np.bool_(False),
        }
    view = View.identity(sample.size) if view is None else view
    pl = view.placement
    return {
        "size": np.asarray(pl.src_size, np.int64),  # (2,) stored (h, w)
        "scale": np.asarray([pl.sy, pl.sx], np.float32),  # (2,)
        "offset": np.asarray([pl.top, pl.left], np.float32),  # (2,) px
        "flipped": np.bool_(view.flipped),
    }


def _steer_fields(sample: Sample | None, config: TargetConfig) -> dict:
    label = None if sample is None else sample.steer
    return {"steer": np.float32(0.0 if label is None else label.angle_deg)}


def _sign_fields(sample: Sample | None, config: TargetConfig) -> dict:
    label = None if sample is None else sample.sign
    return {"sign": np.int64(0 if label is None else label.class_id)}


def _depth_units(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth -> uint16 ``round(metres * DEPTH_SCALE)``: the loader's maps are uint16
    already (``transforms``, from ``depth.pts``); a float metres map (a sample built in memory)
    is rounded as the codec stores it, which is exact for any depth that came from a shard."""
    if depth.dtype == np.uint16:
        return depth
    scaled = np.asarray(depth, dtype=np.float32) * np.float32(DEPTH_SCALE)
    return np.rint(scaled, out=scaled).astype(np.uint16)


#: task -> its example fields (from a sample, or zeros for None / a sample without the task).
_TASK_FIELDS: dict[str, Callable[[Sample | None, TargetConfig], dict]] = {
    "seg": _dense_field("seg", np.uint8, lambda s: s.seg),
    "depth": _dense_field("depth", np.uint16, lambda s: None if s.depth is None else _depth_units(s.depth)),
    "det2d": _det2d_fields,
    "det3d": _det3d_fields,
    "steer": _steer_fields,
    "sign": _sign_fields,
    "lane": _lane_fields,
}


def encode_example(
    sample: Sample | None, config: TargetConfig, view: View | None = None, prev: Sequence[np.ndarray] = ()
) -> dict:
    """Fixed-shape numpy arrays (and 'key'/'source' str) for one sample; None -> a masked dummy
    (key "", source "", every present False, zeros).

    Args:
        sample: a sample already transformed to ``config.image_size``, or None.
        config: the tasks and target layout.
        view: where the sample's pixels came from (``transforms.transform_view``); None = the
            sample is as stored (identity).
        prev: the sample's previous frames, t-1 first, transformed with it
            (``transforms.transform_frames``): at most ``config.prev_frames`` are used.

    Returns:
        The per-sample version of the batch (module docstring) with numpy values: ``image``
        (H, W, 3) uint8, ``seg`` / ``lane`` (H, W) uint8, ``depth`` (H, W) uint16
        ``round(metres * 256)``, scalars as numpy scalars, ``present`` a dict task -> bool;
        with ``config.prev_frames`` N > 0, ``image_prev`` (N, H, W, 3) uint8 (zeros where the
        sample has no such frame) and ``prev_present`` (N,) bool.

    Raises:
        ValueError: the sample is not ``config.image_size`` (run the transform first).
    """
    if sample is not None and sample.size != config.image_size:
        raise ValueError(
            f"sample {sample.key} is {sample.size[0]}x{sample.size[1]}, the targets are "
            f"{config.image_size[0]}x{config.image_size[1]}: transform it to image_size first"
        )
    example: dict = {
        "key": "" if sample is None else sample.key,
        "source": "" if sample is None else sample.source,
        "image": np.zeros(config.image_size + (3,), np.uint8) if sample is None else sample.image,  # (H, W, 3)
        "present": {t: sample is not None and getattr(sample, t) is not None for t in config.tasks},
        "K": np.zeros((3, 3), np.float32)
        if sample is None or sample.K is None
        else np.asarray(sample.K, dtype=np.float32),  # (3, 3) px
        "K_known": np.bool_(sample is not None and sample.K is not None),
        **_view_fields(sample, view),
    }
    if config.prev_frames:
        frames = np.zeros((config.prev_frames, *config.image_size, 3), np.uint8)  # (N, H, W, 3)
        have = min(len(prev), config.prev_frames) if sample is not None else 0
        for k in range(have):
            frames[k] = prev[k]
        example["image_prev"] = frames
        example["prev_present"] = np.arange(config.prev_frames) < have  # (N,) bool
    for task in config.tasks:
        example.update(_TASK_FIELDS[task](sample, config))
    return example


# ---- the batch -------------------------------------------------------------------------------

#: batch dtypes that differ from the example's, and the factor applied on widening: class maps
#: travel as uint8 (losses want int64), depth as uint16 ``round(m * 256)`` (metres = / 256, exact).
_WIDEN: dict[str, tuple[torch.dtype, float | None]] = {
    "seg": (torch.int64, None),
    "lane": (torch.int64, None),
    "depth": (torch.float32, 1.0 / DEPTH_SCALE),
}
_STRING_KEYS = ("key", "source")
_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) RGB -> float32 ``(x / 255 - mean) / std`` (ImageNet), on its device."""
    mean = torch.from_numpy(_MEAN).to(images.device).view(1, 3, 1, 1)
    std = torch.from_numpy(_STD).to(images.device).view(1, 3, 1, 1)
    out = images.to(torch.float32, memory_format=torch.contiguous_format)  # (B, 3, H, W)
    return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def _stack_images(images: list[np.ndarray], normalize: bool, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 images -> (B, 3, H, W), float32 normalized or uint8 (into ``out`` if given).

    Per channel plane with numpy ufuncs writing into the batch: 2.4x faster on one core than
    torch's permute + convert + normalize of the stacked batch (10 vs 23 ms for 32 x 256 x 512).
    """
    h, w = images[0].shape[:2]
    if out is None:
        out = np.empty((len(images), 3, h, w), dtype=np.float32 if normalize else np.uint8)  # (B, 3, H, W)
    scale, offset = 1.0 / (255.0 * _STD), -_MEAN / _STD  # (3,) float32
    for b, image in enumerate(images):
        for c, plane in enumerate(cv2.split(image)):  # (H, W) uint8, contiguous
            if normalize:
                np.multiply(plane, scale[c], out=out[b, c], casting="unsafe")
                out[b, c] += offset[c]
            else:
                out[b, c] = plane
    return out


def collate(
    examples: list[dict], normalize: bool = True, compact: bool = False, out: dict[str, torch.Tensor] | None = None
) -> dict:
    """Stack examples into the batch contract (torch tensors).

    Conversions run in numpy, once per batch (uint8 -> int64 class maps, uint16 -> float32
    metres, uint8 -> normalized float32 image): numpy's are about 3x faster than torch's on one
    CPU core.

    Args:
        examples: outputs of ``encode_example`` with one ``TargetConfig`` (same keys and shapes).
        normalize: True gives the float32 normalized ``image``; False keeps it uint8
            (B, 3, H, W) for ``normalize_images`` on the device.
        compact: the loader's wire format between worker and main process: the image, the class
            maps (``seg``, ``lane``) and ``depth`` stay in their example dtypes (``normalize``
            is ignored), 2-8x fewer bytes through shared memory; ``expand`` turns it into the
            contract.
        out: compact only: preallocated (B', ...) tensors of some keys, B' >= len(examples), of
            the example dtype (``stages.BatchRing``); those keys are written into them and the
            batch holds ``out[key][:B]``, so nothing is allocated or copied again.

    Returns:
        The batch dict of the module docstring.

    Raises:
        ValueError: no examples, or examples with different keys / tasks.
    """
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    keys, tasks = examples[0].keys(), examples[0]["present"].keys()
    for ex in examples[1:]:
        if ex.keys() != keys or ex["present"].keys() != tasks:
            raise ValueError(
                f"examples differ: {sorted(keys)} / tasks {sorted(tasks)} vs {sorted(ex.keys())} / "
                f"tasks {sorted(ex['present'])}; encode them with one TargetConfig"
            )
    n = len(examples)
    slots = {k: v[:n] for k, v in (out or {}).items()} if compact else {}
    if "image" in slots:
        _stack_images([ex["image"] for ex in examples], False, slots["image"].numpy())
        image = slots["image"]
    else:
        image = torch.from_numpy(_stack_images([ex["image"] for ex in examples], normalize and not compact))
    if "image_prev" in keys:  # (B, N, H, W, 3) -> (B, N, 3, H, W), as the image
        frames = [f for ex in examples for f in ex["image_prev"]]
        if "image_prev" in slots:
            prev_out = slots["image_prev"]
            _stack_images(frames, False, prev_out.numpy().reshape(-1, *prev_out.shape[2:]))
        else:
            stacked = _stack_images(frames, normalize and not compact)  # (B * N, 3, H, W)
            prev_out = torch.from_numpy(stacked.reshape(n, -1, *stacked.shape[1:]))
    batch: dict = {
        "image": image,
        "present": {t: torch.tensor([ex["present"][t] for ex in examples], dtype=torch.bool) for t in tasks},
    }
    batch.update({k: [ex[k] for ex in examples] for k in _STRING_KEYS})
    if "image_prev" in keys:
        batch["image_prev"] = prev_out
    for key in keys:
        if key in batch:
            continue
        values = [np.asarray(ex[key]) for ex in examples]
        if key in slots:
            np.stack(values, out=slots[key].numpy())  # (B, ...) straight into the slot
            batch[key] = slots[key]
        elif key in _WIDEN and not compact:
            batch[key] = _widen(torch.from_numpy(np.stack(values)), key)
        else:
            batch[key] = torch.from_numpy(np.stack(values))  # (B, ...)
    return batch


def _widen(tensor: torch.Tensor, key: str) -> torch.Tensor:
    dtype, factor = _WIDEN[key]
    if tensor.dtype == dtype:
        return tensor
    wide = uint16_to(tensor, dtype) if tensor.dtype == torch.uint16 else tensor.to(dtype)
    return wide if factor is None else wide.mul_(factor)


def uint16_to(tensor: torch.Tensor, dtype: torch.dtype, via_bits: bool | None = None) -> torch.Tensor:
    """A uint16 tensor converted to ``dtype``, exactly, on any device.

    torch's unsigned 16-bit type has few kernels outside the CPU; there (``via_bits``, None =
    off the CPU) the bits are read as int16, widened to int32 and masked back to 0..65535 with
    ops every backend has.
    """
    if not (tensor.device.type != "cpu" if via_bits is None else via_bits):
        return tensor.to(dtype)
    return tensor.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF).to(dtype)


def expand(batch: dict) -> dict:
    """A ``collate(..., compact=True)`` batch -> the contract, on whatever device it is.

    uint8 images are normalized (``normalize_images``), uint8 class maps become int64, uint16
    depth float32 metres; a batch already in the contract comes back unchanged. Every widened
    tensor is new (none aliases the compact batch, whose dense arrays may live in a worker's
    reused shared memory). Runs in the main process, or on the GPU after a copy of the compact
    batch, where the wide tensors are needed.
    """
    out = dict(batch)
    if out["image"].dtype == torch.uint8:
        out["image"] = normalize_images(out["image"])  # (B, 3, H, W) float32
    if "image_prev" in out and out["image_prev"].dtype == torch.uint8:
        prev = out["image_prev"]  # (B, N, 3, H, W) uint8
        out["image_prev"] = normalize_images(prev.flatten(0, 1)).view(prev.shape)  # float32
    for key in _WIDEN.keys() & out.keys():
        out[key] = _widen(out[key], key)  # (B, H, W) int64 / float32 metres
    return out
