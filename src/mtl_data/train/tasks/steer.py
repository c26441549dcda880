"""Steering: the steering-wheel angle at the image's timestamp, degrees, + = left.

* **Head**: global average pooling of the stride-32 map -> Linear-ReLU -> Linear to one value z;
  ``degrees = scale_deg x z``. The head predicts in units of ``scale_deg`` (default 30 deg,
  about the spread of everyday steering-wheel angles), so its layers work on O(1) numbers, and
  the last layer starts at zero, so an untrained head predicts 0 deg (straight ahead, the most
  common label) instead of an arbitrary angle. Its weights still get gradients from the first
  step (the hidden activations are not zero), and the rest of the head once they move.
* **Loss**: Huber (smooth-L1 with threshold ``huber_delta_deg``) of the error in units of
  ``scale_deg``: quadratic for errors below the threshold, linear above, so rare sharp turns
  (A2D2 reaches about 600 deg) do not dominate the batch as they would under L2; in
  ``scale_deg`` units it stays comparable to the other tasks' losses (O(1)).
* **Decode**: degrees per sample; a sample the loader mirrored has its prediction negated back
  (the loader negated its label, ``transforms``), so predictions are for the stored image.
* **Metric**: ``mae_deg`` (headline, lower is better) and ``rmse_deg`` over the samples; the
  per-sample errors are kept and summed with ``math.fsum``, so merging ranks is exact.
* **Export**: ``steer.csv``, header ``key,value``, degrees (``_io.write_key_value_csv``).
* **Picture** (``draw``): a caption with the predicted angle ("steer +12.3 deg (left)") and a
  steering wheel at the bottom centre turned by it (``draw.draw_wheel``: + = counter-clockwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.schema.sample import Sample
from mtl_data.train.draw import caption, draw_wheel
from mtl_data.train.tasks._dense import feature_index
from mtl_data.train.tasks._io import KeyValueWriter, parse_float, read_key_value_csv
from mtl_data.train.tasks.base import FeatureSpec, Metric, Task, per_sample, register_task

PRED_FILE = "steer.csv"


@dataclass
class SteerConfig:
    """Hyper-parameters of the steer task.

    Attributes:
        hidden: width of the MLP's hidden layer.
        stride: the feature map that is pooled.
        scale_deg: degrees per unit of the head's output (and of the loss).
        huber_delta_deg: where the Huber loss turns from quadratic to linear, degrees.
    """

    hidden: int = 64
    stride: int = 32
    scale_deg: float = 30.0
    huber_delta_deg: float = 5.0

    def __post_init__(self) -> None:
        if self.scale_deg <= 0 or self.huber_delta_deg <= 0:
            raise ValueError(f"scale_deg and huber_delta_deg must be > 0, got {self.scale_deg}, {self.huber_delta_deg}")


class SteerHead(nn.Module):
    """Pooled features -> MLP -> degrees (B,) (module docstring)."""

    def __init__(self, channels: int, hidden: int, index: int, scale_deg: float):
        super().__init__()
        self.index = index
        self.scale_deg = scale_deg
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.zeros_(self.fc2.weight)  # an untrained head predicts 0 deg
        nn.init.zeros_(self.fc2.bias)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        x = features[self.index].mean(dim=(2, 3))  # (B, C) global average pool
        z = self.fc2(F.relu(self.fc1(x)))  # (B, 1) in units of scale_deg
        return z[:, 0] * self.scale_deg  # (B,) degrees


class SteerMetric(Metric):
    """Mean absolute and root-mean-square error in degrees; exact merge (module docstring)."""

    def __init__(self) -> None:
        self.errors: list[float] = []  # prediction - truth, degrees, one per sample

    def update(self, prediction: float, truth: float) -> None:
        """Add one sample: predicted and true angle, degrees.

        Raises:
            ValueError: a prediction that is missing or not a finite number.
        """
        if prediction is None or not math.isfinite(float(prediction)):
            raise ValueError(f"a steering prediction is a finite number of degrees, got {prediction!r}")
        self.errors.append(float(prediction) - float(truth))

    def merge(self, other: Metric) -> None:
        if not isinstance(other, SteerMetric):
            raise TypeError("can only merge a SteerMetric")
        self.errors.extend(other.errors)

    def compute(self) -> dict[str, float]:
        n = len(self.errors)
        if n == 0:
            return {"mae_deg": float("nan"), "rmse_deg": float("nan")}
        return {
            "mae_deg": math.fsum(abs(e) for e in self.errors) / n,
            "rmse_deg": math.sqrt(math.fsum(e * e for e in self.errors) / n),
        }


@register_task
class SteerTask(Task):
    """Steering-wheel angle regression (module docstring)."""

    name: ClassVar[str] = "steer"
    Config: ClassVar[type] = SteerConfig
    metric_keys: ClassVar[tuple[str, ...]] = ("mae_deg", "rmse_deg")
    higher_is_better: ClassVar[bool] = False

    def build_head(self, features: FeatureSpec) -> nn.Module:
        c = self.config
        return SteerHead(features.channels, c.hidden, feature_index(features, c.stride, self.name), c.scale_deg)

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        c = self.config
        # Huber in units of scale_deg: smooth_l1(x/s, y/s, beta=delta/s) = smooth_l1_deg(x, y, delta) / s.
        return F.smooth_l1_loss(
            output.float() / c.scale_deg,
            batch["steer"] / c.scale_deg,
            reduction="none",
            beta=c.huber_delta_deg / c.scale_deg,
        )  # (B,)

    def decode(self, output: torch.Tensor, batch: Mapping[str, Any]) -> list[float | None]:
        """Degrees per sample for the stored (un-mirrored) image."""
        sign = 1.0 - 2.0 * batch["flipped"].to(device=output.device, dtype=torch.float32)  # (B,) -1 where mirrored
        degrees = (output.detach().float() * sign).cpu().tolist()  # (B,)
        return per_sample(batch, lambda i: float(degrees[i]))

    def ground_truth(self, sample: Sample) -> float | None:
        return None if sample.steer is None else float(sample.steer.angle_deg)

    def metric(self) -> SteerMetric:
        return SteerMetric()

    def writer(self, out_dir: Path) -> KeyValueWriter:
        return KeyValueWriter(out_dir, PRED_FILE, float)

    def draw(self, image: np.ndarray, prediction: float, sample: Sample) -> np.ndarray:
        """The predicted angle as a caption and a turned steering wheel (module docstring); a value
        that is not a finite number gets a caption saying so and no wheel."""
        angle = float(prediction)
        if not math.isfinite(angle):
            return caption(image, f"steer: no angle ({angle})")
        direction = "left" if angle > 0 else "right" if angle < 0 else "straight"
        return caption(draw_wheel(image, angle), f"steer {angle:+.1f} deg ({direction})")

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / PRED_FILE).is_file()

    def read_predictions(self, pred_dir: Path) -> dict[str, float]:
        """``steer.csv`` -> degrees by key.

        Raises:
            MtlDataError: a malformed row, a duplicate key or a non-numeric value (file and line).
        """
        return read_key_value_csv(Path(pred_dir) / PRED_FILE, parse_float, "a finite steering angle in degrees")
