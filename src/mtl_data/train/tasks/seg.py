"""Semantic segmentation: per-pixel classes of the unified taxonomy (Cityscapes' 19 train classes).

* **Head**: ``DenseHead`` on the stride-4 map (conv3x3-BN-ReLU, conv1x1 to C), bilinear
  upsampling to the input size; output logits (B, C, H, W).
* **Loss**: cross-entropy with ``IGNORE_INDEX`` (255) ignored; per sample the mean over its
  non-ignored pixels, 0 when every pixel is ignored (a letterbox crop of sky-only void, a
  sample without seg after masking): ``sum / max(1, count)``, never 0/0.
* **Decode**: logits -> ``_dense.to_stored`` (un-flip, letterbox crop, bilinear resize of the
  logits to the stored size) -> argmax: (h, w) uint8 unified ids.
* **Metric** (the Cityscapes pixel-level benchmark, Cordts et al. 2016, "The Cityscapes Dataset
  for Semantic Urban Scene Understanding"; ``cityscapesscripts.evaluation.
  evalPixelLevelSemanticLabeling``): an int64 confusion matrix accumulated over the pixels
  whose ground truth is a class (255 = ignore is left out, whatever is predicted there).
  Per class ``IoU = TP / (TP + FP + FN)``; ``miou`` is the mean over the classes whose
  denominator is not 0, i.e. classes that neither occur in the ground truth nor are
  predicted are left out, as ``getScoreAverage`` skips their NaN. A class predicted but absent
  from the ground truth has IoU 0 and counts. A predicted id outside ``0..C-1`` (255 in a
  submitted PNG) is "no class": a false negative of the ground-truth class and nobody's false
  positive, as Cityscapes treats a prediction of a void label id. ``pixel_acc`` = correct /
  evaluated pixels. ``iou/<class name>`` per class (NaN where undefined).
* **Export**: ``seg/<key>.png``, 8-bit single-channel PNG of unified ids at the stored size
  (Cityscapes' submission format, in train ids of the unified taxonomy).
* **Picture** (``draw``): the predicted class map blended over the image (``DRAW_ALPHA``) in the
  class colours of ``draw.class_colours`` (the Cityscapes colours for the unified classes); a
  pixel predicted as no class (an id outside ``0..C-1``, 255 in a PNG) keeps the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import IGNORE_INDEX, Sample
from mtl_data.schema.taxonomy import SEG_CLASSES
from mtl_data.train.draw import blend, class_colours
from mtl_data.train.tasks._dense import DenseHead, dense_to_stored, feature_index
from mtl_data.train.tasks._io import read_label_png, write_label_png
from mtl_data.train.tasks.base import FeatureSpec, Metric, PredictionWriter, Task, register_task

#: the folder of a predictions folder that holds the label PNGs.
PRED_DIR = "seg"
#: weight of the class colours over the image in ``draw`` (half: the scene stays readable).
DRAW_ALPHA = 0.5


@dataclass
class SegConfig:
    """Hyper-parameters of the seg task.

    Attributes:
        hidden: channels of the head's 3x3 layer.
        stride: the feature map the head reads (4: the finest of a ResNet/FPN neck).
        label_smoothing: cross-entropy label smoothing (0 = plain CE).
    """

    hidden: int = 128
    stride: int = 4
    label_smoothing: float = 0.0


class SegMetric(Metric):
    """Confusion-matrix mIoU and pixel accuracy as the Cityscapes benchmark computes them.

    State: ``counts`` (C, C + 1) int64, rows = ground-truth class, columns = predicted class,
    the last column = a prediction outside ``0..C-1``. Integer counts merge exactly.

    Args:
        classes: class names, id = position.
    """

    def __init__(self, classes: Sequence[str]):
        self.classes = tuple(classes)
        c = len(self.classes)
        self.counts = np.zeros((c, c + 1), dtype=np.int64)  # (C, C + 1)

    @property
    def confusion(self) -> np.ndarray:
        """(C, C) int64: ground truth x predicted class (predictions of no class left out)."""
        return self.counts[:, :-1]

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: (h, w) predicted ids and (h, w) ground truth (255 = ignore).

        Raises:
            ValueError: shapes differ, or the ground truth holds an id that is neither a class
                nor 255.
        """
        prediction, truth = np.asarray(prediction), np.asarray(truth)
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction is {prediction.shape}, the ground truth {truth.shape}")
        c = len(self.classes)
        valid = truth != IGNORE_INDEX  # (h, w) evaluated pixels
        gt = truth[valid].astype(np.int64)  # (n,)
        if gt.size and (gt.min() < 0 or gt.max() >= c):
            bad = sorted(set(np.unique(gt[(gt < 0) | (gt >= c)]).tolist()))
            raise ValueError(f"ground truth holds ids {bad}, not classes 0..{c - 1} nor {IGNORE_INDEX}")
        pred = prediction[valid].astype(np.int64)  # (n,)
        pred = np.where((pred >= 0) & (pred < c), pred, c)  # (n,) no class -> the last column
        self.counts += np.bincount(gt * (c + 1) + pred, minlength=c * (c + 1)).reshape(c, c + 1)

    def merge(self, other: Metric) -> None:
        if not isinstance(other, SegMetric) or other.classes != self.classes:
            raise TypeError("can only merge a SegMetric of the same classes")
        self.counts += other.counts

    def iou(self) -> np.ndarray:
        """(C,) float64 per-class IoU, NaN where TP + FP + FN = 0."""
        tp = np.diag(self.counts).astype(np.float64)  # (C,)
        fn = self.counts.sum(axis=1) - tp  # (C,) incl. predictions of no class
        fp = self.confusion.sum(axis=0) - tp  # (C,) only over evaluated (non-ignored) pixels
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        total = int(self.counts.sum())
        defined = ~np.isnan(iou)
        out = {
            "miou": float(iou[defined].mean()) if defined.any() else float("nan"),
            "pixel_acc": float(np.trace(self.counts) / total) if total else float("nan"),
        }
        out.update({f"iou/{name}": float(v) for name, v in zip(self.classes, iou)})
        return out


class SegWriter(PredictionWriter):
    """``seg/<key>.png``: 8-bit grey PNG of unified ids at the stored size, one per sample."""

    def add(self, key: str, prediction: np.ndarray, sample: Sample) -> None:
        prediction = np.asarray(prediction)
        if prediction.shape != sample.size or prediction.dtype != np.uint8:
            raise ValueError(
                f"{key}: a seg prediction is (h, w) uint8 of the stored size {sample.size}, "
                f"got {prediction.dtype} {prediction.shape}"
            )
        write_label_png(self.out_dir / PRED_DIR / f"{key}.png", prediction)


@register_task
class SegTask(Task):
    """Semantic segmentation (module docstring)."""

    name: ClassVar[str] = "seg"
    Config: ClassVar[type] = SegConfig
    metric_keys: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")
    higher_is_better: ClassVar[bool] = True
    class_table: ClassVar[str | None] = "seg"
    default_classes: ClassVar[tuple[str, ...]] = SEG_CLASSES

    def __init__(self, config: SegConfig | None = None, classes: Sequence[str] | None = None):
        super().__init__(config, classes)
        if self.num_classes >= IGNORE_INDEX:
            raise MtlDataError(
                f"task seg: {self.num_classes} classes do not fit 8-bit ids below the ignore value {IGNORE_INDEX}"
            )

    def build_head(self, features: FeatureSpec) -> nn.Module:
        index = feature_index(features, self.config.stride, self.name)
        return DenseHead(features.channels, self.config.hidden, self.num_classes, index)

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        target = batch["seg"]  # (B, H, W) int64, 255 ignore
        pixel = F.cross_entropy(
            output.float(),
            target,
            ignore_index=IGNORE_INDEX,
            reduction="none",
            label_smoothing=self.config.label_smoothing,
        )  # (B, H, W), 0 where ignored
        count = (target != IGNORE_INDEX).sum(dim=(1, 2))  # (B,)
        return pixel.sum(dim=(1, 2)) / count.clamp(min=1)  # (B,) 0 for an all-ignored sample

    def decode(self, output: torch.Tensor, batch: Mapping[str, Any]) -> list[np.ndarray | None]:
        """(h, w) uint8 unified ids per sample in stored pixels (argmax of the resized logits)."""
        stored = dense_to_stored(output.detach(), batch, "bilinear")  # (C, h, w) each
        return [None if logits is None else logits.argmax(dim=0).to(torch.uint8).cpu().numpy() for logits in stored]

    def ground_truth(self, sample: Sample) -> np.ndarray | None:
        return sample.seg

    def metric(self) -> SegMetric:
        return SegMetric(self.classes)

    def writer(self, out_dir: Path) -> SegWriter:
        return SegWriter(out_dir)

    def draw(self, image: np.ndarray, prediction: np.ndarray, sample: Sample) -> np.ndarray:
        """The (h, w) predicted ids blended over the image in class colours (module docstring).

        Raises:
            ValueError: the prediction is not of the image's size.
        """
        ids = np.asarray(prediction)
        if ids.shape != image.shape[:2]:
            raise ValueError(
                f"{sample.key}: a seg prediction of {ids.shape} cannot be drawn on an image of {image.shape[:2]}"
            )
        palette = class_colours(self.classes)  # (C, 3)
        known = (ids >= 0) & (ids < len(palette))  # (h, w) pixels with a class
        colours = palette[np.where(known, ids, 0).astype(np.intp)]  # (h, w, 3)
        return blend(image, colours, known, DRAW_ALPHA)

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / PRED_DIR).is_dir()

    def read_predictions(self, pred_dir: Path) -> dict[str, np.ndarray]:
        """``seg/<key>.png`` -> (h, w) uint8 by key (sizes are checked by the scorer).

        Raises:
            MtlDataError: a file that is not an 8-bit single-channel PNG, naming it.
        """
        folder = Path(pred_dir) / PRED_DIR
        return {path.stem: read_label_png(path, np.uint8, "unified class ids") for path in sorted(folder.glob("*.png"))}
