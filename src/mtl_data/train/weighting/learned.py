"""``learned``: task weights learned by back-propagation, a softmax over learnable logits.

Leang et al. 2020, "Dynamic Task Weighting Methods for Multi-task Networks in Autonomous Driving
Systems" (ITSC 2020), section IV-B, *weight learning*, for two tasks (eqs. 8-9)::

    L = alpha L_seg + (1 - alpha) L_det,        alpha = sigmoid(w),  w learned with the network

updated at every mini-batch. Generalised to T tasks and to partial labels as a softmax over
learnable logits ``z`` (T,), taken over the **present** tasks only::

    p_t = exp(z_t) / sum_{s present} exp(z_s)   (t present; 0 absent)
    w_t = K p_t,     L = sum_{t present} w_t L_t

For two tasks ``p_1 = sigmoid(z_1 - z_2)``: eqs. 8-9 with ``w = z_1 - z_2`` (a
reparameterisation: plain SGD moves the difference twice as fast as it would move a single
``w``). ``scale`` sets K:

* ``"mean"`` (default): K = the number of present tasks, so the weights average 1 and the total
  starts (z = 0) at the plain sum, as every other strategy here does: the model's learning rate
  means the same whatever the strategy. For two tasks this is eq. 8 times 2.
* ``"sum"``: K = 1, the weights sum to 1: eq. 8 exactly (``alpha L_1 + (1 - alpha) L_2``).

Behaviour, as the paper has it: there is **no regulariser**. ``dL/dz_t = w_t (L_t - sum_s p_s
L_s)``, so gradient descent moves weight onto the task with the smallest loss, and without a
counter-term the weights drift towards all-on-one-task; the paper relies on the bounded
(sigmoid) weights, "bounding the weights in [0, 1] implicitly regularizes learning by removing
the risk of having extremely unbalanced task weights", and on the slow drift through the
saturating sigmoid within a training run. Its Table II shows it competitive (0.5818 overall).
Give the ``weighting`` optimizer part a small learning rate (or none: ``lr = 0`` freezes it) if
the weights run away.

Partial labels: an absent task weighs 0 and its logit gets an exactly-zero gradient (it is
outside the softmax, not in it with weight 0); the present tasks share the K among themselves.

Parameters (in ``parameters()`` and ``state_dict``): ``logits`` (T,), zeros at the start (equal
weights). They need their own optimizer group and, under DDP, their gradients averaged over
ranks by the trainer (they live outside the DDP module).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtl_data.train.weighting.base import Weighting, register_weighting, weighted_sum
from mtl_data.train.weighting.dwa import present_softmax

SCALES = ("mean", "sum")


@dataclass(frozen=True)
class LearnedConfig:
    """Hyper-parameters of ``learned``.

    Attributes:
        scale: ``"mean"``: the present weights average 1 (sum to their number); ``"sum"``: they
            sum to 1, Leang et al.'s eq. 8 exactly.
    """

    scale: str = "mean"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")


@register_weighting
class Learned(Weighting):
    """``w = K softmax_present(logits)``, the logits learned (module docstring)."""

    name = "learned"
    Config = LearnedConfig

    def __init__(self, tasks: Sequence[str], config: LearnedConfig | None = None):
        super().__init__(tasks, config)
        self.logits = nn.Parameter(torch.zeros(self.num_tasks))  # (T,) z_t

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        weights = present_softmax(self.logits.to(losses.dtype), present)  # (T,) n_present * p_t, in the graph
        if self.config.scale == "sum":
            weights = weights / present.sum().clamp_min(1).to(losses.dtype)
        return weighted_sum(losses, weights, present), weights.detach()
