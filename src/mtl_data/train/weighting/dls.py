"""``dls``: dynamic task loss scaling, the weights re-derived from the previous epoch's mean losses.

Leang et al. 2020, "Dynamic Task Weighting Methods for Multi-task Networks in Autonomous Driving
Systems" (ITSC 2020), section IV-A.3. Their two-task rule (eqs. 5-6) is recomputed at the end of
every epoch from the average loss of each task over that epoch::

    L^(e) = w_seg^(e) L_seg + w_det^(e) L_det,    w_seg^(e) = Lbar_det^(e-1) / Lbar_seg^(e-1),    w_det^(e) = 1

so that the weighted losses are brought to the same scale, as the handcrafted weights of
``static`` are, but tracking the losses as they fall. Generalised here to T tasks and to partial
labels with the same rule as ``static``'s ``first_steps`` (one formula for both, so the two
strategies differ only in *when* the weights are measured)::

    Lbar_t = (1 / n_t) sum_{steps s of the epoch, t present at s} L_t^(s)    n_t: steps of the epoch with t present
    U      = {t : n_t > 0 and Lbar_t finite and > 0}                             the tasks measured this epoch
    m_ref  = |U| / sum_{s in U} (1 / Lbar_s)                                      harmonic mean of their averages
    w_t    = m_ref / Lbar_t   for t in U;    w_t = its previous weight   otherwise

Every measured task's weighted average loss is the same, ``w_t Lbar_t = m_ref``, and the weights
of U average 1, so the total keeps the scale of the plain sum (the learning rate stays comparable
with ``equal``); for two tasks ``w_seg / w_det = Lbar_det / Lbar_seg``, eq. 6 up to a common factor.
During epoch 0 every task weighs 1 (there is no previous epoch). A task absent for a whole epoch
(or whose average is 0 or not finite) has nothing to rescale by and keeps its previous weight.
An absent task weighs 0 in the step and its statistics do not move.

State (buffers, in ``state_dict``): ``loss_sum`` (T,) and ``loss_count`` (T,), the current
epoch's accumulated losses and the number of steps each task was present in (reset at each
epoch end), and ``weight`` (T,), the weights of the current epoch. Under DDP the losses are
averaged over ranks before they are accumulated (``mean_over_ranks``), so every rank derives the
same weights, those of the global batch.

Caveat the paper reports: on KITTI this rule collapsed detection (mAP 0.17, Table II): the
weights follow loss *values*, not the tasks' progress; the ratio can become extreme when one
loss falls much faster than the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtl_data.train.weighting.base import (
    EpochLossAverage,
    NoConfig,
    equal_scale_weights,
    register_weighting,
    weighted_sum,
)


@register_weighting
class DynamicLossScaling(EpochLossAverage):
    """Weights from the previous epoch's average losses (module docstring: the formula)."""

    name = "dls"
    Config = NoConfig

    def __init__(self, tasks: Sequence[str], config: NoConfig | None = None):
        super().__init__(tasks, config)
        self.register_buffer("weight", torch.ones(self.num_tasks))  # (T,) weights of this epoch

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        self.accumulate(losses, present)
        weights = torch.where(present, self.weight.to(losses.dtype), torch.zeros_like(losses))  # (T,)
        return weighted_sum(losses, weights, present), weights

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """Derive the next epoch's weights from this epoch's averages, then start a new epoch."""
        mean, measured = self.take_epoch_means()  # (T,) each; measured is the set U
        self.weight.copy_(torch.where(measured, equal_scale_weights(mean, measured), self.weight))
