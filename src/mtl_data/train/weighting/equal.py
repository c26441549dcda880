"""``equal``: every present task weighs 1 (no task weighting).

Leang et al. 2020, "Dynamic Task Weighting Methods for Multi-task Networks in Autonomous Driving
Systems" (ITSC 2020), section IV-A.1: the plain sum of the task losses, ``L = sum_t L_t``. It is
the baseline every other strategy is compared with, and what a multi-task network gets when
nobody weighs its losses; it is sensitive to the tasks' loss scales and to how often each task
is labelled, which is what the other strategies try to correct.

With partial labels: ``w_t = 1`` if task t is present in the step, else 0, so
``L = sum_{t present} L_t``. No state, no hyper-parameter.
"""

from __future__ import annotations

import torch

from mtl_data.train.weighting.base import Weighting, register_weighting, weighted_sum


@register_weighting
class Equal(Weighting):
    """``w_t = 1`` for the present tasks, 0 for the absent ones (module docstring)."""

    name = "equal"

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        weights = present.to(losses.dtype)  # (T,) 1 present, 0 absent
        return weighted_sum(losses, weights, present), weights
