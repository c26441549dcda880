"""Lane detection: lane-slot segmentation, TuSimple polylines, the TuSimple benchmark's metric.

**Head** (LaneNet's instance segmentation by fixed slots, Neven et al. 2018, "Towards End-to-End
Lane Detection: an Instance Segmentation Approach"; the same "one output channel per lane
position" formulation as SCNN, Pan et al. 2018, "Spatial As Deep: Spatial CNN for Traffic Scene
Understanding"): the stride-4 map (``LaneConfig.stride``) -> conv3x3-BN-ReLU -> conv1x1 to ``1 + L`` channels ->
bilinear upsampling to the input size. Channel 0 is background, channel k the k-th lane from the
left at the image bottom (``lane.png``'s ids, ``docs/conventions.md`` "TuSimple"), so the slot
of a lane is its position, not a learned embedding, and decoding needs no clustering.

**Loss**: per-pixel cross-entropy over the ``1 + L`` slots; 255 (letterbox padding, ignore) and
ids above L (lanes the slots cannot hold) are ignored. Each sample's loss is the weighted mean
over its non-ignored pixels (PyTorch's ``reduction="mean"`` with class weights, per sample): 0
when every pixel is ignored. Background takes ``background_weight`` (0.4, SCNN's value for
lane segmentation): lane pixels are ~2-3 % of a TuSimple frame, and unweighted CE learns to
predict background everywhere first.

**Decoding** to TuSimple polylines in stored-image pixels: argmax per pixel; pixels outside the
letterbox content are background; for every slot and every output row with at least
``min_row_pixels`` pixels of the slot, x = the mean column of those pixels (the centre of the
drawn line on that row). A stored row y is sampled at its output row y' (fractional) by linear
interpolation between the two neighbouring output rows (the nearer one alone when only it has
pixels, none when neither is within half a row), then x is mapped back with ``View``
(``to_stored_x``: letterbox, scale, un-flip) and clipped to ``[0, w - 1]`` (the evaluator reads
any negative x as "no point"). Rows without a point are -2. The rows are the sample's own
``h_samples`` when it has lane labels (the batch carries them in output pixels, ``lane_h``; mapped
back and rounded to 0.01 px, since ``lane_h`` is float32), else every ``row_step`` stored rows
from 0 (TuSimple's 10 px grid). Lanes with fewer than ``min_lane_points`` points are dropped;
of the rest the ``max_output_lanes`` with most points are kept; lanes are listed left to right in
the stored image (a flipped view reverses the slot order).

**Metric** (TuSimple, ``evaluate/lane.py`` ``LaneEval`` of github.com/TuSimple/tusimple-benchmark,
commit 365c4cd, and its ``doc/lane_detection/readme.md``), per image (``tusimple_bench``):

* the prediction must have one x per GT ``h_sample`` (else the official script raises; here a
  ``LaneFormatError``, an ``MtlDataError``); a run time over 200 ms or more than ``#gt + 2``
  predicted lanes scores (accuracy 0, FP 0, FN 1);
* per GT lane: angle = arctan of the slope of a least-squares line x(y) through its points with
  x >= 0 (0 with fewer than two points); threshold = 20 / cos(angle) px;
* a predicted lane's accuracy on a GT lane = (# rows with |x_pred - x_gt| < threshold) / R over
  ALL R rows, where any negative x (-2) of either is read as -100: rows where both have no point
  count as correct, a point against no point is wrong (unless the threshold exceeds the gap);
* each GT lane takes the best accuracy over the predicted lanes (a prediction may serve several
  GT lanes); it is matched when that is >= 0.85. FP = #pred - #matched GT lanes (negative when
  one prediction matches two GT lanes, as in the official code); FN = #unmatched GT lanes;
* with more than 4 GT lanes one FN is forgiven and the worst lane's accuracy is dropped;
* accuracy = sum of the GT lanes' best accuracies (matched or not) / max(min(4, #gt), 1);
  FP rate = FP / #pred (0 without predictions); FN rate = FN / max(min(#gt, 4), 1);
* the totals are the means of the per-image values over the images with lane labels.

The comparison runs in the **native** image's pixels (``Sample.orig_size``): a shard ingested with
``--max-side`` keeps its polylines scaled, and the 20 px tolerance is the benchmark's, at its
1280x720 resolution, so stored coordinates are mapped back with the pixel-centre rule before
the test (identity for a full-size ingest).

**Lane IoU** is the binary IoU of lane pixels (any lane id) against background, 255 excluded,
summed over the dataset (intersection and union pixel counts, as Cityscapes' IoU), in stored
pixels. The predicted pixels are the predicted polylines redrawn with the ground truth's
``thickness`` (``schema.lanes.rasterize_lanes``, the drawing that made ``lane.png``), so the
value is the same from ``decode`` and from ``lane.json`` alone (``mtl-train score``).

**Export**: ``lane.json`` in the predictions folder, TuSimple's submission format, one JSON
object per line: ``{"raw_file": <sample key>, "lanes": [[x, ...], ...], "h_samples": [...],
"run_time": <ms>}`` (x in stored pixels, -2 = no point; ``run_time`` is 0: the trainer does not
time single images). Written atomically when the writer closes.

**Picture** (``draw``): each predicted lane as a polyline through its points (rows without a
point break it), lane k (left to right) in ``draw.distinct_colour(k)``, twice the image's
``draw.line_thickness`` wide (a lane is a thin line; the width of its drawing is not measured).
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

from mtl_data.errors import InputError, MtlDataError
from mtl_data.files import write_atomic
from mtl_data.schema.lanes import NO_POINT, rasterize_lanes
from mtl_data.schema.sample import IGNORE_INDEX, Sample
from mtl_data.train.draw import distinct_colour, draw_polyline, line_thickness
from mtl_data.train.tasks.base import (
    FeatureSpec,
    Metric,
    PredictionWriter,
    Task,
    register_task,
    sample_indices,
    to_numpy,
    view_of,
)

#: the predictions file of a predictions folder.
PREDICTIONS_FILE = "lane.json"

# ---- the TuSimple benchmark's constants (evaluate/lane.py, LaneEval) ---------------------------

#: a point is correct when |x_pred - x_gt| < PIXEL_THRESHOLD / cos(lane angle), native px.
PIXEL_THRESHOLD = 20.0
#: a GT lane is matched when at least this share of its rows is correct.
POINT_THRESHOLD = 0.85
#: frames predicted slower than this (ms) count as "no lanes".
MAX_RUN_TIME_MS = 200.0
#: more predicted lanes than #gt + this scores the frame as "no lanes".
EXTRA_LANES = 2
#: GT lanes that count in the accuracy's denominator (the ego lane and its neighbours).
COUNTED_LANES = 4
#: the evaluator's stand-in for a negative x (no point) before taking differences.
ABSENT_X = -100.0
#: rows of a prediction may differ from the GT's by this much (px): float32 batch rows, 0.01 px rounding.
ROW_TOLERANCE = 0.05


class LaneFormatError(MtlDataError, ValueError):
    """A lane prediction that does not fit its ground truth (other rows, lanes of another length).

    An ``MtlDataError`` (the official evaluator raises "Format of lanes error" too) and a
    ``ValueError``, the error ``Metric.update`` raises for a prediction that does not fit its
    sample, so ``mtl-train score`` reports it with the sample's key.
    """


@dataclass(frozen=True)
class LaneConfig:
    """Hyper-parameters of the lane task.

    Attributes:
        max_lanes: L, lane slots of the head; ids above L are ignored by the loss. Match the
            loader's ``TargetConfig.max_lanes``.
        channels: channels of the head's hidden 3x3 convolution.
        background_weight: cross-entropy weight of the background slot (lane slots weigh 1),
            SCNN's 0.4.
        min_row_pixels: pixels of a slot on an output row for that row to give a point.
        min_lane_points: sampled points for a decoded lane to be kept.
        max_output_lanes: at most this many lanes per image (those with most points); TuSimple
            labels at most 5 and scores more than #gt + 2 predicted lanes as a miss.
        row_step: stored rows between sampled rows of an image without lane labels (TuSimple's 10).
        stride: the feature map the head reads (4: the finest of a ResNet/FPN neck; thin lanes
            need it; ``tag-realtime`` has only stride 8).
    """

    max_lanes: int = 8
    channels: int = 64
    background_weight: float = 0.4
    min_row_pixels: int = 1
    min_lane_points: int = 3
    max_output_lanes: int = 5
    row_step: int = 10
    stride: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.max_lanes <= 254:
            raise MtlDataError(f"lane max_lanes must be in 1..254 (255 is the ignore id), got {self.max_lanes}")
        for name in ("channels", "min_row_pixels", "min_lane_points", "max_output_lanes", "row_step", "stride"):
            if getattr(self, name) < 1:
                raise MtlDataError(f"lane {name} must be >= 1, got {getattr(self, name)}")
        if not self.background_weight > 0:
            raise MtlDataError(f"lane background_weight must be > 0, got {self.background_weight}")


@dataclass(frozen=True)
class LanePrediction:
    """The lanes predicted on one image, TuSimple-style, in stored-image pixels.

    Attributes:
        h_samples: (R,) float64 rows px.
        lanes: (N, R) float64 x px per lane and row, -2 (``NO_POINT``) where a lane has no point;
            left to right.
        run_time_ms: time to predict the image (the benchmark's ``run_time``), 0 = not measured.
    """

    h_samples: np.ndarray
    lanes: np.ndarray
    run_time_ms: float = 0.0


@dataclass(frozen=True)
class LaneTruth:
    """The lane labels of one stored sample, as the metric reads them.

    Attributes:
        h_samples: (R,) float64 rows px of the stored image.
        lanes: (N, R) float64 x px of the stored image, -2 where a lane has no point.
        mask: (H, W) uint8 stored ``lane.png``: 0 background, 1..N lanes, 255 ignore.
        thickness: line width px the mask was drawn with.
        native_scale: (ky, kx) native px per stored px (``orig_size / size``; 1 unless the
            shards were ingested with ``--max-side``).
    """

    h_samples: np.ndarray
    lanes: np.ndarray
    mask: np.ndarray
    thickness: float
    native_scale: tuple[float, float] = (1.0, 1.0)


# ---- the TuSimple rules ------------------------------------------------------------------------


def lane_threshold(xs: np.ndarray, h_samples: np.ndarray) -> float:
    """The TuSimple tolerance of one GT lane: ``20 / cos(angle)`` px.

    The angle is arctan of the slope of the least-squares line x = k y + b through the lane's
    points with x >= 0 (``LinearRegression`` in the official code); 0 with fewer than 2 points.
    """
    valid = xs >= 0
    if valid.sum() < 2:
        return PIXEL_THRESHOLD
    x, y = xs[valid], h_samples[valid]
    dy = y - y.mean()
    spread = float(np.dot(dy, dy))
    slope = float(np.dot(dy, x - x.mean())) / spread if spread > 0 else 0.0  # x on y least squares
    return PIXEL_THRESHOLD / math.cos(math.atan(slope))


def tusimple_bench(
    pred: np.ndarray, gt: np.ndarray, h_samples: np.ndarray, run_time_ms: float = 0.0
) -> tuple[float, float, float]:
    """(accuracy, FP rate, FN rate) of one image under TuSimple's rules (module docstring).

    Args:
        pred: (P, R) predicted x px, any negative value = no point.
        gt: (G, R) GT x px, any negative value = no point.
        h_samples: (R,) rows px, in the same pixels as the x values.
        run_time_ms: the image's prediction time.

    Raises:
        LaneFormatError: a predicted lane does not have R values (the official "Format of lanes error").
    """
    h_samples = np.asarray(h_samples, dtype=np.float64).reshape(-1)
    rows = h_samples.size
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.size == 0:
        pred = pred.reshape(0, rows)
    if gt.size == 0:
        gt = gt.reshape(0, rows)
    if pred.ndim != 2 or pred.shape[1] != rows or gt.ndim != 2 or gt.shape[1] != rows:
        raise LaneFormatError(
            f"lane format error: predicted lanes {pred.shape} and GT lanes {gt.shape} must both "
            f"have one x per h_sample ({rows})"
        )
    n_pred, n_gt = pred.shape[0], gt.shape[0]
    if run_time_ms > MAX_RUN_TIME_MS or n_pred > n_gt + EXTRA_LANES:
        return 0.0, 0.0, 1.0
    thresholds = np.array([lane_threshold(lane, h_samples) for lane in gt])  # (G,)
    p = np.where(pred >= 0, pred, ABSENT_X)  # (P, R)
    g = np.where(gt >= 0, gt, ABSENT_X)  # (G, R)
    correct = np.abs(p[None, :, :] - g[:, None, :]) < thresholds[:, None, None]  # (G, P, R)
    accs = correct.sum(axis=2) / rows  # (G, P) share of correct rows
    best = accs.max(axis=1) if n_pred else np.zeros(n_gt)  # (G,)
    matched = int((best >= POINT_THRESHOLD).sum())
    fn = n_gt - matched
    fp = n_pred - matched
    total = float(best.sum())
    if n_gt > COUNTED_LANES:
        # The fifth lane is only labelled while changing lanes: forgive one miss and the worst lane.
        fn = fn - 1 if fn > 0 else fn
        total -= float(best.min())
    counted = max(min(COUNTED_LANES, n_gt), 1)
    return total / counted, (fp / n_pred if n_pred else 0.0), fn / counted


def _to_native(coords: np.ndarray, scale: float) -> np.ndarray:
    """Stored px -> native px (pixel-centre rule), negative values (no point) kept."""
    coords = np.asarray(coords, dtype=np.float64)
    if scale == 1.0:
        return coords
    return np.where(coords >= 0, (coords + 0.5) * scale - 0.5, coords)


def _check_rows(prediction: LanePrediction, truth: LaneTruth) -> None:
    ph, th = np.asarray(prediction.h_samples, np.float64), np.asarray(truth.h_samples, np.float64)
    if ph.shape != th.shape or not np.allclose(ph, th, rtol=0.0, atol=ROW_TOLERANCE):
        raise LaneFormatError(
            f"lane prediction at {ph.size} rows {_short(ph)}, but the ground truth asks for "
            f"{th.size} "
            f"rows {_short(th)}: predict at the ground truth's h_samples (the TuSimple evaluator "
            f"rejects lanes of another length)"
        )
    lanes = np.asarray(prediction.lanes)
    if lanes.size and (lanes.ndim != 2 or lanes.shape[1] != ph.size):
        raise LaneFormatError(
            f"lane prediction lanes of shape {lanes.shape} for {ph.size} h_samples: every lane needs one x per h_sample"
        )


def _short(values: np.ndarray) -> str:
    text = ", ".join(f"{v:g}" for v in values[:4])
    return f"[{text}{', ...' if values.size > 4 else ''}]"


def _lane_pixels(lanes: np.ndarray, h_samples: np.ndarray, size: tuple[int, int], thickness: float) -> np.ndarray:
    """(H, W) bool: pixels covered by any of ``lanes`` drawn as ``lane.png`` is drawn."""
    lanes = np.asarray(lanes, dtype=np.float64).reshape(-1, len(h_samples))
    lanes = np.where(lanes >= 0, lanes, NO_POINT)  # any negative x is "no point", as the evaluator reads it
    out = np.zeros(size, dtype=bool)
    for start in range(0, lanes.shape[0], 254):  # uint8 ids: draw at most 254 lanes at a time
        out |= rasterize_lanes(lanes[start : start + 254], h_samples, size, thickness) > 0
    return out


class LaneMetric(Metric):
    """TuSimple accuracy / FP / FN (``tusimple_bench`` per image, averaged) and binary lane IoU.

    ``update`` raises ``LaneFormatError`` for a prediction at rows other than the truth's
    ``h_samples`` (within ``ROW_TOLERANCE``) or without a prediction for a labelled sample.

    State: the per-image (accuracy, FP, FN) values and the IoU's intersection and union pixel
    counts. Means are taken with ``math.fsum`` (exactly rounded), so the result does not depend
    on how images fell on ranks or in which order states merge. ``update`` ignores a sample
    without lane labels (truth None).
    """

    def __init__(self) -> None:
        self.per_image: list[tuple[float, float, float]] = []
        self.intersection = 0
        self.union = 0

    def update(self, prediction: LanePrediction | None, truth: LaneTruth | None) -> None:
        if truth is None:
            return
        if prediction is None:
            raise LaneFormatError(
                "no lane prediction for a sample with lane labels (the TuSimple evaluator needs one per labelled image)"
            )
        _check_rows(prediction, truth)
        ky, kx = truth.native_scale
        rows = _to_native(truth.h_samples, ky)
        self.per_image.append(
            tusimple_bench(_to_native(prediction.lanes, kx), _to_native(truth.lanes, kx), rows, prediction.run_time_ms)
        )
        gt = (truth.mask > 0) & (truth.mask != IGNORE_INDEX)
        valid = truth.mask != IGNORE_INDEX
        pred = _lane_pixels(prediction.lanes, truth.h_samples, truth.mask.shape, truth.thickness)
        self.intersection += int((pred & gt & valid).sum())
        self.union += int(((pred | gt) & valid).sum())

    def merge(self, other: Metric) -> None:
        if not isinstance(other, LaneMetric):
            raise TypeError(f"cannot merge {type(other).__name__} into LaneMetric")
        self.per_image.extend(other.per_image)
        self.intersection += other.intersection
        self.union += other.union

    def compute(self) -> dict[str, float]:
        n = len(self.per_image)
        acc, fp, fn = (math.fsum(v[k] for v in self.per_image) / n if n else math.nan for k in range(3))
        return {"accuracy": acc, "fp": fp, "fn": fn, "iou": self.intersection / self.union if self.union else math.nan}


# ---- the head ----------------------------------------------------------------------------------


class LaneHead(nn.Module):
    """Map ``index`` (stride 4 by default) -> conv3x3-BN-ReLU -> conv1x1 (1 + L) -> bilinear to the input size.

    ``head(features, image_size)`` returns (B, 1 + L, H, W) logits: background, then the lane
    slots left to right.
    """

    def __init__(self, in_channels: int, channels: int, slots: int, index: int = 0):
        super().__init__()
        self.index = index
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, slots, 1)

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        x = self.block(features[self.index])  # (B, channels, H/s, W/s), s = LaneConfig.stride
        x = self.classifier(x)  # (B, 1 + L, H/s, W/s)
        return F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False)  # (B, 1 + L, H, W)


# ---- decoding ----------------------------------------------------------------------------------


def _row_centres(ids: np.ndarray, slots: int, min_pixels: int) -> np.ndarray:
    """(slots, H) mean column of each slot's pixels on each row of ``ids`` (H, W); NaN below
    ``min_pixels`` pixels."""
    h, w = ids.shape
    rows, cols = np.indices((h, w))
    bins = ids.astype(np.int64) * h + rows  # (H, W) slot-major (slot, row) bin
    count = np.bincount(bins.ravel(), minlength=slots * h)[: slots * h].reshape(slots, h)
    total = np.bincount(bins.ravel(), weights=cols.ravel(), minlength=slots * h)[: slots * h].reshape(slots, h)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= min_pixels, total / np.maximum(count, 1), np.nan)  # (slots, H)


def _sample_rows(centres: np.ndarray, rows_out: np.ndarray) -> np.ndarray:
    """(S, R) x at fractional output rows: linear between the two neighbouring rows' centres,
    else the nearer row's when it lies within half a row, else NaN."""
    s, h = centres.shape
    padded = np.concatenate([centres, np.full((s, 1), np.nan)], axis=1)  # (S, H + 1); column H = outside
    r0 = np.floor(rows_out).astype(np.int64)  # (R,)
    t = rows_out - r0  # (R,) in [0, 1)
    i0 = np.where((r0 >= 0) & (r0 < h), r0, h)
    i1 = np.where((r0 + 1 >= 0) & (r0 + 1 < h), r0 + 1, h)
    x0, x1 = padded[:, i0], padded[:, i1]  # (S, R)
    both = (1.0 - t) * x0 + t * x1
    only0 = np.where(t <= 0.5, x0, np.nan)
    only1 = np.where(t >= 0.5, x1, np.nan)
    return np.where(np.isfinite(both), both, np.where(np.isfinite(x0), only0, only1))  # (S, R)


@register_task
class LaneTask(Task):
    """TuSimple lanes: slot segmentation head, weighted CE, polylines, TuSimple metric (module docstring)."""

    name: ClassVar[str] = "lane"
    Config: ClassVar[type] = LaneConfig
    metric_keys: ClassVar[tuple[str, ...]] = ("accuracy", "fp", "fn", "iou")
    higher_is_better: ClassVar[bool] = True

    # ---- model ---------------------------------------------------------------------------------

    def build_head(self, features: FeatureSpec) -> nn.Module:
        stride = self.config.stride
        if stride not in features.strides:
            raise MtlDataError(
                f"the lane head reads the stride-{stride} map, the neck gives strides {features.strides}"
            )
        return LaneHead(
            features.channels, self.config.channels, 1 + self.config.max_lanes, features.strides.index(stride)
        )

    # ---- loss ----------------------------------------------------------------------------------

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample weighted CE over the non-ignored pixels (B,); 0 where all are ignored."""
        logits = output.float()  # (B, 1 + L, H, W); CE in float32 under autocast
        slots = logits.shape[1]
        target = batch["lane"].to(logits.device)  # (B, H, W) int64
        target = torch.where(target >= slots, torch.full_like(target, IGNORE_INDEX), target)  # ids > L: ignore
        weight = torch.ones(slots, device=logits.device)
        weight[0] = self.config.background_weight
        ce = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
        valid = target != IGNORE_INDEX  # (B, H, W)
        pixel_weight = weight[target.clamp(max=slots - 1)] * valid  # (B, H, W)
        denom = pixel_weight.sum(dim=(1, 2))  # (B,)
        return ce.sum(dim=(1, 2)) / denom.clamp(min=torch.finfo(denom.dtype).tiny)  # (B,), 0 / tiny = 0

    # ---- predictions ---------------------------------------------------------------------------

    def decode(self, output: torch.Tensor, batch: Mapping[str, Any]) -> list[LanePrediction | None]:
        ids_all = to_numpy(output.argmax(dim=1).to(torch.uint8))  # (B, H, W) slot per pixel
        slots = output.shape[1]
        rows_valid = batch.get("lane_rows")
        out: list[LanePrediction | None] = [None] * ids_all.shape[0]
        for i in sample_indices(batch):
            view = view_of(batch, i)
            pl = view.placement
            (h, w), out_w, (nh, nw) = pl.src_size, pl.out_size[1], pl.content_size
            ids = ids_all[i].copy()  # (H, W)
            left = (out_w - pl.left - nw) if view.flipped else pl.left  # the content's columns after a flip
            ids[: pl.top] = 0  # letterbox padding is not image: no lane there
            ids[pl.top + nh :] = 0
            ids[:, :left] = 0
            ids[:, left + nw :] = 0
            n_rows = 0 if rows_valid is None else int(rows_valid[i])
            if n_rows:
                rows_out = to_numpy(batch["lane_h"][i, :n_rows]).astype(np.float64)  # (R,) output px
                h_samples = np.round(view.to_stored_y(rows_out), 2)  # (R,) stored px
            else:
                h_samples = np.arange(0, h, self.config.row_step, dtype=np.float64)  # (R,) stored px
                rows_out = (h_samples + 0.5) * pl.sy - 0.5 + pl.top  # (R,) output px
            centres = _row_centres(ids, slots, self.config.min_row_pixels)[1:]  # (L, H) output px
            xs_out = _sample_rows(centres, rows_out)  # (L, R) output px, NaN = no point
            xs = np.clip(view.to_stored_x(xs_out), 0.0, w - 1.0)  # (L, R) stored px
            xs = np.where(np.isfinite(xs), xs, NO_POINT)
            xs = xs[::-1] if view.flipped else xs  # slots were left to right in the mirrored image
            points = (xs != NO_POINT).sum(axis=1)  # (L,)
            keep = np.flatnonzero(points >= self.config.min_lane_points)
            if keep.size > self.config.max_output_lanes:
                by_points = keep[np.argsort(-points[keep], kind="stable")]
                keep = np.sort(by_points[: self.config.max_output_lanes])
            lanes = np.ascontiguousarray(xs[keep]).reshape(-1, len(h_samples))  # (N, R) stored px
            out[i] = LanePrediction(h_samples=h_samples, lanes=lanes)
        return out

    def ground_truth(self, sample: Sample) -> LaneTruth | None:
        lane = sample.lane
        if lane is None:
            return None
        (h, w), (oh, ow) = sample.size, sample.orig_size
        h_samples = np.asarray(lane.h_samples, dtype=np.float64).reshape(-1)
        return LaneTruth(
            h_samples=h_samples,
            lanes=np.asarray(lane.xs, dtype=np.float64).reshape(-1, h_samples.size),
            mask=np.asarray(lane.mask, dtype=np.uint8),
            thickness=float(lane.thickness),
            native_scale=(oh / h, ow / w),
        )

    def metric(self) -> LaneMetric:
        return LaneMetric()

    def draw(self, image: np.ndarray, prediction: LanePrediction | None, sample: Sample) -> np.ndarray:
        """Each predicted lane as a polyline in its own colour (module docstring); None draws nothing."""
        out = np.array(image, copy=True)
        if prediction is None:
            return out
        rows = np.asarray(prediction.h_samples, dtype=np.float64).reshape(-1)  # (R,)
        lanes = np.asarray(prediction.lanes, dtype=np.float64).reshape(-1, rows.size)  # (N, R)
        thickness = 2 * line_thickness(out.shape)
        for k, xs in enumerate(lanes):
            points = np.column_stack([np.where(xs >= 0, xs, np.nan), rows])  # (R, 2); negative x: no point
            out = draw_polyline(out, points, distinct_colour(k), thickness=thickness)
        return out

    # ---- export --------------------------------------------------------------------------------

    def writer(self, out_dir: Path) -> LaneWriter:
        return LaneWriter(out_dir)

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / PREDICTIONS_FILE).is_file()

    def read_predictions(self, pred_dir: Path) -> dict[str, LanePrediction]:
        return read_lane_json(Path(pred_dir) / PREDICTIONS_FILE)


# ---- lane.json -------------------------------------------------------------------------------


def _number(value: float) -> int | float:
    """A JSON number: integral values as ints (TuSimple's own files hold ints)."""
    value = float(value)
    return int(value) if value.is_integer() else value


def prediction_line(key: str, prediction: LanePrediction) -> str:
    """One TuSimple submission line (no newline)."""
    h_samples = [_number(v) for v in np.asarray(prediction.h_samples, dtype=np.float64)]
    xs = np.asarray(prediction.lanes, dtype=np.float64).reshape(-1, len(h_samples))  # (N, R)
    lanes = [[_number(v) for v in lane] for lane in xs]
    return json.dumps(
        {"raw_file": key, "lanes": lanes, "h_samples": h_samples, "run_time": _number(prediction.run_time_ms)},
        allow_nan=False,
    )


class LaneWriter(PredictionWriter):
    """Collects one TuSimple line per sample; ``close`` writes ``lane.json`` atomically."""

    def __init__(self, out_dir: Path):
        super().__init__(out_dir)
        self.lines: list[str] = []
        self.keys: set[str] = set()

    def add(self, key: str, prediction: LanePrediction, sample: Sample) -> None:
        if key in self.keys:
            raise MtlDataError(f"lane prediction of {key} added twice to {self.out_dir / PREDICTIONS_FILE}")
        self.keys.add(key)
        self.lines.append(prediction_line(key, prediction))

    def close(self) -> None:
        write_atomic(self.out_dir / PREDICTIONS_FILE, "".join(line + "\n" for line in self.lines))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_line(doc: Any) -> tuple[str, LanePrediction]:
    """One decoded JSON line -> (key, prediction); ValueError saying what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    missing = [k for k in ("raw_file", "lanes", "h_samples", "run_time") if k not in doc]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)} (a line holds raw_file, lanes, h_samples, run_time)")
    key, lanes, h_samples, run_time = doc["raw_file"], doc["lanes"], doc["h_samples"], doc["run_time"]
    if not isinstance(key, str) or not key:
        raise ValueError(f"raw_file must be a non-empty string, got {key!r}")
    if not isinstance(h_samples, list) or not all(_is_number(v) for v in h_samples):
        raise ValueError("h_samples must be a list of finite numbers")
    if not isinstance(lanes, list) or not all(isinstance(lane, list) for lane in lanes):
        raise ValueError("lanes must be a list of lists of numbers")
    for n, lane in enumerate(lanes):
        if not all(_is_number(v) for v in lane):
            raise ValueError(f"lane {n} holds a value that is not a finite number")
        if len(lane) != len(h_samples):
            raise ValueError(
                f"lane {n} has {len(lane)} values for {len(h_samples)} h_samples (one x per row, -2 = no point)"
            )
    if not _is_number(run_time):
        raise ValueError(f"run_time must be a number of milliseconds, got {run_time!r}")
    rows = np.asarray(h_samples, dtype=np.float64)
    return key, LanePrediction(
        h_samples=rows, lanes=np.asarray(lanes, dtype=np.float64).reshape(-1, rows.size), run_time_ms=float(run_time)
    )


def read_lane_json(path: Path) -> dict[str, LanePrediction]:
    """The predictions of a TuSimple JSON-lines file, by ``raw_file``; blank lines are skipped.

    Raises:
        InputError: the file is missing or unreadable, or a line is not valid JSON, lacks a key,
            has a value of the wrong type, a lane whose length differs from ``h_samples``, or a
            ``raw_file`` seen on an earlier line; the message names ``path:line``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read lane predictions ({exc})") from None
    out: dict[str, LanePrediction] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line, parse_constant=lambda c: float("nan"))
            key, prediction = _parse_line(doc)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            reason = f"not valid JSON ({exc.msg}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else exc
            raise InputError(path, str(reason), line=number) from None
        if key in out:
            raise InputError(
                path, f"raw_file {key!r} already predicted on line {first_line[key]} (one line per image)", line=number
            )
        out[key], first_line[key] = prediction, number
    return out
