"""2D detection: a YOLO grid head, the YOLO loss, class-wise NMS, COCO AP, COCO JSON export.

The grid is the loader's (``data/targets.py``, YOLOv1, Redmon et al. 2016, "You Only Look Once:
Unified, Real-Time Object Detection"): S x S cells over the whole input image whatever its
aspect ratio, A box slots per cell, each slot ``[x, y, w, h, objectness, one-hot C]`` with x, y
the centre's offset inside its cell in [0, 1) and w, h the box size over the image size. The
head's raw output (B, S, S, A, 5 + C) is read as:

* ``x = sigmoid(t_x)``, ``y = sigmoid(t_y)``: the centre offset, bounded to its cell (YOLOv2's
  parameterisation, Redmon & Farhadi 2017; YOLOv1's linear offsets can leave the cell);
* ``t_w``, ``t_h`` are sqrt(w), sqrt(h) directly (YOLOv1: the network predicts the square roots,
  so the loss below is a plain square error on them); decoding uses ``max(t, 0)^2``;
* ``t_o``: objectness logit; ``t_c`` (C): class logits, softmax over the classes (the unified
  classes are mutually exclusive). Class-specific score = ``sigmoid(t_o) * softmax(t_c)_c``
  (YOLOv1's "class-specific confidence scores").

**Head** (``Det2DHead``): the stride-32 map -> conv3x3-BN-LeakyReLU(0.1) -> adaptive average
pooling to S x S -> conv3x3-BN-LeakyReLU(0.1) -> conv1x1 to A (5 + C). Adaptive pooling makes
the S x S grid from any input size and aspect ratio (a 256x512 input gives an 8x16 stride-32
map, pooled 1x2 per cell; a 64x128 one gives 2x4, repeated): its bins are the cells' own
extents rounded to feature pixels, so output cell (r, c) averages exactly the features of image
cell (r, c), the cell responsible for the boxes centred in it. The coarsest map has the largest
receptive field, as YOLOv1 predicted from its last 7x7 map. The conv on the pooled grid lets a
cell see its neighbours (YOLOv1's fully connected layers saw the whole image; a conv does not
depend on the input size). The objectness bias starts at logit(0.01) (the prior of RetinaNet,
Lin et al. 2017), so the 640 no-object slots do not swamp the first steps.

**Loss** (the thesis's eq. 3.6 = YOLOv1's, per sample):

    L_b = [ lambda_coord sum_obj ((x - x^)^2 + (y - y^)^2 + (sqrt w - t_w)^2 + (sqrt h - t_h)^2)
          + sum_obj BCE(t_o, 1) + lambda_noobj sum_noobj,kept BCE(t_o, 0)
          + sum_obj CE(t_c, class) ] / max(1, n_obj)

* **BCE with logits** for objectness and **softmax cross-entropy** for the class, instead of
  YOLOv1's square errors on probabilities (as YOLOv3 on, Redmon & Farhadi 2018): a square error
  on a sigmoid has a vanishing gradient exactly when the prediction is confidently wrong, and
  the log losses are computed stably from logits (fine under bf16 autocast, computed in fp32).
* **Normalisation** by the sample's object count, with at least 1 (YOLOX's ``num_fg``
  normalisation, Ge et al. 2021, per sample): the terms keep eq. 3.6's relative weights
  (lambda_coord = 5, lambda_noobj = 0.5 mean what they meant in YOLOv1), the loss does not grow
  with the number of objects in an image, and a sample without objects still has a finite loss
  (the no-object term alone). Samples that do not label det2d return 0 (their targets are zeros,
  so every term is finite before the multiplication), and ``masked_mean`` averages the rest.
* **Ignore regions** (KITTI DontCare, Cityscapes ignore): a no-object slot whose predicted box
  (detached) lies at least ``ignore_ioa`` inside an ignore region (intersection over the
  predicted box's area, the measure the COCO metric uses for crowd regions) has no no-object
  penalty. Those regions hold unlabelled objects; a detection there is neither a TP nor an FP
  at evaluation, so training does not punish it either (as YOLOv3 drops the no-object term of
  predictions overlapping a ground truth beyond ``ignore_thresh``). Object slots always learn.
  ``ignore_ioa > 1`` turns this off.
* Boxes the grid could not hold (``det2d_dropped``: a full cell) are no-object slots, as in
  YOLOv1.

**Decoding**: every (slot, class) pair with score > ``score_threshold`` is a candidate (0.001, the
usual setting for mAP, which integrates over low scores); the ``pre_nms_top_k`` best go through
class-wise NMS at IoU ``nms_iou`` (``ops.batched_nms``); the ``max_detections`` best survivors
(100, COCO's maxDets) are mapped to the stored image's pixels (``View``: undo letterbox, resize
and flip) and clipped to the stored image, ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` in the
pixel-centre convention. Decoding runs in float64 on the CPU.

**Metric** (``Det2DMetric``): COCO box AP as pycocotools 2.0 ``COCOeval`` computes it with
``iouType="bbox"`` (Lin et al. 2014, "Microsoft COCO: Common Objects in Context"), written here
in numpy and tested against pycocotools on the same files: area range "all", maxDets 100,
IoU thresholds ``linspace(.5, .95, 10)``, 101-point interpolated precision, ignore regions as
``iscrowd`` regions. ``map50`` (headline), ``map`` (mean over the ten thresholds), ``map75``,
``ap50/<class>``: per-class AP at 0.5, the mAPs averaging the classes that have ground truth
(NaN where pycocotools reports -1). ``mean_best_iou``: the "2D bounding box IOU" of the
reference thesis (its results table), for comparison with it only (``Det2DMetric``).

**Export**: ``det2d.json`` (COCO results) and ``det2d_gt.json`` (COCO ground truth of the same
images) in the predictions folder (``Det2DWriter``). ``pycocotools`` scores them directly.

**Picture** (``draw``): the detections scoring at least ``DRAW_SCORE_THRESHOLD`` (0.3; decoding
keeps everything above 0.001 for AP, which would bury a picture in boxes), each a rectangle in
its class's ``draw.distinct_colour`` tagged "<class name> <score>", the most confident on top.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.files import write_atomic
from mtl_data.schema.sample import Sample
from mtl_data.schema.taxonomy import DET_CLASSES
from mtl_data.train.draw import class_name, distinct_colours, draw_boxes
from mtl_data.train.ops.boxes import batched_nms
from mtl_data.train.tasks.base import (
    FeatureSpec,
    Metric,
    PredictionWriter,
    Task,
    register_task,
    sample_indices,
    view_of,
)

#: the COCO results file of a predictions folder, and the ground truth written beside it.
PREDICTIONS_FILE = "det2d.json"
GROUND_TRUTH_FILE = "det2d_gt.json"
#: ``draw`` shows the detections scoring at least this.
DRAW_SCORE_THRESHOLD = 0.3
#: COCO category id of class id c: c + CATEGORY_OFFSET (COCO's own ids start at 1; detection
#: frameworks such as torchvision's and Detectron's reserve label 0 for the background).
CATEGORY_OFFSET = 1

# ---- COCOeval's parameters (pycocotools/cocoeval.py, Params.setDetParams) ----------------------

#: IoU thresholds .50:.05:.95, built as pycocotools builds them (linspace, not arange).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: recall points of the interpolated precision, 0:.01:1.
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: area range "all" (px^2): GT outside it is ignored, unmatched detections outside it too.
AREA_RANGE = (0.0, 1e5**2)
#: detections per image and class that are evaluated (maxDets[-1]).
MAX_DETS = 100
#: pycocotools caps a threshold of 1 just below it.
_MAX_THRESHOLD = 1 - 1e-10


@dataclass(frozen=True)
class Det2DConfig:
    """Hyper-parameters of the det2d task.

    Attributes:
        grid: S of the S x S grid; must equal the loader's ``TargetConfig.grid``.
        anchors: A, box slots per cell; must equal ``TargetConfig.anchors``.
        channels: channels of the head's hidden convolutions.
        lambda_coord: weight of the box terms (YOLOv1's 5).
        lambda_noobj: weight of the no-object objectness term (YOLOv1's 0.5).
        ignore_ioa: a no-object slot whose predicted box lies at least this much inside an
            ignore region (intersection / its area) has no no-object penalty; > 1 disables.
        prior: the objectness probability the head starts at.
        score_threshold: candidates need a class-specific score above this (0.001 for mAP).
        pre_nms_top_k: at most this many candidates per image enter NMS (best scores first).
        nms_iou: class-wise NMS removes a box overlapping a better one of its class by IoU > this.
        max_detections: detections kept per image (COCO's maxDets, 100).
        best_iou_score: detections scoring at least this count in ``mean_best_iou``.
    """

    grid: int = 8
    anchors: int = 10
    channels: int = 256
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    ignore_ioa: float = 0.5
    prior: float = 0.01
    score_threshold: float = 0.001
    pre_nms_top_k: int = 1000
    nms_iou: float = 0.5
    max_detections: int = 100
    best_iou_score: float = 0.5

    def __post_init__(self) -> None:
        for name in ("grid", "anchors", "channels", "pre_nms_top_k", "max_detections"):
            if getattr(self, name) < 1:
                raise MtlDataError(f"det2d {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lambda_coord", "lambda_noobj", "ignore_ioa"):
            if not getattr(self, name) >= 0:
                raise MtlDataError(f"det2d {name} must be >= 0, got {getattr(self, name)}")
        for name in ("prior", "nms_iou"):
            if not 0 < getattr(self, name) < 1:
                raise MtlDataError(f"det2d {name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("score_threshold", "best_iou_score"):
            if not 0 <= getattr(self, name) <= 1:
                raise MtlDataError(f"det2d {name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Detections:
    """The boxes detected on one image, in the stored image's pixels.

    Attributes:
        boxes: (N, 4) float64 ``[x1, y1, x2, y2]`` px, pixel-centre convention (``Det2D``'s).
        scores: (N,) float64 in [0, 1]; ``decode`` lists them by decreasing score.
        classes: (N,) int64 class ids.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))


@dataclass(frozen=True)
class Det2DTruth:
    """The 2D box labels of one stored sample, as the metric reads them.

    Attributes:
        key: the sample key (the COCO image id; the metric orders images by it, as pycocotools).
        boxes: (N, 4) float64 ``[x1, y1, x2, y2]`` stored px.
        classes: (N,) int64 class ids.
        ignore: (M, 4) float64 ignore regions (KITTI DontCare), stored px: COCO crowd regions.
        size: (h, w) of the stored image.
    """

    key: str
    boxes: np.ndarray
    classes: np.ndarray
    ignore: np.ndarray
    size: tuple[int, int]


# ---- box geometry --------------------------------------------------------------------------------


def to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[x1, y1, x2, y2]`` (N, 4) -> COCO ``[x, y, w, h]`` with ``w = x2 - x1`` (N, 4) float64.

    The coordinates stay in the stored boxes' pixel-centre frame (COCO's corner frame shifted
    by half a pixel): IoU and area do not depend on a common translation, so scores equal those
    of shifted boxes, and the numbers are those of the shards (and of KITTI's label files).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])  # (N, 4)


def coco_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU (D, G) of ``[x, y, w, h]`` detections and ground truths, as pycocotools' ``bbIou``.

    Same arithmetic in the same order (right edge ``w + x``, union ``(da + ga) - i``), so the
    values are bit-identical to ``pycocotools.mask.iou``. A crowd GT's IoU is the intersection
    over the detection's area (COCO: a detection inside a crowd region matches it).
    """
    dt, gt = dt.reshape(-1, 4), gt.reshape(-1, 4)
    dx, dy, dw, dh = (v[:, None] for v in dt.T)  # (D, 1) each
    gx, gy, gw, gh = (v[None, :] for v in gt.T)  # (1, G) each
    iw = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)  # (D, G)
    ih = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = iw * ih
    da, ga = dw * dh, gw * gh
    union = np.where(np.asarray(crowd, dtype=bool)[None, :], da, da + ga - inter)  # (D, G)
    overlap = (iw > 0) & (ih > 0)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)  # (D, G)


def grid_boxes(raw: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes of every slot of a raw grid output, in the input image's pixels.

    The inverse of ``targets.encode_grid`` on the decoded values (module docstring): centre
    ``((col + sigmoid(t_x)) / S) W - 0.5``, size ``max(t_w, 0)^2 W``.

    Args:
        raw: (..., S, S, A, D >= 4) raw outputs.
        image_size: (H, W) of the input image.

    Returns:
        (..., S, S, A, 4) ``[x1, y1, x2, y2]`` px, pixel-centre convention.
    """
    h, w = image_size
    s = raw.shape[-3]
    cells = torch.arange(s, device=raw.device, dtype=raw.dtype)  # (S,)
    cx = (cells.view(s, 1) + torch.sigmoid(raw[..., 0])) / s * w - 0.5  # (..., S, S, A), cells along dim -2
    cy = (cells.view(s, 1, 1) + torch.sigmoid(raw[..., 1])) / s * h - 0.5  # rows along dim -3
    bw = raw[..., 2].clamp(min=0).square() * w
    bh = raw[..., 3].clamp(min=0).square() * h
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)  # (..., S, S, A, 4)


def _inside_ignore(boxes: torch.Tensor, regions: torch.Tensor, count: torch.Tensor, min_ioa: float) -> torch.Tensor:
    """(B, N) whether each box (B, N, 4) lies at least ``min_ioa`` inside a valid region (B, M, 4)."""
    lt = torch.maximum(boxes[:, :, None, :2], regions[:, None, :, :2])  # (B, N, M, 2)
    rb = torch.minimum(boxes[:, :, None, 2:], regions[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (B, N, M)
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))[:, :, None]  # (B, N, 1)
    ioa = torch.where(area > 0, inter / area.clamp(min=torch.finfo(area.dtype).tiny), torch.zeros_like(inter))
    valid = torch.arange(regions.shape[1], device=regions.device)[None, :] < count[:, None]  # (B, M)
    return ((ioa >= min_ioa) & valid[:, None, :]).any(dim=-1)  # (B, N)


# ---- the COCO metric -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
    """One image of the metric's state: detections and ground truth as COCO ``[x, y, w, h]``."""

    dt: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    dt_classes: np.ndarray  # (N,)
    gt: np.ndarray  # (G, 4)
    gt_classes: np.ndarray  # (G,)
    crowd: np.ndarray  # (R, 4) ignore regions, crowd GT of every class


@dataclass
class _Evaluated:
    """One (image, class) as COCOeval.evaluateImg leaves it."""

    scores: np.ndarray  # (D,) by decreasing score, at most MAX_DETS
    matched: np.ndarray  # (T, D) bool: matched a GT (regular or ignored) at threshold t
    ignored: np.ndarray  # (T, D) bool: matched an ignored GT, or unmatched outside the area range
    regular: int  # GT that count (not ignored)


def _take_best(free: np.ndarray, ious: np.ndarray, d: int, matched: np.ndarray, gt_taken: np.ndarray) -> np.ndarray:
    """Match detection ``d`` at each threshold to the free GT (T, G) of highest IoU (G,), the last
    one on equal IoU (COCOeval's ``>=`` update); returns (T,) whether it matched."""
    hit = free.any(axis=1)  # (T,)
    if hit.any():
        best = np.where(free, ious[None, :], -np.inf)  # (T, G)
        m = free.shape[1] - 1 - np.argmax(best[:, ::-1], axis=1)  # (T,) the last GT of the highest IoU
        matched[hit, d] = True
        gt_taken[hit, m[hit]] = True
    return hit


def _evaluate_image(img: _Image, k: int) -> _Evaluated | None:
    """COCOeval.evaluateImg for class ``k`` of one image (area "all", maxDets 100).

    Detections: the class's, stably sorted by decreasing score (file order on ties), the first
    MAX_DETS. Ground truth: the class's boxes in order, then the crowd regions, stably sorted
    with the ignored ones last. Each detection in turn, at each threshold t, takes the
    unmatched non-ignored GT with the highest IoU >= t (the last such GT on equal IoU, as the
    reference's ">=" update does); only when there is none, an ignored GT the same way (a crowd
    region may be matched any number of times). A detection matched to an ignored GT, or
    unmatched and outside the area range, is ignored.
    """
    d_idx = np.flatnonzero(img.dt_classes == k)
    d_idx = d_idx[np.argsort(-img.scores[d_idx], kind="mergesort")][:MAX_DETS]
    g_idx = np.flatnonzero(img.gt_classes == k)
    if d_idx.size == 0 and g_idx.size == 0 and len(img.crowd) == 0:
        return None
    gt = np.concatenate([img.gt[g_idx], img.crowd])  # (G, 4)
    crowd = np.r_[np.zeros(g_idx.size, bool), np.ones(len(img.crowd), bool)]  # (G,)
    area = gt[:, 2] * gt[:, 3]
    ignore = crowd | (area < AREA_RANGE[0]) | (area > AREA_RANGE[1])
    order = np.argsort(ignore, kind="mergesort")
    gt, crowd, ignore = gt[order], crowd[order], ignore[order]
    dt, scores = img.dt[d_idx], img.scores[d_idx]
    t_count, d_count = len(IOU_THRESHOLDS), len(d_idx)
    matched = np.zeros((t_count, d_count), bool)
    dt_ignored = np.zeros((t_count, d_count), bool)
    if d_count and len(gt):
        ious = coco_iou(dt, gt, crowd)  # (D, G)
        thresholds = np.minimum(IOU_THRESHOLDS, _MAX_THRESHOLD)  # (T,)
        reach_all = ious[:, None, :] >= thresholds[None, :, None]  # (D, T, G)
        gt_taken = np.zeros((t_count, len(gt)), bool)
        any_ignored = bool(ignore.any())
        # Only detections reaching the lowest threshold somewhere can match; the rest stay unmatched.
        for d in np.flatnonzero(reach_all[:, 0].any(axis=1)):
            reach = reach_all[d]  # (T, G)
            # Regular GT first; ignored GT only at thresholds without a regular match.
            free = reach & ~ignore[None, :] & ~gt_taken  # (T, G)
            hit = _take_best(free, ious[d], d, matched, gt_taken)  # (T,)
            if any_ignored and not hit.all():
                free = reach & ignore[None, :] & (crowd[None, :] | ~gt_taken) & ~hit[:, None]  # (T, G)
                dt_ignored[:, d] = _take_best(free, ious[d], d, matched, gt_taken)
    dt_area = dt[:, 2] * dt[:, 3]
    outside = (dt_area < AREA_RANGE[0]) | (dt_area > AREA_RANGE[1])  # (D,)
    dt_ignored |= ~matched & outside[None, :]
    return _Evaluated(scores, matched, dt_ignored, int((~ignore).sum()))


def _precision(evaluated: list[_Evaluated]) -> np.ndarray | None:
    """COCOeval.accumulate for one class: (T, R) interpolated precision, None without GT.

    Detections of all images (in key order) are stably sorted by decreasing score (ties keep
    image order, then per-image order); precision is made monotone from the right and read at
    the first detection whose recall reaches each recall point (0 beyond the last recall).
    """
    regular = sum(e.regular for e in evaluated)
    if regular == 0:
        return None
    scores = np.concatenate([e.scores for e in evaluated])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e.matched for e in evaluated], axis=1)[:, order]  # (T, D)
    ignored = np.concatenate([e.ignored for e in evaluated], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(float)  # (T, D)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    out = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS)))
    for t in range(len(IOU_THRESHOLDS)):
        recall = tp[t] / regular
        precision = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope: max over higher recalls
        at = np.searchsorted(recall, RECALL_POINTS, side="left")  # (R,)
        reached = at < len(precision)
        out[t, reached] = precision[at[reached]]
    return out


class Det2DMetric(Metric):
    """COCO box AP (pycocotools' ``COCOeval``, iouType "bbox") and the thesis's mean best IoU.

    State: per image (by key) its detections and ground truth. ``merge`` takes the union of the
    images (a key seen twice is an error), ``compute`` orders images by key as pycocotools orders
    image ids, so the result does not depend on ranks or merge order and equals pycocotools'
    on this folder's ``det2d.json`` / ``det2d_gt.json``. Matching follows ``_evaluate_image``
    and ``_precision``; ``map``, ``map50``, ``map75`` are the means over the (threshold, recall,
    class) entries of classes with ground truth, as ``COCOeval.summarize`` takes them (stats 0,
    1, 2); NaN where no class has ground truth (pycocotools: -1). ``ap50/<class>``: the class's
    AP at IoU 0.5, NaN without ground truth.

    ``mean_best_iou``, for comparison with the reference thesis's "2D bounding box IOU" (its
    eq. 3.5 and results table) only: for every ground-truth box (ignore regions excluded), the
    highest IoU with any detection of its image scoring at least ``best_iou_score``, whatever
    the detection's class (0 without one), averaged over all ground-truth boxes of all images
    (NaN without any). Class-agnostic because eq. 3.5 is a pure overlap and classes are scored by
    AP; a score floor because the 0.001 threshold used for mAP would let a cloud of
    low-confidence boxes cover every object. The thesis does not state its definition, so
    numbers are comparable in kind, not digit for digit.

    ``update`` ignores a sample without det2d labels (truth None); a missing prediction
    (None) is "nothing detected", as a COCO result file without the image.
    """

    def __init__(self, classes: Sequence[str], best_iou_score: float = 0.5) -> None:
        self.classes = tuple(classes)
        self.best_iou_score = best_iou_score
        self.images: dict[str, _Image] = {}

    def update(self, prediction: Detections | None, truth: Det2DTruth | None) -> None:
        if truth is None:
            return
        if truth.key in self.images:
            raise ValueError(f"sample {truth.key} was added to the det2d metric twice")
        prediction = Detections.empty() if prediction is None else prediction
        for name, ids in (("predicted", prediction.classes), ("ground-truth", truth.classes)):
            ids = np.asarray(ids, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= len(self.classes)):
                raise ValueError(f"{name} class ids {sorted(set(ids.tolist()))} outside 0..{len(self.classes) - 1}")
        self.images[truth.key] = _Image(
            dt=to_xywh(prediction.boxes),
            scores=np.asarray(prediction.scores, dtype=np.float64).reshape(-1),
            dt_classes=np.asarray(prediction.classes, dtype=np.int64).reshape(-1),
            gt=to_xywh(truth.boxes),
            gt_classes=np.asarray(truth.classes, dtype=np.int64).reshape(-1),
            crowd=to_xywh(truth.ignore),
        )

    def merge(self, other: Metric) -> None:
        if not isinstance(other, Det2DMetric):
            raise TypeError(f"cannot merge {type(other).__name__} into Det2DMetric")
        twice = sorted(self.images.keys() & other.images.keys())
        if twice:
            raise ValueError(f"det2d metrics to merge share {len(twice)} sample(s) (first: {twice[0]})")
        self.images.update(other.images)

    def compute(self) -> dict[str, float]:
        images = [self.images[key] for key in sorted(self.images)]
        per_class: list[np.ndarray | None] = []
        for k in range(len(self.classes)):
            evaluated = [e for e in (_evaluate_image(img, k) for img in images) if e is not None]
            per_class.append(_precision(evaluated))
        present = [p for p in per_class if p is not None]
        out = {"map50": math.nan, "map": math.nan, "map75": math.nan, "mean_best_iou": self._mean_best_iou(images)}
        if present:
            precision = np.stack(present, axis=-1)  # (T, R, K') classes with ground truth
            at75 = np.flatnonzero(IOU_THRESHOLDS == 0.75)
            out["map"] = float(np.mean(precision))
            out["map50"] = float(np.mean(precision[0]))
            out["map75"] = float(np.mean(precision[at75]))
        for name, p in zip(self.classes, per_class):
            out[f"ap50/{name}"] = math.nan if p is None else float(np.mean(p[0]))
        return out

    def _mean_best_iou(self, images: list[_Image]) -> float:
        best = []
        for img in images:
            if len(img.gt) == 0:
                continue
            dt = img.dt[img.scores >= self.best_iou_score]
            if len(dt) == 0:
                best.append(np.zeros(len(img.gt)))
                continue
            best.append(coco_iou(dt, img.gt, np.zeros(len(img.gt), bool)).max(axis=0))  # (G,)
        return float(np.mean(np.concatenate(best))) if best else math.nan


# ---- the head ------------------------------------------------------------------------------------


def _conv_bn_act(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class Det2DHead(nn.Module):
    """Stride-32 map -> conv3x3 -> adaptive pool to S x S -> conv3x3 -> conv1x1 (module docstring).

    ``head(features, image_size)`` returns (B, S, S, A, 5 + C) raw outputs whatever the input size.
    """

    def __init__(
        self, in_channels: int, level: int, channels: int, grid: int, anchors: int, num_classes: int, prior: float
    ):
        super().__init__()
        self.level, self.grid, self.anchors, self.depth = level, grid, anchors, 5 + num_classes
        self.stem = _conv_bn_act(in_channels, channels)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.mix = _conv_bn_act(channels, channels)
        self.predict = nn.Conv2d(channels, anchors * self.depth, 1)
        with torch.no_grad():
            bias = self.predict.bias.view(anchors, self.depth)  # (A, 5 + C) view of the bias
            bias.zero_()
            bias[:, 4] = math.log(prior / (1 - prior))

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        x = self.stem(features[self.level])  # (B, channels, H/32, W/32)
        x = self.mix(self.pool(x))  # (B, channels, S, S)
        x = self.predict(x)  # (B, A (5 + C), S, S)
        b, s = x.shape[0], self.grid
        return x.view(b, self.anchors, self.depth, s, s).permute(0, 3, 4, 1, 2)  # (B, S, S, A, 5 + C)


# ---- the task ------------------------------------------------------------------------------------


@register_task
class Det2DTask(Task):
    """2D boxes: YOLO grid head and loss, class-wise NMS, COCO AP, COCO JSON (module docstring)."""

    name: ClassVar[str] = "det2d"
    Config: ClassVar[type] = Det2DConfig
    metric_keys: ClassVar[tuple[str, ...]] = ("map50", "map", "map75", "mean_best_iou")
    higher_is_better: ClassVar[bool] = True
    class_table: ClassVar[str | None] = "det2d"
    default_classes: ClassVar[tuple[str, ...]] = DET_CLASSES
    requires_every_prediction: ClassVar[bool] = False

    # ---- model ---------------------------------------------------------------------------------

    def build_head(self, features: FeatureSpec) -> nn.Module:
        c = self.config
        level = features.strides.index(max(features.strides))  # the coarsest map
        return Det2DHead(features.channels, level, c.channels, c.grid, c.anchors, self.num_classes, c.prior)

    # ---- loss ----------------------------------------------------------------------------------

    def _check_layout(self, output: torch.Tensor, target: torch.Tensor) -> None:
        # Shapes only (static), never values: the graph does not depend on the batch.
        expected = (self.config.grid, self.config.grid, self.config.anchors, 5 + self.num_classes)
        if tuple(output.shape[1:]) != expected or tuple(target.shape[1:]) != expected:
            raise ValueError(
                f"det2d output {tuple(output.shape[1:])} / target {tuple(target.shape[1:])} must both be "
                f"(S, S, A, 5 + C) = {expected}: set the loader's TargetConfig grid, anchors and "
                f"num_classes to the task's"
            )

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample YOLO loss (B,) (module docstring); 0 for samples without det2d labels."""
        out = output.float()  # (B, S, S, A, 5 + C); the loss in float32 under autocast
        target = batch["det2d"].to(out.device, torch.float32)  # (B, S, S, A, 5 + C)
        self._check_layout(out, target)
        obj = batch["det2d_mask"].to(out.device, torch.float32)  # (B, S, S, A) 1 on object slots
        present = batch["present"][self.name].to(out.device, torch.float32)  # (B,)
        c = self.config
        xy = torch.sigmoid(out[..., 0:2])  # (B, S, S, A, 2)
        sqrt_wh = target[..., 2:4].clamp(min=0).sqrt()  # (B, S, S, A, 2)
        coord = (xy - target[..., 0:2]).square().sum(-1) + (out[..., 2:4] - sqrt_wh).square().sum(-1)  # (B, S, S, A)
        objectness = F.binary_cross_entropy_with_logits(out[..., 4], obj, reduction="none")  # (B, S, S, A)
        cls = -(target[..., 5:] * F.log_softmax(out[..., 5:], dim=-1)).sum(-1)  # (B, S, S, A), 0 off objects
        b, s, _, a, _ = out.shape
        with torch.no_grad():
            boxes = grid_boxes(out, tuple(batch["image"].shape[-2:])).view(b, s * s * a, 4)  # (B, N, 4) px
            regions = batch["det2d_ignore"].to(out.device, torch.float32)  # (B, M, 4) px
            count = batch["det2d_ignore_count"].to(out.device)  # (B,)
            kept = 1.0 - _inside_ignore(boxes, regions, count, c.ignore_ioa).view(b, s, s, a).float()  # (B, S, S, A)
        slot = (
            obj * (c.lambda_coord * coord + objectness + cls) + (1.0 - obj) * kept * c.lambda_noobj * objectness
        )  # (B, S, S, A)
        per_sample = slot.flatten(1).sum(1) / obj.flatten(1).sum(1).clamp(min=1.0)  # (B,)
        return per_sample * present  # (B,) finite: absent samples have all-zero targets

    # ---- predictions ---------------------------------------------------------------------------

    def decode(self, output: torch.Tensor, batch: Mapping[str, Any]) -> list[Detections | None]:
        """Detections per sample in stored-image pixels (module docstring); None for dummy slots."""
        c = self.config
        raw = output.detach().to("cpu", torch.float64)  # (B, S, S, A, 5 + C)
        boxes = grid_boxes(raw, tuple(batch["image"].shape[-2:])).flatten(1, 3)  # (B, N, 4) input px
        scores = (torch.sigmoid(raw[..., 4:5]) * torch.softmax(raw[..., 5:], dim=-1)).flatten(1, 3)  # (B, N, C)
        num_classes = scores.shape[-1]
        out: list[Detections | None] = [None] * raw.shape[0]
        for i in sample_indices(batch):
            flat = scores[i].reshape(-1)  # (N C,) slot-major
            candidates = torch.nonzero(flat > c.score_threshold).squeeze(1)  # (K,)
            best = torch.sort(flat[candidates], descending=True, stable=True).indices[: c.pre_nms_top_k]
            candidates = candidates[best]
            slot, cls = candidates // num_classes, candidates % num_classes  # (K,) each
            keep = batched_nms(boxes[i, slot], flat[candidates], cls, c.nms_iou)[: c.max_detections]
            out[i] = self._to_stored(
                boxes[i, slot[keep]].numpy(), flat[candidates[keep]].numpy(), cls[keep].numpy(), batch, i
            )
        return out

    @staticmethod
    def _to_stored(
        boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, batch: Mapping[str, Any], index: int
    ) -> Detections:
        view = view_of(batch, index)
        h, w = view.placement.src_size
        xs = view.to_stored_x(boxes[:, 0::2])  # (K, 2) a flip swaps the edges
        ys = view.to_stored_y(boxes[:, 1::2])
        stored = np.column_stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)]).reshape(-1, 4)  # (K, 4)
        stored[:, 0::2] = stored[:, 0::2].clip(-0.5, w - 0.5)
        stored[:, 1::2] = stored[:, 1::2].clip(-0.5, h - 0.5)
        return Detections(stored, scores.astype(np.float64), classes.astype(np.int64))

    def ground_truth(self, sample: Sample) -> Det2DTruth | None:
        det = sample.det2d
        if det is None:
            return None
        return Det2DTruth(
            key=sample.key,
            boxes=np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4),
            classes=np.asarray(det.classes, dtype=np.int64).reshape(-1),
            ignore=np.asarray(det.ignore, dtype=np.float64).reshape(-1, 4),
            size=sample.size,
        )

    def metric(self) -> Det2DMetric:
        return Det2DMetric(self.classes, self.config.best_iou_score)

    def writer(self, out_dir: Path) -> Det2DWriter:
        return Det2DWriter(out_dir, self.classes)

    def draw(self, image: np.ndarray, prediction: Detections | None, sample: Sample) -> np.ndarray:
        """The detections scoring ``DRAW_SCORE_THRESHOLD`` or more as tagged boxes (module docstring);
        None draws nothing, as an empty prediction."""
        det = Detections.empty() if prediction is None else prediction
        keep = np.flatnonzero(np.asarray(det.scores) >= DRAW_SCORE_THRESHOLD)
        classes = np.asarray(det.classes, dtype=np.int64)[keep]
        names = [class_name(self.classes, c) for c in classes]
        return draw_boxes(
            image,
            np.asarray(det.boxes).reshape(-1, 4)[keep],
            names,
            distinct_colours(classes),
            np.asarray(det.scores)[keep],
        )

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / PREDICTIONS_FILE).is_file()

    def read_predictions(self, pred_dir: Path) -> dict[str, Detections]:
        return read_det2d_json(Path(pred_dir) / PREDICTIONS_FILE, len(self.classes))


# ---- export ----------------------------------------------------------------------------------------


def _json_list(entries: list[dict]) -> str:
    """A JSON array with one entry per line (diffable, and the entry index is the line - 1)."""
    return "[\n" + ",\n".join(json.dumps(e, allow_nan=False) for e in entries) + "\n]\n"


class Det2DWriter(PredictionWriter):
    """``det2d.json`` (COCO results) and ``det2d_gt.json`` (COCO ground truth) of the samples added.

    Results: ``{"image_id": <key>, "category_id": class + 1, "bbox": [x, y, w, h], "score": s}``,
    images in key order, each image's detections in the prediction's order. Ground truth:
    ``images`` (``id`` = key, ``width``, ``height`` of the stored image), ``annotations`` (ids from
    1, ``bbox``, ``area`` = w h, ``iscrowd`` 0; every ignore region once per category with
    ``iscrowd`` 1, because a COCO crowd region only absorbs detections of its own category and
    DontCare has no class), ``categories`` (``id`` = class + 1, ``name``).

    Conventions: ``bbox`` is ``[x1, y1, x2 - x1, y2 - y1]`` in stored-image pixels in the
    project's pixel-centre frame (``to_xywh``); ids start at 1 because pycocotools records
    "unmatched" as id 0; image ids are the sample keys (strings: pycocotools accepts them; tools
    that insist on COCO's integer ids need a mapping). Samples without det2d labels are left out
    of both files: COCO has no "unlabelled image", and pycocotools would count their
    detections as false positives (or refuse them). Both files are written when the writer
    closes, atomically; pycocotools cannot load a results file without any detection (its
    ``loadRes`` reads the first entry), which the project's metric handles (AP 0).
    """

    def __init__(self, out_dir: Path, classes: Sequence[str]):
        super().__init__(out_dir)
        self.classes = tuple(classes)
        self.images: dict[str, tuple[Detections, Sample]] = {}

    def add(self, key: str, prediction: Detections | None, sample: Sample) -> None:
        if sample.det2d is None:
            return
        if key in self.images:
            raise ValueError(f"det2d prediction of sample {key} written twice")
        self.images[key] = (Detections.empty() if prediction is None else prediction, sample)

    def close(self) -> None:
        results, images, annotations = [], [], []
        categories = [{"id": k + CATEGORY_OFFSET, "name": name} for k, name in enumerate(self.classes)]
        for key in sorted(self.images):
            prediction, sample = self.images[key]
            h, w = sample.size
            images.append({"id": key, "width": w, "height": h})
            for box, score, cls in zip(
                to_xywh(prediction.boxes).tolist(), prediction.scores.tolist(), prediction.classes.tolist()
            ):
                results.append(
                    {"image_id": key, "category_id": int(cls) + CATEGORY_OFFSET, "bbox": box, "score": float(score)}
                )
            det = sample.det2d
            for box, cls in zip(to_xywh(det.boxes).tolist(), np.asarray(det.classes).tolist()):
                annotations.append(
                    {
                        "image_id": key,
                        "category_id": int(cls) + CATEGORY_OFFSET,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
            for box in to_xywh(det.ignore).tolist():
                annotations.extend(
                    {"image_id": key, "category_id": cat["id"], "bbox": box, "area": box[2] * box[3], "iscrowd": 1}
                    for cat in categories
                )
        for n, ann in enumerate(annotations, start=1):
            ann["id"] = n
        truth = {
            "info": {
                "description": "mtl-data det2d ground truth: bbox [x, y, w, h] in stored-image pixels, "
                "pixel-centre frame; ignore regions as iscrowd=1 of every category"
            },
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        write_atomic(self.out_dir / GROUND_TRUTH_FILE, json.dumps(truth, allow_nan=False) + "\n")
        write_atomic(self.out_dir / PREDICTIONS_FILE, _json_list(results))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_entry(entry: Any, num_classes: int) -> tuple[str, list[float], float, int]:
    """(key, [x, y, w, h], score, class id) of one results entry.

    Raises:
        TypeError, ValueError: saying what is wrong with the entry.
    """
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    missing = [f for f in ("image_id", "category_id", "bbox", "score") if f not in entry]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    key, category, bbox, score = entry["image_id"], entry["category_id"], entry["bbox"], entry["score"]
    if not isinstance(key, str) or not key:
        raise TypeError(f"image_id must be a sample key (non-empty string), got {key!r}")
    if not isinstance(category, int) or isinstance(category, bool):
        raise TypeError(f"category_id must be an integer, got {category!r}")
    if not CATEGORY_OFFSET <= category < num_classes + CATEGORY_OFFSET:
        raise ValueError(
            f"unknown category_id {category} (known: {CATEGORY_OFFSET}..{num_classes - 1 + CATEGORY_OFFSET})"
        )
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise TypeError(f"bbox must be [x, y, w, h] of 4 finite numbers, got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"bbox width and height must be >= 0, got {bbox!r}")
    if not _is_number(score):
        raise TypeError(f"score must be a finite number, got {score!r}")
    return key, [float(v) for v in bbox], float(score), category - CATEGORY_OFFSET


def read_det2d_json(path: Path, num_classes: int) -> dict[str, Detections]:
    """The detections of a COCO results file by sample key (boxes ``[x, y, x + w, y + h]``).

    Each image's detections keep the file's order (the metric sorts them stably by score, as
    pycocotools does). A key without entries is absent (nothing detected).

    Raises:
        MtlDataError: a missing or malformed file, naming it (and the entry index).
    """
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MtlDataError(f"{path}: cannot read the det2d predictions ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise MtlDataError(f"{path}: not JSON ({exc}); expected a COCO results list") from None
    if not isinstance(doc, list):
        raise MtlDataError(
            f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...], "
            f"got a JSON {type(doc).__name__}"
        )
    grouped: dict[str, tuple[list, list, list]] = {}
    for index, entry in enumerate(doc):
        try:
            key, bbox, score, cls = _parse_entry(entry, num_classes)
        except (TypeError, ValueError) as exc:
            raise MtlDataError(f"{path}: entry {index}: {exc}") from None
        boxes, scores, classes = grouped.setdefault(key, ([], [], []))
        x, y, w, h = bbox
        boxes.append([x, y, x + w, y + h])
        scores.append(score)
        classes.append(cls)
    return {
        key: Detections(
            np.asarray(b, dtype=np.float64).reshape(-1, 4),
            np.asarray(s, dtype=np.float64),
            np.asarray(c, dtype=np.int64),
        )
        for key, (b, s, c) in grouped.items()
    }
