"""Gradient-conflict methods: ``pcgrad``, ``mgda``, ``cagrad``. Each combines the present tasks' gradients
of the shared parameters into one update direction instead of weighting their losses.

The shared parameters are the encoder's and the neck's (every part of ``model.parts()`` but the
heads; ``attach``); the heads are trained on their own task's loss, as in all three papers (a
head only depends on its task's loss, so the gradient of ``sum_t L_t`` on the heads is exactly
that). At each step, with P the present tasks, ``backward``:

1. computes each present task's gradient of its (scaled) loss, ``g_t = grad_theta L_t``, on the
   shared parameters and the heads: one ``torch.autograd.grad`` pass per present task (P
   backward passes where the other strategies do 1);
2. under DDP, averages the P shared gradients and the heads' gradient over ranks (one
   all-reduce), so that the aggregation sees the global batch's task gradients;
3. aggregates from the P x P Gramian ``M = J J^T`` of the rows ``J = [g_1; ...; g_P]``: the method
   gives coefficients ``a`` (P,) and the update is ``d = sum_t a_t g_t``;
4. writes ``d`` into the shared parameters' ``.grad`` and the summed task gradients into the
   heads' (0 for an absent task's head, as the other strategies give it); every attached
   parameter gets a ``.grad`` (0 where no present loss reaches it).

``weights`` (for logging) are the ``a_t`` (0 for an absent task), ``total`` the sum of the present
losses (detached). **Scale**: MGDA's weights sum to 1 and CAGrad starts from the mean gradient;
both are multiplied here by P, so that each method's update has the scale of the plain sum of the
task gradients, as ``equal`` (and ``static``, which renormalises to mean 1) have: a learning rate
tuned for one strategy stays comparable for the others, and a step in which a task is absent is
not made larger or smaller than one where it is present merely by the 1/P. With identical
task gradients ``g``, ``equal``, ``pcgrad`` and ``mgda`` all give ``P g``.

* ``pcgrad`` (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Algorithm 1): for each
  task i, ``g_i^PC`` starts at ``g_i`` and, for every other task j in a random order, if
  ``g_i^PC . g_j < 0`` it is projected on the normal plane of ``g_j``:
  ``g_i^PC -= (g_i^PC . g_j / ||g_j||^2) g_j``; ``d = sum_i g_i^PC``. ``a_t`` = the
  coefficient of ``g_t`` in d (1 each when no pair conflicts). Through torchjd's
  ``PCGradWeighting`` on the Gramian; the random order comes from a CPU generator seeded with
  ``step``, so it is the same on every rank, reproducible on resume, and leaves the global RNG
  untouched.
* ``mgda`` (Sener and Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization",
  section 3.1; Desideri's MGDA): the minimum-norm point of the convex hull of the task
  gradients, ``alpha = argmin_{alpha in simplex} || sum_t alpha_t g_t ||^2``, by the paper's
  Frank-Wolfe solver (Algorithm 2; exact for two tasks:
  ``alpha_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``), through torchjd's
  ``MGDAWeighting`` (``epsilon``, ``max_iters``); ``a = P alpha``. MGDA-UB (the gradients with
  respect to the shared representation instead of the parameters) is not implemented: it needs
  the representation, which the trainer does not hand to the strategy.
* ``cagrad`` (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning",
  Algorithm 1): with ``g_0 = (1/P) sum_t g_t`` and ``k = c ||g_0||``, solve the dual
  ``w = argmin_{w in simplex} g_w . g_0 + k ||g_w||`` (``g_w = sum_t w_t g_t``), then
  ``d = g_0 + (k / ||g_w||) g_w``, the direction in the ball ``||d - g_0|| <= k`` that maximises
  the worst task's improvement ``min_t g_t . d``; ``a_t = P (1/P + k w_t / ||g_w||)`` (times
  ``1 / (1 + c^2)`` with ``rescale``, the authors' code's default, which divides the update so).
  ``c`` = 0.4 (the paper's NYUv2 and Cityscapes value); ``c = 0`` is ``equal``. When
  ``||g_w|| = 0`` (0 is in the gradients' convex hull: no direction improves every task)
  ``d = g_0``. The dual (a convex problem on the simplex) is solved here, on the Gramian in
  float64, by accelerated projected gradient with a Frank-Wolfe gap below 1e-12 as the stopping
  rule: torchjd's ``CAGrad`` needs cvxpy and a conic solver (its ``cagrad`` extra) for this
  P-variable problem.

Cost: P backward passes through the whole network per step instead of 1 (P - 1 more), the P
gradients held at once (P x the shared parameters' size), a host read of ``present`` and of the
P x P Gramian (the aggregation runs on the CPU), and under DDP an all-reduce of
``P x |shared| + |heads|`` numbers in place of DDP's ``|shared| + |heads|``, not overlapped with
the backward.

fp16: the task gradients are those of ``scale(L_t)``; every method's coefficients are unchanged
when all gradients are multiplied by one number, so ``d`` is the scaled update, which the
GradScaler divides back (an overflow makes the Gramian non-finite: the coefficients are then 1,
and the scaler skips the step).

DDP. ``torch.autograd.grad`` runs no gradient-accumulation node, where DDP's reducer hooks sit,
so DDP averages none of these gradients: the strategy is the reducer. Under
``DistributedDataParallel(static_graph=True)`` this is also what DDP learns at its first iteration
(every parameter unused by a backward), so it stays out of the way for the whole run; with
``static_graph=False`` it never expects a reduction either. The aggregation is not linear, so
averaging per-rank aggregates would not give the aggregate of the averaged gradients: the task
gradients are averaged first (each rank's loss is ``world_size`` x its share of the global
batch's, ``steps.task_losses``, so their mean over ranks is the global batch's gradient), and
every rank then computes the same Gramian, coefficients and update, the same as one process on
the whole batch. ``present`` is the same on every rank, so every rank makes the same passes and
the same collective. ``combine`` (the contract; logging, evaluation) is ``equal``'s sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting.base import NoConfig, Weighting, register_weighting, weighted_sum

#: the requirement the torchjd-backed methods need (pyproject's ``train`` extra).
TORCHJD_REQUIREMENT = "torchjd>=0.18,<0.19"


def _torchjd_aggregation(method: str):
    """The ``torchjd.aggregation`` module; MtlDataError saying how to install it otherwise."""
    try:
        from torchjd import aggregation
    except ImportError:
        raise MtlDataError(
            f"weighting {method} needs torchjd: pip install '{TORCHJD_REQUIREMENT}' (part of mtl-data[train])"
        ) from None
    return aggregation


def _mean_over_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` replaced in place by its mean over the data-parallel processes (itself on one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


class GradientAggregation(Weighting):
    """Base of the gradient-conflict methods (module docstring); a subclass gives ``coefficients``."""

    custom_backward = True

    def __init__(self, tasks: Sequence[str], config=None):
        super().__init__(tasks, config)
        self._heads: tuple[nn.Parameter, ...] = ()

    def attach(self, model: nn.Module) -> None:
        """Keep the shared parameters (encoder, neck: every part but ``heads.*``) and the heads'.

        A model without ``parts()`` is all shared.
        """
        parts = model.parts() if callable(getattr(model, "parts", None)) else {"model": model}
        shared: list[nn.Parameter] = []
        heads: list[nn.Parameter] = []
        seen: set[int] = set()
        for name, module in parts.items():
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    (heads if name.startswith("heads.") else shared).append(p)
        self._shared, self._heads = tuple(shared), tuple(heads)

    @property
    def head_parameters(self) -> tuple[nn.Parameter, ...]:
        """The heads' parameters (empty unless attached)."""
        return self._heads

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``equal``'s sum: the loss-level view of a strategy whose combination is of gradients."""
        self.check_inputs(losses, present)
        weights = present.to(losses.dtype)
        return weighted_sum(losses, weights, present), weights

    def coefficients(self, gramian: torch.Tensor, step: int) -> torch.Tensor:
        """(P,) float64 ``a`` from the (P, P) float64 CPU Gramian of the present tasks' gradients, P >= 1."""
        raise NotImplementedError

    def backward(
        self, losses: torch.Tensor, present: torch.Tensor, step: int, scale: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill the shared parameters' and the heads' ``.grad`` (module docstring)."""
        self.check_inputs(losses, present)
        shared, heads = self._shared, self._heads
        if not shared:
            raise MtlDataError(
                f"weighting {self.name}: attach(model) must be called before training (the trainer does)"
            )
        total = weighted_sum(losses, present.to(losses.dtype), present).detach()
        rows = [t for t, p in enumerate(present.tolist()) if p]  # host read; present is the same on every rank
        params = shared + heads
        n_shared = sum(p.numel() for p in shared)
        n_heads = sum(p.numel() for p in heads)
        device, dtype = shared[0].device, shared[0].dtype
        flat = torch.zeros(len(rows) * n_shared + n_heads, device=device, dtype=dtype)
        jacobian = flat[: len(rows) * n_shared].view(len(rows), n_shared)  # (P, |shared|)
        head_grad = flat[len(rows) * n_shared :]  # (|heads|,) sum over the present tasks
        for i, t in enumerate(rows):
            loss = scale(losses[t])
            grads = (
                torch.autograd.grad(loss, params, retain_graph=i < len(rows) - 1, allow_unused=True)
                if loss.requires_grad
                else [None] * len(params)
            )
            _copy_into(jacobian[i], shared, grads[: len(shared)], add=False)
            _copy_into(head_grad, heads, grads[len(shared) :], add=True)
        _mean_over_ranks_(flat)
        coefficients = torch.zeros(len(rows), dtype=torch.float64)
        if rows:
            gramian = (jacobian @ jacobian.T).to("cpu", torch.float64)  # (P, P)
            coefficients = (
                self.coefficients(gramian, step)
                if bool(torch.isfinite(gramian).all())
                else torch.ones(len(rows), dtype=torch.float64)
            )
        update = coefficients.to(device, dtype) @ jacobian  # (|shared|,)
        _set_grads(shared, update)
        _set_grads(heads, head_grad)
        weights = torch.zeros(self.num_tasks, dtype=torch.float64)
        weights[rows] = coefficients
        return total, weights.to(losses.device, losses.dtype)


def _copy_into(
    out: torch.Tensor, params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None], add: bool
) -> None:
    """Write (or add) ``grads`` (None: 0) flattened into ``out``, in ``params`` order."""
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = p.numel()
        if g is not None:
            target = out[offset : offset + n]
            if add:
                target.add_(g.reshape(-1))
            else:
                target.copy_(g.reshape(-1))
        elif not add:
            out[offset : offset + n].zero_()
        offset += n


def _set_grads(params: Sequence[nn.Parameter], flat: torch.Tensor) -> None:
    """``p.grad`` = its slice of ``flat`` (a fresh tensor in ``p``'s memory format, e.g. channels_last)."""
    offset = 0
    for p in params:
        n = p.numel()
        grad = torch.empty_like(p)
        grad.copy_(flat[offset : offset + n].view(p.shape))
        p.grad = grad
        offset += n


# ---- PCGrad --------------------------------------------------------------------------------------


@register_weighting
class PCGrad(GradientAggregation):
    """Gradient surgery, Yu et al. 2020 (module docstring); through torchjd's ``PCGradWeighting``."""

    name = "pcgrad"

    def __init__(self, tasks: Sequence[str], config: NoConfig | None = None):
        super().__init__(tasks, config)
        _torchjd_aggregation(self.name)  # refuse at construction, not at the first step

    def coefficients(self, gramian: torch.Tensor, step: int) -> torch.Tensor:
        weighting = _torchjd_aggregation(self.name).PCGradWeighting()
        # torchjd draws the task orders with torch.randperm on the default CPU generator: seed it with
        # the step inside a fork, so the order is the same on every rank and on resume, and the
        # training's own random stream does not move.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(step)
            return weighting(gramian).to(torch.float64)


# ---- MGDA ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MGDAConfig:
    """Hyper-parameters of ``mgda``: the Frank-Wolfe solver's (torchjd's defaults).

    Attributes:
        epsilon: stop when the line-search step is below it (> 0).
        max_iters: at most this many iterations (> 0).
    """

    epsilon: float = 0.001
    max_iters: int = 100

    def __post_init__(self) -> None:
        if (
            isinstance(self.epsilon, bool)
            or not isinstance(self.epsilon, (int, float))
            or not math.isfinite(self.epsilon)
            or self.epsilon <= 0
        ):
            raise ValueError(f"epsilon must be a finite number > 0, got {self.epsilon!r}")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters <= 0:
            raise ValueError(f"max_iters must be an integer > 0, got {self.max_iters!r}")


@register_weighting
class MGDA(GradientAggregation):
    """The minimum-norm convex combination, Sener and Koltun 2018 (module docstring); ``a = P alpha``."""

    name = "mgda"
    Config = MGDAConfig

    def __init__(self, tasks: Sequence[str], config: MGDAConfig | None = None):
        super().__init__(tasks, config)
        _torchjd_aggregation(self.name)

    def coefficients(self, gramian: torch.Tensor, step: int) -> torch.Tensor:
        weighting = _torchjd_aggregation(self.name).MGDAWeighting(
            epsilon=self.config.epsilon, max_iters=self.config.max_iters
        )
        alpha = weighting(gramian).to(torch.float64)  # (P,) on the simplex
        return alpha * gramian.shape[0]


# ---- CAGrad --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CAGradConfig:
    """Hyper-parameters of ``cagrad``.

    Attributes:
        c: the radius of the ball around the mean gradient, relative to its norm (>= 0; the
            paper: 0.4 on NYUv2 and Cityscapes; < 1 for its convergence guarantee).
        rescale: divide the update by ``1 + c^2`` as the authors' code does by default
            (``rescale=1``); False (default): Algorithm 1 as the paper writes it.
    """

    c: float = 0.4
    rescale: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.c, bool) or not isinstance(self.c, (int, float)) or not math.isfinite(self.c) or self.c < 0:
            raise ValueError(f"c must be a finite number >= 0, got {self.c!r}")
        object.__setattr__(self, "c", float(self.c))
        if not isinstance(self.rescale, bool):
            raise ValueError(f"rescale must be true or false, got {self.rescale!r}")


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """The Euclidean projection of ``v`` (n,) on the probability simplex (Held et al. 1974; sort-based)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    index = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - cumulative / index > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


def cagrad_dual(gramian: np.ndarray, c: float, tol: float = 1e-12, max_iter: int = 20000) -> np.ndarray:
    """``w = argmin_{w in simplex} w . (M b) + c sqrt(b' M b) sqrt(w' M w)``, b = 1/P, M the (P, P) Gramian.

    Accelerated projected gradient (FISTA with backtracking and adaptive restart) on ``M`` scaled to
    a unit mean diagonal (the minimiser does not depend on the scale), stopped when the Frank-Wolfe
    gap ``grad . w - min(grad)``, an upper bound of the distance to the optimal value, is below
    ``tol`` x max(1, |f|), or when even a plain projected-gradient step no longer descends (the
    float64 precision of f is reached).
    """
    n = gramian.shape[0]
    b = np.full(n, 1.0 / n)
    mean_diag = float(np.trace(gramian)) / n
    if n == 1 or not mean_diag > 0:
        return b if n > 1 else np.ones(1)
    m = gramian / mean_diag
    mb = m @ b
    k = c * math.sqrt(max(float(b @ mb), 0.0))
    if k == 0:
        return b  # d = g_0 whatever w is
    smooth = 1e-18  # keeps sqrt differentiable at g_w = 0

    def value(w: np.ndarray) -> float:
        return float(mb @ w + k * math.sqrt(max(float(w @ m @ w), 0.0) + smooth))

    def gradient(w: np.ndarray) -> np.ndarray:
        mw = m @ w
        return mb + k * mw / math.sqrt(max(float(w @ mw), 0.0) + smooth)

    w = b.copy()
    y, t, lipschitz = w.copy(), 1.0, 1.0
    f_w = value(w)
    restarted = False
    for _ in range(max_iter):
        g_w = gradient(w)
        if float(g_w @ w - g_w.min()) <= tol * max(1.0, abs(f_w)):
            break
        g_y, f_y = gradient(y), value(y)
        while True:
            z = project_to_simplex(y - g_y / lipschitz)
            step = z - y
            f_z = value(z)
            if f_z <= f_y + g_y @ step + 0.5 * lipschitz * (step @ step) + 1e-15 * abs(f_y) or lipschitz > 1e30:
                break
            lipschitz *= 2.0
        if f_z > f_w:  # adaptive restart (O'Donoghue and Candes 2015): the momentum overshot
            if restarted:  # a plain projected-gradient step from w does not descend: float precision reached
                break
            y, t, restarted = w.copy(), 1.0, True
            continue
        restarted = False
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = z + ((t - 1.0) / t_next) * (z - w)
        w, f_w, t = z, f_z, t_next
        lipschitz *= 0.9  # let the step grow again
    return w


def cagrad_coefficients(gramian: np.ndarray, c: float, rescale: bool = False) -> np.ndarray:
    """(P,) ``a`` with ``d = sum_t a_t g_t`` = P times CAGrad's update (module docstring)."""
    n = gramian.shape[0]
    b = np.full(n, 1.0 / n)
    mean_diag = float(np.trace(gramian)) / n
    a = b.copy()
    if mean_diag > 0 and c > 0:
        m = gramian / mean_diag
        k = c * math.sqrt(max(float(b @ m @ b), 0.0))
        w = cagrad_dual(gramian, c)
        norm_w = math.sqrt(max(float(w @ m @ w), 0.0))
        if norm_w > 1e-12:
            a = b + (k / norm_w) * w
    if rescale:
        a = a / (1.0 + c * c)
    return a * n


@register_weighting
class CAGrad(GradientAggregation):
    """Conflict-averse gradient descent, Liu et al. 2021 (module docstring)."""

    name = "cagrad"
    Config = CAGradConfig

    def coefficients(self, gramian: torch.Tensor, step: int) -> torch.Tensor:
        return torch.from_numpy(cagrad_coefficients(gramian.numpy(), self.config.c, self.config.rescale))
