"""``dwa``: Dynamic Weight Average, weights from how fast each task's epoch-average loss falls.

Liu, Johns and Davison 2019, "End-to-End Multi-Task Learning with Attention" (CVPR 2019), the
Dynamic Weight Average of its multi-task objective::

    w_t(e) = K exp(r_t(e-1) / tau) / sum_s exp(r_s(e-1) / tau),     r_t(e-1) = Lbar_t(e-1) / Lbar_t(e-2)

``Lbar_t(e)`` is task t's average loss over epoch e, ``tau`` the ``temperature`` (2 in the
paper; larger is softer, tau -> inf gives equal weights), K the number of tasks, so the weights
sum to K. A task whose loss falls slowly (r near or above 1) gets more weight. Weights are 1 for
the first two epochs (no ratio yet).

Partial labels (this project's choices):

* The softmax runs over the **present** tasks only and K is their number, so the present
  weights sum to the number of present tasks (mean 1, the scale of the plain sum) and an
  absent task weighs exactly 0: ``w_t = n_p exp(r_t / tau) / sum_{s present} exp(r_s / tau)``.
* ``Lbar_t(e)`` averages task t's loss over the steps of epoch e where t is present. ``r_t`` is
  the ratio of the task's two most recent *measured* epochs (an epoch where it was present at
  least once with a finite average > 0); an epoch where it was never measured leaves its
  history unchanged. Until a task has two measured epochs, ``r_t = 1`` (no evidence of
  descent); with every task measured every epoch this is exactly "weights 1 for the first two
  epochs".
* ``r_t`` is clipped to the largest finite float, so a ratio that overflows cannot turn the
  softmax into NaN.

State (buffers, in ``state_dict``): ``loss_sum`` (T,) and ``loss_count`` (T,), the current
epoch's accumulation (reset at each epoch end); ``history`` (T, 2), the task's two latest
measured epoch averages ``[older, newer]``; ``measured`` (T,), how many epochs it has been
measured in (capped at 2). Under DDP the losses are averaged over ranks before they are
accumulated, so every rank keeps the same history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mtl_data.train.weighting.base import EpochLossAverage, finite_nonnegative, register_weighting, weighted_sum


@dataclass(frozen=True)
class DWAConfig:
    """Hyper-parameters of ``dwa``.

    Attributes:
        temperature: tau > 0, the softness of the softmax over the loss-descent ratios (the
            paper's 2).
    """

    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not finite_nonnegative(self.temperature) or self.temperature == 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        object.__setattr__(self, "temperature", float(self.temperature))


def present_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(T,) ``n_p softmax(logits over the present tasks)``, 0 on the absent ones (all 0 if none present).

    Stable and NaN-free for any finite ``logits``, in value and gradient: the absent entries are
    replaced by 0 *before* ``exp`` (a ``where`` after it would send ``0 * inf`` back on an
    overflowing absent entry), and the shift is the largest present logit (detached: softmax does
    not depend on it), so every present ``exp`` is <= 1 and the largest is 1.
    """
    shift = torch.where(present, logits, logits.detach().amin()).detach().amax()
    z = torch.where(present, logits - shift, torch.zeros_like(logits))
    e = torch.where(present, torch.exp(z), torch.zeros_like(logits))  # (T,)
    n_present = present.sum().to(logits.dtype)
    return n_present * e / e.sum().clamp_min(torch.finfo(logits.dtype).tiny)


@register_weighting
class DynamicWeightAverage(EpochLossAverage):
    """``w_t = n_p softmax_present(r_t / tau)`` with the epoch-average loss ratios (module docstring)."""

    name = "dwa"
    Config = DWAConfig

    def __init__(self, tasks: Sequence[str], config: DWAConfig | None = None):
        super().__init__(tasks, config)
        self.register_buffer("history", torch.ones(self.num_tasks, 2))  # (T, 2) [older, newer] epoch means
        self.register_buffer("measured", torch.zeros(self.num_tasks))  # (T,) epochs measured, capped at 2

    def ratios(self) -> torch.Tensor:
        """(T,) ``r_t``: newer / older measured epoch average, 1 until a task has two."""
        older, newer = self.history[:, 0], self.history[:, 1]
        ready = self.measured >= 2
        r = torch.where(ready, newer / torch.where(ready, older, torch.ones_like(older)), torch.ones_like(newer))
        return r.clamp_max(torch.finfo(r.dtype).max)

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        self.accumulate(losses, present)
        weights = present_softmax((self.ratios() / self.config.temperature).to(losses.dtype), present)  # (T,)
        return weighted_sum(losses, weights, present), weights

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """Push this epoch's averages into the history of the tasks measured in it; start a new epoch."""
        mean, measured = self.take_epoch_means()  # (T,) each
        ok = measured.unsqueeze(1)  # (T, 1)
        shifted = torch.stack([self.history[:, 1], mean], dim=1)  # (T, 2)
        self.history.copy_(torch.where(ok, shifted, self.history))
        self.measured.copy_(torch.where(measured, (self.measured + 1).clamp_max(2), self.measured))
