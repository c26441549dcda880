"""Traffic-sign classification: the GTSRB class of a sign crop (43 classes, Stallkamp et al. 2012,
"Man vs. computer: Benchmarking machine learning algorithms for traffic sign recognition").

* **Head**: global average pooling of the stride-32 map -> one linear layer: logits (B, C).
* **Loss**: cross-entropy (optionally label-smoothed), per sample.
* **Decode**: argmax class id per sample. Sign crops are never mirrored by the loader (a
  mirrored sign is another sign), so there is nothing to undo.
* **Metric**: ``top1`` (headline, the GTSRB benchmark's accuracy), ``mean_class_acc`` (the
  mean over the classes present in the ground truth of each class's accuracy: GTSRB's classes
  are very unbalanced, from 210 to 2250 training images) and ``acc/<class name>`` per class (NaN
  for a class without ground truth). State: per-class correct and total counts (int64),
  merged exactly. A predicted id outside ``0..C-1`` is simply wrong.
* **Export**: ``sign.csv``, header ``key,value``, class id (``_io.write_key_value_csv``).
* **Picture** (``draw``): a caption with the predicted class's name and id.
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

from mtl_data.schema.sample import Sample
from mtl_data.schema.taxonomy import SIGN_CLASSES
from mtl_data.train.draw import caption, class_name
from mtl_data.train.tasks._dense import feature_index
from mtl_data.train.tasks._io import KeyValueWriter, parse_int, read_key_value_csv
from mtl_data.train.tasks.base import FeatureSpec, Metric, Task, per_sample, register_task

PRED_FILE = "sign.csv"


@dataclass
class SignConfig:
    """Hyper-parameters of the sign task.

    Attributes:
        stride: the feature map that is pooled.
        label_smoothing: cross-entropy label smoothing (0 = plain CE).
    """

    stride: int = 32
    label_smoothing: float = 0.0


class SignHead(nn.Module):
    """Pooled features -> linear classifier, logits (B, C)."""

    def __init__(self, channels: int, num_classes: int, index: int):
        super().__init__()
        self.index = index
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        x = features[self.index].mean(dim=(2, 3))  # (B, C_in) global average pool
        return self.fc(x)  # (B, C)


class SignMetric(Metric):
    """Top-1 and mean per-class accuracy from per-class counts (module docstring).

    Args:
        classes: class names, id = position.
    """

    def __init__(self, classes: Sequence[str]):
        self.classes = tuple(classes)
        self.correct = np.zeros(len(self.classes), dtype=np.int64)  # (C,) by true class
        self.total = np.zeros(len(self.classes), dtype=np.int64)  # (C,)

    def update(self, prediction: int, truth: int) -> None:
        """Add one sample: predicted and true class id.

        Raises:
            ValueError: a missing prediction, or a true id outside the classes.
        """
        if prediction is None:
            raise ValueError("no sign prediction")
        truth = int(truth)
        if not 0 <= truth < len(self.classes):
            raise ValueError(f"true class {truth} is not one of 0..{len(self.classes) - 1}")
        self.total[truth] += 1
        self.correct[truth] += int(int(prediction) == truth)

    def merge(self, other: Metric) -> None:
        if not isinstance(other, SignMetric) or other.classes != self.classes:
            raise TypeError("can only merge a SignMetric of the same classes")
        self.correct += other.correct
        self.total += other.total

    def compute(self) -> dict[str, float]:
        seen = self.total > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(seen, self.correct / np.maximum(self.total, 1), np.nan)  # (C,)
        n = int(self.total.sum())
        out = {
            "top1": float(self.correct.sum() / n) if n else float("nan"),
            "mean_class_acc": float(acc[seen].mean()) if seen.any() else float("nan"),
        }
        out.update({f"acc/{name}": float(v) for name, v in zip(self.classes, acc)})
        return out


@register_task
class SignTask(Task):
    """Traffic-sign classification (module docstring)."""

    name: ClassVar[str] = "sign"
    Config: ClassVar[type] = SignConfig
    metric_keys: ClassVar[tuple[str, ...]] = ("top1", "mean_class_acc")
    higher_is_better: ClassVar[bool] = True
    class_table: ClassVar[str | None] = "sign"
    default_classes: ClassVar[tuple[str, ...]] = SIGN_CLASSES

    def build_head(self, features: FeatureSpec) -> nn.Module:
        return SignHead(features.channels, self.num_classes, feature_index(features, self.config.stride, self.name))

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return F.cross_entropy(
            output.float(), batch["sign"], reduction="none", label_smoothing=self.config.label_smoothing
        )  # (B,)

    def decode(self, output: torch.Tensor, batch: Mapping[str, Any]) -> list[int | None]:
        """The argmax class id per sample."""
        ids = output.detach().argmax(dim=1).cpu().tolist()  # (B,)
        return per_sample(batch, lambda i: int(ids[i]))

    def ground_truth(self, sample: Sample) -> int | None:
        return None if sample.sign is None else int(sample.sign.class_id)

    def metric(self) -> SignMetric:
        return SignMetric(self.classes)

    def writer(self, out_dir: Path) -> KeyValueWriter:
        return KeyValueWriter(out_dir, PRED_FILE, int)

    def draw(self, image: np.ndarray, prediction: int, sample: Sample) -> np.ndarray:
        """The image with a caption "<class name> (id <id>)" of the predicted class."""
        return caption(image, f"{class_name(self.classes, prediction)} (id {int(prediction)})")

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / PRED_FILE).is_file()

    def read_predictions(self, pred_dir: Path) -> dict[str, int]:
        """``sign.csv`` -> class id by key.

        Raises:
            MtlDataError: a malformed row, a duplicate key, or a value that is not a class id
                (file and line).
        """
        c = self.num_classes

        def class_id(text: str) -> int:
            value = parse_int(text)
            if not 0 <= value < c:
                raise ValueError(f"{value} is outside 0..{c - 1}")
            return value

        return read_key_value_csv(Path(pred_dir) / PRED_FILE, class_id, f"a class id in 0..{c - 1}")
