"""The weighting interface: how the task losses of a step become the one loss that is back-propagated.

A strategy module defines a ``Weighting`` subclass and registers it (``@register_weighting``);
the trainer builds it with ``create_weighting(name, tasks, **options)`` and never names it again
(house style 10). Every strategy is an ``nn.Module``, so learned weights are parameters (the
trainer gives ``weighting.parameters()`` their own optimizer group) and remembered statistics are
buffers: both go into ``state_dict()`` (the checkpoint) and move with ``.to(device)``.

The contract of ``combine(losses, present, step) -> (total, weights)`` (trainer.md sections 3-4):

* ``losses`` (T,): task t's batch loss, in ``tasks`` order, already masked and normalised by the
  global labelled count (0 where no sample labels t);
* ``present`` (T,) bool: some sample on some rank labels t this step (the same on every rank);
* ``step``: the number of optimizer steps done before this one (0 on the first step);
* ``total`` (): ``sum_t w_t L_t`` or the strategy's own combination; finite whenever the present
  tasks' losses are, whatever the absent entries hold;
* ``weights`` (T,): the weight each task got, **exactly 0** for an absent task.

An absent task gets no weight and **no state update** (its statistics, its learned weight's
value). ``combine`` never reads a value back to the host (no ``.item()``, no ``if`` on a tensor):
it selects with ``torch.where``, so every rank runs the same graph under DDP and it compiles
without graph breaks. Python branching on ``step`` (an int) is fine. Per-task state keeps the
task axis first, ``(T, ...)``, so the suite can check that an absent task's row is untouched.

Hooks: ``on_step_end(step)`` after the optimizer step, ``on_epoch_end(epoch)`` when an epoch (a
number of steps, the loader is endless) ends, and ``attach(model)`` once before training, for the
gradient-based strategies that need the model's last shared layer (``shared_parameters``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from mtl_data.errors import MtlDataError

W = TypeVar("W", bound="Weighting")


@dataclass(frozen=True)
class NoConfig:
    """The hyper-parameters of a strategy that has none."""


class Weighting(nn.Module):
    """Base of every weighting strategy (module docstring: the contract of ``combine``).

    Class attributes:
        name: the registry name (``create_weighting(name, ...)``, the trainer's option value).
        Config: its typed hyper-parameter dataclass (every field has a default); its
            ``__post_init__`` raises ``ValueError`` on a refused value.

    Args:
        tasks: the task names, in the order of ``losses`` and ``present``.
        config: a ``Config``; None: the defaults.

    Raises:
        MtlDataError: no task, or a task given twice.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    #: True when the strategy computes the gradients itself (``backward``) instead of the trainer
    #: back-propagating ``combine``'s total: gradient-conflict methods aggregate the tasks'
    #: gradients of the shared parameters.
    custom_backward: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str], config: Any = None):
        super().__init__()
        tasks = tuple(tasks)
        if not tasks:
            raise MtlDataError(f"weighting {self.name}: no task to weigh")
        twice = sorted({t for t in tasks if tasks.count(t) > 1})
        if twice:
            raise MtlDataError(f"weighting {self.name}: task {', '.join(twice)} given twice")
        self.tasks: tuple[str, ...] = tasks
        self.config = self.Config() if config is None else config
        # Plain tuple, not a submodule: the shared layer belongs to the model, not to this
        # module's parameters() or state_dict().
        self._shared: tuple[nn.Parameter, ...] = ()

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    # ---- the contract --------------------------------------------------------------------------

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``losses`` (T,), ``present`` (T,) bool, ``step`` -> (total (), weights (T,)).

        See the module docstring for the contract every strategy keeps.
        """
        raise NotImplementedError

    def forward(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``combine`` (so module hooks see the call)."""
        return self.combine(losses, present, step)

    def backward(
        self, losses: torch.Tensor, present: torch.Tensor, step: int, scale: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``custom_backward`` strategies: fill the ``.grad`` of every trained parameter from
        ``losses`` (as a ``total.backward()`` would, but with the strategy's own combination of the
        tasks' gradients), and return (total (), weights (T,)) for logging.

        Args:
            losses, present, step: as ``combine``.
            scale: multiplies a loss by the fp16 gradient scaler's scale (the identity otherwise);
                apply it to whatever is back-propagated.
        """
        raise NotImplementedError(f"weighting {self.name} has no custom backward")

    # ---- hooks ---------------------------------------------------------------------------------

    def on_step_end(self, step: int) -> None:
        """Called after optimizer step ``step`` (the ``step`` its ``combine`` got). Default: nothing."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called when epoch ``epoch`` (0-based; the trainer counts epochs in steps) ends. Default: nothing."""

    def attach(self, model: nn.Module) -> None:
        """Called once with the model before training. Default: nothing.

        A gradient-based strategy (GradNorm and kin) overrides it to keep the parameters of the
        model's last shared layer with ``self._shared = tuple(...)``; they are then
        ``shared_parameters``, and are neither this module's parameters nor in its state.
        """

    @property
    def shared_parameters(self) -> tuple[nn.Parameter, ...]:
        """The model's shared parameters the strategy differentiates through (empty unless attached)."""
        return self._shared

    # ---- helpers for strategies ----------------------------------------------------------------

    def check_inputs(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """Refuse inputs of the wrong shape or dtype (shapes and dtypes only: no host sync)."""
        shape = (self.num_tasks,)
        if tuple(losses.shape) != shape or tuple(present.shape) != shape:
            raise ValueError(
                f"weighting {self.name}: losses and present must have shape {shape} (tasks "
                f"{', '.join(self.tasks)}), got {tuple(losses.shape)} and {tuple(present.shape)}"
            )
        if present.dtype != torch.bool:
            raise ValueError(f"weighting {self.name}: present must be a bool tensor, got {present.dtype}")

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, config={self.config}"


@torch.no_grad()
def accumulate_losses(
    loss_sum: torch.Tensor, loss_count: torch.Tensor, losses: torch.Tensor, present: torch.Tensor
) -> None:
    """Add this step's losses of the present tasks, averaged over ranks (the global batch's), to
    ``loss_sum`` (T,) and count the step in ``loss_count`` (T,), in place. Every rank adds the
    same numbers, so every rank derives the same weights from them."""
    value = mean_over_ranks(losses).to(loss_sum.dtype)  # (T,) detached
    # where(), not a masked add: an absent row is copied back bit for bit, whatever its loss holds.
    loss_sum.copy_(torch.where(present, loss_sum + value, loss_sum))
    loss_count.copy_(torch.where(present, loss_count + 1, loss_count))


def mean_losses(loss_sum: torch.Tensor, loss_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, measured)``, each (T,): the accumulated average losses and which tasks were
    measured (present at least once, average finite and > 0)."""
    mean = loss_sum / loss_count.clamp_min(1)
    return mean, (loss_count > 0) & torch.isfinite(mean) & (mean > 0)


def equal_scale_weights(mean: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """(T,) ``m_ref / mean_t`` on the ``measured`` tasks (0 elsewhere), ``m_ref`` the harmonic
    mean of their means: the weights that bring every measured task's mean loss to the same
    value, averaging 1 over them (``static``'s first steps, ``dls``'s epochs). No host sync;
    NaN-free for any ``mean``.

    Computed as ``(min_U mean / mean_t) / (its mean over U)``: every ratio is in (0, 1] before
    the division, so no tiny mean overflows ``1 / mean_t``.
    """
    safe = torch.where(measured, mean, torch.ones_like(mean))
    smallest = torch.where(measured, mean, torch.full_like(mean, math.inf)).amin()
    ratio = torch.where(measured, smallest / safe, torch.zeros_like(mean))  # (T,) in (0, 1]
    ratio_mean = ratio.sum() / measured.sum().clamp_min(1)
    return torch.where(measured, ratio / ratio_mean.clamp_min(torch.finfo(mean.dtype).tiny), torch.zeros_like(mean))


class EpochLossAverage(Weighting):
    """A strategy that re-derives its weights at each epoch end from the epoch's average losses
    (``dls``, ``dwa``): the shared accumulation, not registered itself.

    State (buffers, in ``state_dict``): ``loss_sum`` (T,) and ``loss_count`` (T,), the current
    epoch's summed (global-batch) losses and the number of steps each task was present in.
    """

    def __init__(self, tasks: Sequence[str], config: Any = None):
        super().__init__(tasks, config)
        self.register_buffer("loss_sum", torch.zeros(self.num_tasks))  # (T,) this epoch
        self.register_buffer("loss_count", torch.zeros(self.num_tasks))  # (T,) steps present this epoch

    def accumulate(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """Add this step's losses of the present tasks to the epoch's sums."""
        accumulate_losses(self.loss_sum, self.loss_count, losses, present)

    @torch.no_grad()
    def take_epoch_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean_losses`` of the epoch; then start a new epoch."""
        out = mean_losses(self.loss_sum, self.loss_count)
        self.loss_sum.zero_()
        self.loss_count.zero_()
        return out


def weighted_sum(losses: torch.Tensor, weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t L_t`` over the present tasks: () from (T,) each.

    The absent entries are replaced by 0 before the product, so a NaN or inf left in an absent
    loss can reach neither the total nor a gradient (``where`` sends the unselected side a zero
    gradient; a product would send it ``0 * nan``).
    """
    safe = torch.where(present, losses, torch.zeros_like(losses))  # (T,)
    return (torch.where(present, weights, torch.zeros_like(weights)) * safe).sum()


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the data-parallel processes (a detached copy; itself on one process).

    For statistics a strategy remembers: each rank's losses are its share of the global batch
    (``steps.task_losses``), so their mean over ranks is the global batch's loss, and every rank
    then remembers the same numbers (the checkpoint, written by rank 0, holds them all). A
    collective, not a host read: every rank calls ``combine`` on every step.
    """
    out = values.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def finite_nonnegative(value: Any) -> bool:
    """``value`` is a real number (not a bool), finite and >= 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def task_weight_table(weights: Any) -> dict[str, float] | None:
    """A config's ``{task: weight}`` table, checked (string keys, finite weights >= 0) and with
    float values; ``None`` stays ``None``. Raises ``ValueError`` naming what was refused."""
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a {{task: weight}} table, got {weights!r}")
    bad = [f"{k}={v!r}" for k, v in weights.items() if not isinstance(k, str) or not finite_nonnegative(v)]
    if bad:
        raise ValueError(f"weights must be finite numbers >= 0; refused: {', '.join(bad)}")
    return {k: float(v) for k, v in weights.items()}


# ---- the registry ------------------------------------------------------------------------------

_WEIGHTINGS: dict[str, type[Weighting]] = {}


def register_weighting(cls: type[W]) -> type[W]:
    """Class decorator: make ``cls`` the weighting strategy ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _WEIGHTINGS:
        raise ValueError(f"weighting {cls.name!r} registered twice")
    if not dataclasses.is_dataclass(cls.Config):
        raise ValueError(f"weighting {cls.name!r}: Config must be a dataclass")
    _WEIGHTINGS[cls.name] = cls
    return cls


def list_weightings() -> list[str]:
    """The registered strategies, sorted by name."""
    return sorted(_WEIGHTINGS)


def weighting_class(name: str) -> type[Weighting]:
    """The registered ``Weighting`` subclass of ``name``; MtlDataError listing the strategies otherwise."""
    try:
        return _WEIGHTINGS[name]
    except KeyError:
        raise MtlDataError(f"unknown weighting {name!r}; choose from {', '.join(list_weightings())}") from None


def create_weighting(name: str, tasks: Sequence[str], **config: Any) -> Weighting:
    """The strategy ``name`` for ``tasks`` (in loss order), its ``Config`` fields overridden by ``config``.

    Raises:
        MtlDataError: an unknown strategy or option, a value its ``Config`` refuses, or a
            problem the strategy finds with its inputs (a task name, a weights file).
    """
    cls = weighting_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise MtlDataError(
            f"weighting {name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields)) or 'none'}"
        )
    try:
        built = cls.Config(**config)
    except (TypeError, ValueError) as exc:  # the Config's own checks
        raise MtlDataError(f"weighting {name}: {exc}") from None
    return cls(tasks, built)
