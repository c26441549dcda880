"""The task interface: everything about one task lives in one module of ``train/tasks/``.

A task module defines a ``Task`` subclass and registers it (``@register_task``); nothing else in
the trainer names a task. The subclass says, for its task:

* **head** (``build_head``): an ``nn.Module`` called as ``head(features, image_size)`` on the
  neck's feature maps (``FeatureSpec``: one map per stride, same channels), returning the raw
  output (a tensor, or a dict of tensors for multi-part heads);
* **loss** (``loss``): one loss per sample, (B,), finite for every sample (absent or not), 0
  where the sample has nothing to learn from (all pixels ignored, no valid depth). The batch loss
  is ``masked_mean``: ``L = sum_b m_b l_b / max(1, sum_b m_b)`` with ``m = batch["present"][task]``
  (trainer.md section 3), so a task absent from every sample gives exactly 0 and no gradient
  into its head, and the graph is the same whatever the batch holds;
* **decode** (``decode``): raw outputs -> one prediction per sample in the **stored image's
  pixels** (the batch's ``size``/``scale``/``offset``/``flipped`` invert the loader's resize,
  letterbox and flip: ``view_of``), the frame the benchmarks' own tools score in;
* **ground truth** (``ground_truth``): the label of a stored ``Sample`` in the form ``Metric.update``
  takes; None when the sample does not label the task;
* **metric** (``metric``): a ``Metric`` that accumulates (prediction, truth) pairs, merges with the
  metrics of other ranks, and computes a dict of named values (``metric_keys`` first);
* **export** (``writer`` / ``read_predictions``): predictions in the benchmark's own submission
  format under a predictions folder, and back (``mtl-train score`` reads them);
* **a picture** (``draw``): the prediction drawn over the stored image, for a person to look at.

Class ids come from the shards' ``classes.json`` (``classes``), the unified taxonomy by default,
so shards ingested with ``--taxonomy native`` train too.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.schema.placement import Placement
from mtl_data.schema.sample import TASKS, Sample
from mtl_data.train.data.transforms import View

T = TypeVar("T")

#: the strides of the feature maps a neck hands to the heads (ResNet stages 2-5).
STRIDES: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class FeatureSpec:
    """What the heads receive: one feature map per stride, each with ``channels`` channels.

    Attributes:
        channels: channels of every map.
        strides: input pixels per feature pixel of each map, finest first.
    """

    channels: int
    strides: tuple[int, ...] = STRIDES


class Metric(ABC):
    """Accumulates (prediction, truth) pairs of one task; mergeable across ranks.

    ``update`` takes one sample; ``merge`` folds in another instance of the same metric (the
    metrics of other ranks, gathered with ``torch.distributed.all_gather_object``), so a
    distributed evaluation gives exactly the single-process result; ``compute`` returns plain
    floats keyed as ``Task.metric_keys`` says (NaN where a value is undefined, e.g. no sample).
    """

    @abstractmethod
    def update(self, prediction: Any, truth: Any) -> None:
        """Add one sample: its prediction (``Task.decode`` / ``read_predictions``) and truth
        (``Task.ground_truth``), both in stored-image pixels."""

    @abstractmethod
    def merge(self, other: Metric) -> None:
        """Fold ``other``'s accumulated state into this one."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values."""


class PredictionWriter(ABC):
    """Writes one task's predictions under a predictions folder in its benchmark's format.

    ``add`` is called once per sample with the prediction and the stored sample (its labels,
    ``K`` and ``meta.json`` extras, for formats that need them); ``close`` finishes files that
    hold every sample. Every file is written to a temporary name and renamed when complete.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    @abstractmethod
    def add(self, key: str, prediction: Any, sample: Sample) -> None:
        """Write (or collect) the prediction of sample ``key``."""

    def close(self) -> None:  # noqa: B027 - a hook with a default: one file per sample has nothing to finish
        """Finish the files that hold every sample (nothing to do for one file per sample)."""


class Task(ABC):
    """Base of the task modules (module docstring).

    Class attributes a subclass sets:
        name: the task, one of ``schema.sample.TASKS``.
        Config: its typed hyper-parameter dataclass (every field has a default).
        metric_keys: the keys ``Metric.compute`` returns, the headline metric first.
        higher_is_better: whether a larger headline metric is better (Delta_T's sign).
        class_table: the ``classes.json`` entry the class ids come from, or None.
        default_classes: the class names of the unified taxonomy (used without shards).
        requires_every_prediction: ``mtl-train score`` refuses a predictions folder that lacks
            a labelled sample (dense and per-sample tasks, as their official tools do); False
            where a missing sample means "nothing predicted" (detection).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = type(None)
    metric_keys: ClassVar[tuple[str, ...]]
    higher_is_better: ClassVar[bool]
    class_table: ClassVar[str | None] = None
    default_classes: ClassVar[tuple[str, ...]] = ()
    requires_every_prediction: ClassVar[bool] = True

    def __init__(self, config: Any = None, classes: Sequence[str] | None = None):
        self.config = self.Config() if config is None else config
        self.classes: tuple[str, ...] = tuple(self.default_classes if classes is None else classes)
        if self.class_table is not None and not self.classes:
            raise MtlDataError(
                f"task {self.name}: no class names (the shards' classes.json has no {self.class_table!r} entry)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def headline(self) -> str:
        """The metric Delta_T compares (the first of ``metric_keys``)."""
        return self.metric_keys[0]

    # ---- model ---------------------------------------------------------------------------------

    @abstractmethod
    def build_head(self, features: FeatureSpec) -> nn.Module:
        """The head: ``head(features: list[Tensor], image_size: (H, W)) -> output``."""

    # ---- loss ----------------------------------------------------------------------------------

    @abstractmethod
    def loss(self, output: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample losses (B,), finite everywhere, 0 where a sample has nothing to learn from."""

    def batch_loss(self, output: Any, batch: Mapping[str, Any], count: torch.Tensor | None = None) -> torch.Tensor:
        """``masked_mean(loss(output, batch), batch["present"][name], count)``: the task's loss."""
        return masked_mean(self.loss(output, batch), batch["present"][self.name], count)

    # ---- predictions ---------------------------------------------------------------------------

    @abstractmethod
    def decode(self, output: Any, batch: Mapping[str, Any]) -> list[Any]:
        """One prediction per sample of the batch, in stored-image pixels (None for a dummy slot)."""

    @abstractmethod
    def ground_truth(self, sample: Sample) -> Any:
        """The truth ``Metric.update`` takes, from a stored sample; None if it lacks the task."""

    @abstractmethod
    def metric(self) -> Metric:
        """A fresh, empty metric."""

    @abstractmethod
    def writer(self, out_dir: Path) -> PredictionWriter:
        """A writer of predictions under ``out_dir`` (a predictions folder)."""

    @abstractmethod
    def draw(self, image: np.ndarray, prediction: Any, sample: Sample) -> np.ndarray:
        """The prediction drawn over ``image``, the stored sample's (H, W, 3) uint8 RGB picture.

        Returns a new (H, W, 3) uint8 RGB array (``image`` is not modified); ``sample`` gives
        what a drawing may need besides the pixels (``K`` to project 3D boxes, the class names
        are ``self.classes``).
        """

    @abstractmethod
    def holds_predictions(self, pred_dir: Path) -> bool:
        """Whether ``pred_dir`` holds predictions of this task."""

    @abstractmethod
    def read_predictions(self, pred_dir: Path) -> dict[str, Any]:
        """The predictions under ``pred_dir``, by sample key, as ``decode`` gives them.

        Raises:
            MtlDataError: a malformed file, named (and the line or entry where there is one).
        """


# ---- the registry --------------------------------------------------------------------------

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task ``cls.name``."""
    if cls.name not in TASKS:
        raise ValueError(f"task {cls.name!r} is not one of the schema's tasks {TASKS}")
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    _TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The registered ``Task`` subclass of ``name``; MtlDataError listing the tasks otherwise."""
    try:
        return _TASKS[name]
    except KeyError:
        raise MtlDataError(f"unknown task {name!r}; choose from {', '.join(list_tasks())}") from None


def create_task(name: str, classes: Sequence[str] | None = None, **config: Any) -> Task:
    """A task by name, with its ``Config`` fields overridden by ``config``.

    Raises:
        MtlDataError: an unknown task or config field, or a value its ``Config`` refuses.
    """
    cls = task_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(cls.Config) else set()
    unknown = sorted(set(config) - fields)
    if unknown:
        raise MtlDataError(
            f"task {name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields)) or 'none'}"
        )
    try:
        built = cls.Config(**config) if fields else None
    except ValueError as exc:  # a Config's own range checks
        raise MtlDataError(f"task {name}: {exc}") from None
    return cls(built, classes=classes)


def list_tasks() -> list[str]:
    """The registered tasks, in the schema's order."""
    return [t for t in TASKS if t in _TASKS]


# ---- shared pieces -------------------------------------------------------------------------


def masked_mean(per_sample: torch.Tensor, present: torch.Tensor, count: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_b m_b l_b / max(1, count)`` with ``count = sum_b m_b`` unless given.

    The mask multiplies (never selects), so the graph does not depend on the batch; under DDP
    the trainer passes the all-reduced count, so the loss does not depend on how samples fall
    on ranks (trainer.md section 3).

    Args:
        per_sample: (B,) finite losses.
        present: (B,) bool, True where the sample labels the task.
        count: the number of labelled samples to divide by (a tensor), or None.
    """
    mask = present.to(per_sample.dtype)
    count = mask.sum() if count is None else count.to(per_sample.dtype)
    return (per_sample * mask).sum() / count.clamp(min=1)


def view_of(batch: Mapping[str, Any], index: int) -> View:
    """The ``View`` of sample ``index`` of a batch: how its pixels map to the stored image's."""
    h, w = (int(v) for v in batch["size"][index].tolist())
    out_hw = tuple(int(v) for v in batch["image"].shape[-2:])
    sy, sx = (float(v) for v in batch["scale"][index].tolist())
    top, left = (int(round(float(v))) for v in batch["offset"][index].tolist())
    content = (int(round(h * sy)), int(round(w * sx)))
    return View(Placement((h, w), out_hw, content, top=top, left=left), bool(batch["flipped"][index]))


def sample_indices(batch: Mapping[str, Any]) -> Iterator[int]:
    """Indices of the real samples of a batch (dummy evaluation slots have the key "")."""
    return (i for i, key in enumerate(batch["key"]) if key)


def per_sample(batch: Mapping[str, Any], make: Callable[[int], T]) -> list[T | None]:
    """``[make(i)]`` for the real samples of a batch, None in the dummy slots (``decode``'s list)."""
    out: list[T | None] = [None] * len(batch["key"])
    for i in sample_indices(batch):
        out[i] = make(i)
    return out


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor on any device, detached, as a float32-or-wider numpy array (bf16 widened)."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.cpu().numpy()
