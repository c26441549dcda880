"""``async``: asynchronous (task-selective) backpropagation, task t applied every nu_t steps.

Leang et al. 2020, "Dynamic Task Weighting Methods for Multi-task Networks in Autonomous Driving
Systems" (ITSC 2020), section IV-D, eqs. 10-12: to balance the tasks' convergence speeds, a task
that converges fast is back-propagated less often, by setting its loss weight to 0 on the
iterations where it is skipped::

    L^(s) = sum_t w_t^(s) L_t^(s),      w_t^(s) = w_t  if s mod nu_t == 0  else 0

with ``s`` the optimizer step (0-based: every task is applied at step 0), ``nu_t`` the task's
update frequency (``frequencies``, an integer >= 1; 1 = every step) and ``w_t`` an optional
static weight (``weights``; their meta-learning searches both, nu in 1..10, and the weights on a
log scale normalised to sum 1; eq. 11-12 have ``w = 1``). A task is applied on
``floor((N - 1) / nu_t) + 1`` of the first N steps.

The applied loss is **not** scaled by nu_t (eq. 12 gives weight 1.0 on the applied steps): the
point is to slow the fast task down, so its average contribution is ``w_t / nu_t``. On a skipped
step the task is treated as absent: weight exactly 0 (no gradient from its loss). An absent
task is also 0 on its applied steps (its turn is not carried over). No state: the schedule is a
function of the step.

The option names ``weights`` and ``frequencies`` are relied on by the evolutionary search
(trainer.md section 4), which proposes both.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting.base import Weighting, register_weighting, task_weight_table, weighted_sum


@dataclass(frozen=True)
class AsyncConfig:
    """Hyper-parameters of ``async``.

    Attributes:
        weights: task -> static weight (finite, >= 0); a task left out weighs 1.
        frequencies: task -> nu_t, an integer >= 1 (apply the task on steps where
            ``step % nu_t == 0``); a task left out has 1 (every step).
    """

    weights: dict[str, float] | None = None
    frequencies: dict[str, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", task_weight_table(self.weights))
        if self.frequencies is not None:
            if not isinstance(self.frequencies, Mapping):
                raise ValueError(f"frequencies must be a {{task: steps}} table, got {self.frequencies!r}")
            bad = [
                f"{k}={v!r}"
                for k, v in self.frequencies.items()
                if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
            ]
            if bad:
                raise ValueError(
                    f"frequencies must be integers >= 1 (apply the task every nu steps); refused: {', '.join(bad)}"
                )
            object.__setattr__(self, "frequencies", {k: int(v) for k, v in self.frequencies.items()})


@register_weighting
class AsyncBackprop(Weighting):
    """``w_t`` on steps where ``step % nu_t == 0``, 0 otherwise (module docstring).

    Raises:
        MtlDataError: ``weights`` or ``frequencies`` name a task the run does not train, or
            every weight is 0.
    """

    name = "async"
    Config = AsyncConfig

    def __init__(self, tasks: Sequence[str], config: AsyncConfig | None = None):
        super().__init__(tasks, config)
        weights, frequencies = self.config.weights or {}, self.config.frequencies or {}
        for option, table in (("weights", weights), ("frequencies", frequencies)):
            unknown = sorted(set(table) - set(self.tasks))
            if unknown:
                raise MtlDataError(
                    f"weighting async: {option} name task(s) {', '.join(unknown)} that the run does "
                    f"not train; its tasks: {', '.join(self.tasks)}"
                )
        if not any(weights.get(t, 1.0) for t in self.tasks):
            raise MtlDataError("weighting async: every weight is 0, so no task would be trained")
        # Derived from the config: they move with .to() but are not checkpointed.
        self.register_buffer(
            "static", torch.tensor([weights.get(t, 1.0) for t in self.tasks]), persistent=False
        )  # (T,) w_t
        self.register_buffer(
            "frequency", torch.tensor([frequencies.get(t, 1) for t in self.tasks]), persistent=False
        )  # (T,) long, nu_t

    def applied(self, step: int) -> torch.Tensor:
        """(T,) bool: the tasks whose turn it is at ``step`` (``step % nu_t == 0``)."""
        return torch.remainder(torch.full_like(self.frequency, step), self.frequency) == 0

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        on = present & self.applied(step)  # a skipped task counts as absent this step
        static = self.static.to(losses.dtype)
        weights = torch.where(on, static, torch.zeros_like(static))  # (T,)
        return weighted_sum(losses, weights, on), weights
