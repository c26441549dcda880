"""``gls``: the geometric loss strategy, the total is the geometric mean of the present task losses.

Chennupati, Sistu, Yogamani and Rawashdeh 2019, "MultiNet++: Multi-Stream Feature Aggregation
and Geometric Loss Strategy for Multi-Task Learning" (CVPR Workshops 2019), eq. 1; also Leang et
al. 2020 section IV-A.6 (eq. 7). Parameter-free::

    L = (prod_{t present} L_t)^(1 / n),      n = number of present tasks

The geometric mean is invariant to each loss's scale (multiplying L_t by c multiplies L by
c^(1/n), a constant for the optimiser's direction), and it is a weighted sum in disguise: its
gradient is ``dL/dL_t = L / (n L_t)``, so a task whose loss is already small is pushed *harder*
(relative progress counts, not absolute), which "makes sure that all tasks are making progress".

Partial labels: the product runs over the present tasks only, so with one task absent the total
is the geometric mean of the others (not 0, as a product with a 0 loss would be); with no task
present it is 0. Reported weights are the effective gradient weights ``w_t = L / (n L_t)`` of the
present tasks (detached), 0 for the absent ones.

Numerics: computed as ``exp(mean_t log max(L_t, EPS))``; the clamp keeps ``log 0`` out (a loss
that is exactly 0, e.g. a task already fitted). A clamped task gets weight 0 (the clamp's
gradient) while it stays below EPS, and it pulls the total towards 0, shrinking every other
task's weight with it: GLS is fragile when one loss nears 0, which the paper does not discuss.

Under DDP, each rank's losses are its share of the global batch times the world size, and a rank
may hold no sample of a globally present task (its L_t is 0 there): the geometric mean of one
rank's losses is then ~0 and its gradient useless. So the weights are computed from the global
losses (``mean_over_ranks``, detached) and the total is built as ``L(global) + sum_t w_t (L_t -
sg(L_t))`` (``sg`` = stop-gradient): its value is the global geometric mean on every rank and its
gradient ``sum_t w_t dL_t``; after DDP averages the ranks' gradients, that is exactly the gradient
of the global batch's geometric mean. On one process it is the plain formula, value and gradient.
"""

from __future__ import annotations

import torch

from mtl_data.train.weighting.base import NoConfig, Weighting, mean_over_ranks, register_weighting

#: the floor of a loss inside the log: below it a task has weight 0 (module docstring).
EPS = 1e-12


def power_product(
    losses: torch.Tensor, present: torch.Tensor, exponents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prod_{t present} L_t^{a_t}`` (0 if no task is present) and its gradient weights ``a_t L / L_t``.

    Args:
        losses: (T,) this rank's task losses.
        present: (T,) bool.
        exponents: (T,) ``a_t`` >= 0 (read on the present tasks only).

    Returns:
        total (): the product of the global losses in value, ``sum_t w_t L_t`` in gradient (module
            docstring: why global); weights (T,): ``w_t = dL / dL_t`` detached, 0 absent or clamped.
    """
    dtype = losses.dtype
    # float32 at least: EPS must not round to 0 (fp16) before the log.
    glob = mean_over_ranks(losses).to(torch.promote_types(dtype, torch.float32))  # (T,) detached
    a = exponents.to(glob.dtype)
    safe = torch.where(present, glob, torch.ones_like(glob)).clamp_min(EPS)  # (T,) absent -> 1: log 0
    log_total = torch.where(present, a * torch.log(safe), torch.zeros_like(glob)).sum()
    value = torch.where(present.any(), torch.exp(log_total), torch.zeros_like(log_total))  # ()
    active = present & (glob >= EPS)  # below EPS the clamp passes no gradient
    weights = torch.where(active, value * a / safe, torch.zeros_like(glob)).to(dtype)  # (T,)
    local = torch.where(present, losses, torch.zeros_like(losses))  # no NaN from an absent entry
    # value in the forward, sum_t w_t dL_t in the backward (local - sg(local) is exactly 0)
    total = value.to(dtype) + (weights * (local - local.detach())).sum()
    return total, weights


@register_weighting
class Geometric(Weighting):
    """``L = (prod_{t present} L_t)^(1/n)`` (module docstring)."""

    name = "gls"
    Config = NoConfig

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        n = present.sum().clamp_min(1).to(losses.dtype)
        return power_product(losses, present, present.to(losses.dtype) / n)
