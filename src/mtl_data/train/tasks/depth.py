"""Monocular metric depth: metres along the optical axis per pixel, supervised by sparse LiDAR.

* **Head**: ``DenseHead`` on the stride-4 map to one channel s, upsampled to the input size,
  then ``depth = exp(log a + (log b - log a) sigmoid(s))`` with ``(a, b) = (pred_min_m,
  pred_max_m)``: (B, 1, H, W) metres in (a, b). The head works in log depth because the loss
  and the metrics are relative (log / ratio) errors; the bounds keep ``exp`` from overflowing
  (bf16 / fp16) and ``log`` finite, which softplus does not (it underflows to 0, whose log is
  -inf). The last layer's bias starts where an untrained head predicts ``init_depth_m``
  everywhere instead of the geometric middle of (a, b).
* **Loss**: the scale-invariant log loss of Eigen et al. 2014 ("Depth Map Prediction from a
  Single Image using a Multi-Scale Deep Network", eq. 4) over the valid pixels (ground truth
  > 0) of each sample: ``d_i = log y_i - log y*_i`` (y predicted, y* true),
  ``L = (1/n) sum_i d_i^2 - (lambda / n^2) (sum_i d_i)^2``. ``lambda = 0.5`` is the value
  Eigen et al. train with (the average of the plain log-L2 at 0 and the fully scale-invariant
  error at 1). At ``lambda = 1`` the loss is invariant to scaling the prediction. The
  reference thesis added the second term instead of subtracting it, which rewards a constant
  log offset instead of forgiving it. A sample without a valid pixel has loss 0.
* **Decode**: ``_dense.to_stored`` (un-flip, letterbox crop, bilinear resize): (h, w) float32
  metres at the stored size.
* **Metric** (Eigen et al. 2014; the KITTI Eigen-split protocol of monodepth2, Godard et al.
  2019): over the pixels with ``min_depth <= gt <= max_depth`` (0 = no measurement), with the
  prediction clipped to ``[min_depth, max_depth]`` first, as monodepth2's evaluation does:
  ``abs_rel = mean |p - g| / g``, ``sq_rel = mean (p - g)^2 / g``, ``rmse = sqrt(mean (p - g)^2)``,
  ``log_rmse = sqrt(mean (log p - log g)^2)``, ``delta_k = share of max(p / g, g / p) < 1.25^k``.
  Each is computed **per image and then averaged over the images** (monodepth2 and the KITTI
  depth devkit do so; a split-wide pixel average would let the images with the most LiDAR points
  dominate). Images without a valid pixel are not counted. The state is the list of per-image
  rows; ``compute`` sums them with ``math.fsum`` (exactly rounded, so independent of the order
  ranks are merged in): the merged result equals the single-process one bit for bit.
  No median scaling: the head predicts metric depth.
* **Export**: ``depth/<key>.png``, 16-bit grey, ``round(metres x 256)``, 0 = no prediction
  (the KITTI depth format); positive predictions are written as at least 1 (1/256 m) and at most
  65535 (255.996 m), so a prediction is never read back as "none".
* **Picture** (``draw``): the predicted depth colourised (``draw.colorize_depth``: TURBO on log
  depth, red at ``DRAW_NEAR_M`` (1 m) and nearer, dark blue at the config's ``max_depth`` and farther)
  and blended over the image (``DRAW_ALPHA``), so the picture keeps the image's size and the
  scene stays visible under the colours (side by side would halve either); a caption gives the
  scale. Pixels without a prediction (0, as a read-back KITTI PNG holds, or not finite) keep the
  image untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mtl_data.schema.sample import Sample
from mtl_data.train.draw import blend, caption, colorize_depth
from mtl_data.train.tasks._dense import DenseHead, dense_to_stored, feature_index
from mtl_data.train.tasks._io import read_label_png, write_label_png
from mtl_data.train.tasks.base import FeatureSpec, Metric, PredictionWriter, Task, register_task

PRED_DIR = "depth"
#: KITTI depth PNG: metres x 256 as uint16, 0 = none.
PNG_SCALE = 256.0
#: ``draw``: the near end of the colour scale, metres, and the weight of the colours over the image.
DRAW_NEAR_M = 1.0
DRAW_ALPHA = 0.65
_METRICS = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta1", "delta2", "delta3")


@dataclass
class DepthConfig:
    """Hyper-parameters of the depth task.

    Attributes:
        hidden: channels of the head's 3x3 layer.
        stride: the feature map the head reads.
        si_lambda: lambda of the scale-invariant loss (Eigen et al. 2014 train with 0.5;
            0 = plain log-L2, 1 = fully scale invariant).
        pred_min_m, pred_max_m: the head's output range, metres (exclusive bounds).
        init_depth_m: what an untrained head predicts everywhere, metres.
        min_depth, max_depth: the metric's ground-truth range, metres (KITTI Eigen split: 1e-3, 80);
            predictions are clipped to it before scoring.
    """

    hidden: int = 64
    stride: int = 4
    si_lambda: float = 0.5
    pred_min_m: float = 0.1
    pred_max_m: float = 250.0
    init_depth_m: float = 10.0
    min_depth: float = 1e-3
    max_depth: float = 80.0

    def __post_init__(self) -> None:
        if not 0 < self.pred_min_m < self.init_depth_m < self.pred_max_m:
            raise ValueError(
                f"need 0 < pred_min_m < init_depth_m < pred_max_m, got {self.pred_min_m}, "
                f"{self.init_depth_m}, {self.pred_max_m}"
            )
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")


class DepthHead(nn.Module):
    """``DenseHead`` to one channel, mapped to metres by a sigmoid-bounded log depth (module docstring)."""

    def __init__(self, dense: DenseHead, pred_min_m: float, pred_max_m: float, init_depth_m: float):
        super().__init__()
        self.dense = dense
        self.log_min = math.log(pred_min_m)
        self.log_span = math.log(pred_max_m) - self.log_min
        share = (math.log(init_depth_m) - self.log_min) / self.log_span  # sigmoid value of the initial depth
        with torch.no_grad():
            self.dense.out.bias.fill_(math.log(share / (1.0 - share)))

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        s = self.dense(features, image_size)  # (B, 1, H, W)
        return torch.exp(self.log_min + self.log_span * torch.sigmoid(s.float()))  # (B, 1, H, W) metres


def scale_invariant_loss(pred: torch.Tensor, target: torch.Tensor, si_lambda: float) -> torch.Tensor:
    """Eigen et al. 2014, eq. 4, per sample over the valid pixels (``target > 0``).

    Args:
        pred: (B, H, W) positive depths.
        target: (B, H, W) metres, 0 = no measurement.
        si_lambda: lambda.

    Returns:
        (B,) ``(1/n) sum d^2 - (lambda/n^2)(sum d)^2``, ``d = log pred - log target``; 0 where
        n = 0. Finite, with finite gradients, whatever ``target`` holds.
    """
    valid = target > 0  # (B, H, W)
    # log of a clamped target where invalid: never log(0), so no -inf reaches the graph.
    d = torch.where(valid, torch.log(pred) - torch.log(target.clamp(min=1e-12)), 0.0)  # (B, H, W)
    n = valid.sum(dim=(1, 2)).to(d.dtype).clamp(min=1)  # (B,)
    sum_d = d.sum(dim=(1, 2))  # (B,)
    return (d * d).sum(dim=(1, 2)) / n - si_lambda * sum_d * sum_d / (n * n)  # (B,)


def image_errors(pred: np.ndarray, gt: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray | None:
    """The per-image metrics of one image (module docstring), or None without a valid pixel.

    Args:
        pred: (h, w) predicted metres (clipped to [min_depth, max_depth] here).
        gt: (h, w) metres, 0 = none.

    Returns:
        (7,) float64 in ``_METRICS`` order.
    """
    valid = (gt >= min_depth) & (gt <= max_depth)  # (h, w)
    if not valid.any():
        return None
    g = gt[valid].astype(np.float64)  # (n,)
    p = np.clip(pred[valid].astype(np.float64), min_depth, max_depth)  # (n,)
    ratio = np.maximum(p / g, g / p)  # (n,)
    err = p - g
    return np.array(
        [
            np.mean(np.abs(err) / g),
            np.mean(err * err / g),
            np.sqrt(np.mean(err * err)),
            np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)),
            np.mean(ratio < 1.25),
            np.mean(ratio < 1.25**2),
            np.mean(ratio < 1.25**3),
        ]
    )


class DepthMetric(Metric):
    """Per-image depth errors averaged over images (module docstring); exact merge.

    Args:
        min_depth, max_depth: the evaluated ground-truth range, metres.
    """

    def __init__(self, min_depth: float, max_depth: float):
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.rows: list[np.ndarray] = []  # one (7,) float64 per image with a valid pixel

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: (h, w) predicted metres and (h, w) ground truth (0 = none).

        Raises:
            ValueError: the shapes differ.
        """
        prediction, truth = np.asarray(prediction), np.asarray(truth)
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction is {prediction.shape}, the ground truth {truth.shape}")
        row = image_errors(prediction, truth, self.min_depth, self.max_depth)
        if row is not None:
            self.rows.append(row)

    def merge(self, other: Metric) -> None:
        if not isinstance(other, DepthMetric) or (other.min_depth, other.max_depth) != (self.min_depth, self.max_depth):
            raise TypeError("can only merge a DepthMetric of the same depth range")
        self.rows.extend(other.rows)

    def compute(self) -> dict[str, float]:
        n = len(self.rows)
        if n == 0:
            return dict.fromkeys(_METRICS, float("nan"))
        columns = np.stack(self.rows).T  # (7, n)
        return {name: math.fsum(col) / n for name, col in zip(_METRICS, columns)}


def metres_to_png(depth: np.ndarray) -> np.ndarray:
    """(h, w) metres -> uint16 ``round(m x 256)``; 0 stays 0 (none), positive values in [1, 65535].

    Raises:
        ValueError: a NaN, infinite or negative value (a broken model, not something to hide).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise ValueError("a depth prediction holds NaN, infinite or negative values")
    scaled = np.clip(np.rint(depth * PNG_SCALE), 1, np.iinfo(np.uint16).max)  # (h, w)
    return np.where(depth > 0, scaled, 0).astype(np.uint16)


def png_to_metres(values: np.ndarray) -> np.ndarray:
    """uint16 KITTI depth values -> float32 metres (0 = none)."""
    return (values.astype(np.float32) / np.float32(PNG_SCALE)).astype(np.float32)


class DepthWriter(PredictionWriter):
    """``depth/<key>.png``: 16-bit grey KITTI depth PNG at the stored size, one per sample."""

    def add(self, key: str, prediction: np.ndarray, sample: Sample) -> None:
        prediction = np.asarray(prediction)
        if prediction.shape != sample.size:
            raise ValueError(
                f"{key}: a depth prediction is (h, w) of the stored size {sample.size}, got {prediction.shape}"
            )
        write_label_png(self.out_dir / PRED_DIR / f"{key}.png", metres_to_png(prediction))


@register_task
class DepthTask(Task):
    """Metric depth (module docstring)."""

    name: ClassVar[str] = "depth"
    Config: ClassVar[type] = DepthConfig
    metric_keys: ClassVar[tuple[str, ...]] = _METRICS
    higher_is_better: ClassVar[bool] = False

    def build_head(self, features: FeatureSpec) -> nn.Module:
        c = self.config
        dense = DenseHead(features.channels, c.hidden, 1, feature_index(features, c.stride, self.name))
        return DepthHead(dense, c.pred_min_m, c.pred_max_m, c.init_depth_m)

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return scale_invariant_loss(output[:, 0].float(), batch["depth"], self.config.si_lambda)  # (B,)

    def decode(self, output: torch.Tensor, batch: Mapping[str, Any]) -> list[np.ndarray | None]:
        """(h, w) float32 metres per sample in stored pixels."""
        stored = dense_to_stored(output.detach(), batch, "bilinear")  # (1, h, w) each
        return [None if d is None else d[0].cpu().numpy() for d in stored]

    def ground_truth(self, sample: Sample) -> np.ndarray | None:
        return sample.depth

    def metric(self) -> DepthMetric:
        return DepthMetric(self.config.min_depth, self.config.max_depth)

    def writer(self, out_dir: Path) -> DepthWriter:
        return DepthWriter(out_dir)

    def draw(self, image: np.ndarray, prediction: np.ndarray, sample: Sample) -> np.ndarray:
        """The (h, w) predicted metres colourised over the image, with the scale (module docstring).

        Raises:
            ValueError: the prediction is not of the image's size.
        """
        depth = np.asarray(prediction, dtype=np.float64)
        if depth.shape != image.shape[:2]:
            raise ValueError(
                f"{sample.key}: a depth prediction of {depth.shape} cannot be drawn on an image of {image.shape[:2]}"
            )
        far = self.config.max_depth
        near = min(DRAW_NEAR_M, far / 10)  # a scale even for a config whose range ends below 1 m
        predicted = np.isfinite(depth) & (depth > 0)  # (h, w)
        out = blend(image, colorize_depth(depth, far, near), predicted, DRAW_ALPHA)
        return caption(out, f"depth: red {near:g} m - blue {far:g} m (log)")

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / PRED_DIR).is_dir()

    def read_predictions(self, pred_dir: Path) -> dict[str, np.ndarray]:
        """``depth/<key>.png`` -> (h, w) float32 metres by key (0 = no prediction).

        Raises:
            MtlDataError: a file that is not a 16-bit single-channel PNG, naming it.
        """
        folder = Path(pred_dir) / PRED_DIR
        return {
            path.stem: png_to_metres(read_label_png(path, np.uint16, "depth in metres x 256"))
            for path in sorted(folder.glob("*.png"))
        }
