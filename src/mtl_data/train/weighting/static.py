"""``static``: fixed task weights, set by hand, from a stats report, or from the first steps' losses.

Leang et al. 2020, "Dynamic Task Weighting Methods for Multi-task Networks in Autonomous Driving
Systems" (ITSC 2020), section IV-A.2, *handcrafted task weighting*: the weights are chosen once,
so that the task losses are brought to the same scale, and stay constant during training. The
total is ``L = sum_{t present} w_t L_t`` (their eq. 3); an absent task gets weight 0. Exactly one
of three sources gives the ``w_t`` (none: every task weighs 1, the same as ``equal``):

* ``weights`` = ``{task: w}``: by hand, used as written (tasks left out weigh 1). For a
  practitioner's weights from short trials, or a previous run's.
* ``stats`` = a ``mtl-data stats --json`` report, and ``rule``: its
  ``recommendations.task_weights[rule][task]`` (``inverse_frequency`` 1/n,
  ``sqrt_inverse_frequency`` 1/sqrt n, ``effective_number`` (1-beta)/(1-beta^n); n = labelled
  training samples of the task; docs/conventions.md "Stats report"). They correct for how
  *often* each task is labelled, not for its loss scale. The report normalises them to mean 1
  over every task it counts; here they are renormalised to mean 1 over the run's tasks
  (``w_t = r_t / mean_s r_s``), so a run on a subset of the tasks keeps the scale of the plain
  sum, as the report means them to (only the ratios matter for the direction of the gradient;
  the mean sets the effective learning rate, which must stay comparable across strategies).
* ``first_steps`` = N > 0: Leang et al.'s ratio of the losses of the first iterations (their
  eq. 4: ``w_seg = L_det(t=0) / L_seg(t=0)``, ``w_det = 1``), generalised to T tasks and to
  partial labels. During steps ``0 .. N-1`` every present task weighs 1 and each task's loss is
  accumulated over the steps where it is present (``loss_sum``, ``loss_count``; an absent task's
  entries do not move)::

      mean_t = (1 / n_t) sum_{s < N, t present at s} L_t^(s)       n_t = steps < N where t is present

  From step N on the weights are fixed::

      U     = {t : n_t > 0 and mean_t finite and > 0}              the tasks measured
      m_ref = |U| / sum_{s in U} (1 / mean_s)                      harmonic mean of their means
      w_t   = m_ref / mean_t   for t in U,    w_t = 1   otherwise

  so every measured task's weighted loss starts at the same value, ``w_t mean_t = m_ref``, and
  the weights of U average 1 (the harmonic mean is the one reference that does both); for two
  tasks ``w_seg / w_det = mean_det / mean_seg``, eq. 4 up to a common factor. A task never
  present in the first N steps (or whose mean is 0 or not finite) has no scale to correct and
  keeps weight 1. The mean over N steps replaces the paper's single first iteration: one
  step's loss is noisy, and with partial labels a task may be absent from it. Under DDP the
  losses are averaged over ranks before they are accumulated (``mean_over_ranks``), so every
  rank fixes the same weights, those of the global batch. Steps are counted from 0.

Why fixed weights at all: the paper's own footnote says that gradients, not loss values, are the
sound basis; this is the cheap baseline practitioners use, and the reference the dynamic
strategies must beat.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mtl_data.errors import MtlDataError
from mtl_data.stats.formulas import WEIGHT_RULES
from mtl_data.stats.recommendations import read_recommendations
from mtl_data.train.weighting.base import (
    Weighting,
    accumulate_losses,
    equal_scale_weights,
    finite_nonnegative,
    mean_losses,
    register_weighting,
    task_weight_table,
    weighted_sum,
)


@dataclass(frozen=True)
class StaticConfig:
    """Hyper-parameters of ``static``; at most one of ``weights``, ``stats`` and ``first_steps``.

    Attributes:
        weights: task -> weight (finite, >= 0); a task left out weighs 1.
        stats: path of a ``mtl-data stats --json`` report (needs ``rule``).
        rule: the report's task-weight rule: a key of ``recommendations.task_weights``
            (``inverse_frequency``, ``sqrt_inverse_frequency``, ``effective_number``).
        first_steps: N > 0: weights from the mean losses of steps 0 .. N-1 (module docstring).
    """

    weights: dict[str, float] | None = None
    stats: str | None = None
    rule: str | None = None
    first_steps: int | None = None

    def __post_init__(self) -> None:
        chosen = [name for name in ("weights", "stats", "first_steps") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(
                f"{' and '.join(chosen)} are exclusive: the weights come from one of weights, "
                "stats (+ rule) or first_steps"
            )
        object.__setattr__(self, "weights", task_weight_table(self.weights))
        if self.stats is not None:
            if not isinstance(self.stats, (str, os.PathLike)) or not str(self.stats):
                raise ValueError(f"stats must be the path of a `mtl-data stats --json` report, got {self.stats!r}")
            object.__setattr__(self, "stats", str(self.stats))
            if self.rule is None:
                raise ValueError(
                    f"stats {self.stats} needs a rule: one of {', '.join(WEIGHT_RULES)} "
                    "(the report's recommendations.task_weights keys)"
                )
        if self.rule is not None:
            if self.stats is None:
                raise ValueError(f"rule {self.rule!r} picks weights from a stats report: set stats too")
            if not isinstance(self.rule, str):
                raise ValueError(f"rule must be a name, one of {', '.join(WEIGHT_RULES)}; got {self.rule!r}")
        if self.first_steps is not None and (
            isinstance(self.first_steps, bool) or not isinstance(self.first_steps, int) or self.first_steps <= 0
        ):
            raise ValueError(f"first_steps must be an integer > 0, got {self.first_steps!r}")


@register_weighting
class Static(Weighting):
    """Fixed weights (module docstring: the three sources and the first-steps formula).

    Buffers (in ``state_dict``): ``table`` (T,), the weights from ``weights`` / ``stats`` (ones
    when neither is set); or, with ``first_steps``, ``loss_sum`` (T,) and ``loss_count`` (T,),
    the first steps' accumulated losses and the number of steps each task was present in.

    Raises:
        MtlDataError: a task of ``weights`` the run does not train, every weight 0, or a stats
            report that cannot be read, lacks the rule or a task, or holds a refused weight
            (each naming the file).
    """

    name = "static"
    Config = StaticConfig

    def __init__(self, tasks: Sequence[str], config: StaticConfig | None = None):
        super().__init__(tasks, config)
        c = self.config
        if c.first_steps is not None:
            self.register_buffer("loss_sum", torch.zeros(self.num_tasks))  # (T,)
            self.register_buffer("loss_count", torch.zeros(self.num_tasks))  # (T,) steps present
        else:
            table = (
                report_weights(Path(c.stats), c.rule, self.tasks)
                if c.stats is not None
                else self._hand_weights(c.weights or {})
            )
            self.register_buffer("table", torch.tensor(table, dtype=torch.float32))  # (T,)

    def _hand_weights(self, weights: Mapping[str, float]) -> list[float]:
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise MtlDataError(
                f"weighting static: weights name task(s) {', '.join(unknown)} that the run does not "
                f"train; its tasks: {', '.join(self.tasks)}"
            )
        table = [weights.get(t, 1.0) for t in self.tasks]
        if not any(table):
            raise MtlDataError("weighting static: every weight is 0, so no task would be trained")
        return table

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        first = self.config.first_steps
        if first is not None and step < first:
            accumulate_losses(self.loss_sum, self.loss_count, losses, present)
            fixed = torch.ones_like(losses)  # (T,) equal weights while measuring
        else:
            fixed = self.fixed_weights().to(losses.dtype)  # (T,)
        weights = torch.where(present, fixed, torch.zeros_like(fixed))  # (T,) 0 where absent
        return weighted_sum(losses, weights, present), weights

    @torch.no_grad()
    def fixed_weights(self) -> torch.Tensor:
        """(T,) the weight of each task when present: the table, or the first-steps formula
        applied to what has been accumulated so far (the final weights from step N on)."""
        if self.config.first_steps is None:
            return self.table.clone()
        mean, measured = mean_losses(self.loss_sum, self.loss_count)  # (T,) each; measured is the set U
        return torch.where(measured, equal_scale_weights(mean, measured), torch.ones_like(mean))


def report_weights(path: Path, rule: str, tasks: Sequence[str]) -> list[float]:
    """``tasks``' weights under ``rule`` in the stats report at ``path``, renormalised to mean 1 over ``tasks``.

    Raises:
        MtlDataError: naming ``path``: it cannot be read, is not JSON, has no
            ``recommendations.task_weights``, not ``rule`` (the error lists the rules it has),
            no weight for one of ``tasks``, or a weight that is not a finite number >= 0.
    """
    where = f"weighting static: stats report {path}"
    rules = read_recommendations(path, "task_weights", where)
    if rule not in rules:
        raise MtlDataError(f"{where}: no task-weight rule {rule!r}; the report has {', '.join(sorted(rules))}")
    table = rules[rule]
    if not isinstance(table, dict):
        raise MtlDataError(f"{where}: recommendations.task_weights.{rule} is not a {{task: weight}} table")
    missing = [t for t in tasks if t not in table]
    if missing:
        raise MtlDataError(
            f"{where}: recommendations.task_weights.{rule} has no weight for {', '.join(missing)} "
            f"(no training sample of its shards labels it); it weighs {', '.join(table) or 'no task'}"
        )
    bad = [f"{t}={table[t]!r}" for t in tasks if not finite_nonnegative(table[t])]
    if bad:
        raise MtlDataError(
            f"{where}: recommendations.task_weights.{rule} holds weights that are not finite numbers "
            f">= 0: {', '.join(bad)}"
        )
    raw = [float(table[t]) for t in tasks]
    mean = math.fsum(raw) / len(raw)
    if mean == 0:
        raise MtlDataError(f"{where}: recommendations.task_weights.{rule} weighs every task of the run 0")
    return [w / mean for w in raw]
