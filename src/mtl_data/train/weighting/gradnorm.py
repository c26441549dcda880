"""``gradnorm``: learned task weights that balance the tasks' gradient norms on the last shared layer.

Chen et al. 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks" (ICML 2018), section 3. The weights ``w_t`` are parameters (the trainer gives
them their own optimizer group, ``optim.parts.weighting``); the model is trained on
``L = sum_{t present} w_t L_t`` with ``w`` treated as a constant (``w_t.detach()``), and ``w``
is trained on the GradNorm loss alone. With W the weights of the model's last shared layer
(``attach``), at every step::

    G_t     = || grad_W (w_t L_t) ||_2 = w_t || grad_W L_t ||_2       (the weighted task's gradient norm)
    G_mean  = mean_{t present} G_t
    L~_t    = L_t / L_t(0)                                             (loss relative to its first present value)
    r_t     = L~_t / mean_{s present} L~_s                             (relative inverse training rate)
    L_grad  = sum_{t present} | G_t - G_mean * r_t^alpha |             (eq. 2; the target is a constant)
    w.grad  = d L_grad / d w                                           (only w: the model gets none of it)

and after each optimizer step the weights are renormalised so that they sum to T (section 3.2:
"we renormalize the weights w_i(t+1) so that sum_i w_i(t+1) = T"). ``alpha`` (default 1.5, the
paper's NYUv2 value) sets how strongly a task that trains slower than the others (r_t > 1) is
pushed: 0 equalises the gradient norms.

Partial labels. An absent task has no weight (0), takes no part in ``G_mean`` or in the mean of
``L~``, gets no gradient, and its remembered values (``weight``, ``initial``) do not move: the
renormalisation rescales only the present tasks' weights, to ``T - sum_{t absent} w_t`` (the sum
they had before the step), so that ``sum_t w_t = T`` after every step as in the paper, and an
absent task's weight is copied back as it was before the step (an optimizer with momentum would
otherwise move it). ``L_t(0)`` is the task's first present, finite, positive loss (buffer
``initial``, set once; ``seen`` says it is set); until then r_t = 1. A weight pushed below 0 by a
large step is clamped to 0 before the renormalisation.

The last shared layer W (``attach(model)``; ``layer`` overrides it with a module path such as
``"neck.output"``): the weights (tensors of 2 or more dimensions) of

* ``model.neck.output`` when the neck has one: FPN's 3x3 output convolutions, one per level,
  the last layer every head reads;
* else ``model.neck.layers[-1]`` when the neck has ``layers``: BiFPN's last layer (its fusion
  nodes' separable convolutions);
* else the last module of the neck (registration order) that holds such a weight, else the
  encoder's; for a model without ``neck``, the model's last one.

Cost: the per-task gradient norms on W take one partial backward pass per task (absent tasks too,
with a zero loss, so that ``present`` is never read back to the host), from the task's loss
through its head down to W only (autograd runs nothing below W), on top of the model's one
backward, whose graph is kept until they are done; no second-order gradient is needed, as G_t is
linear in w_t. No host sync.

The gradients (fp16): ``backward`` is this strategy's entry point (``custom_backward``), so that it
gets the loss scaler: the per-task gradients are those of the scaled losses, so G, its target
and L_grad are all multiplied by the scale, and so is ``w.grad``, which the scaler then divides
back with the model's gradients (an overflow skips the step, ``w`` included). ``combine`` alone
gives the total and the weights without training ``w`` (the contract; evaluation and logging).

DDP. The losses that set ``L_t(0)`` and ``r_t`` are averaged over ranks (``mean_over_ranks``), and
so are the per-task gradients on W *before* their norms are taken (one all-reduce of T x |W|
numbers): G_t is then the norm of the global batch's gradient, exactly what one process would
compute on the whole batch (the average of per-rank norms would not be: it is larger, by a
different amount for each task), and every rank computes the same L_grad, so ``w`` stays
identical on every rank without DDP (``w`` is not a model parameter). The model's backward runs
**first**, before the per-task ``torch.autograd.grad`` calls: under
``DistributedDataParallel(static_graph=True)`` the first backward pass through the model's output
at DDP's first iteration is where DDP records which parameters are used, and an
``autograd.grad`` (which runs no gradient-accumulation hook) there would record none of them and
silently switch off DDP's gradient averaging for the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting.base import Weighting, mean_over_ranks, register_weighting, weighted_sum


@dataclass(frozen=True)
class GradNormConfig:
    """Hyper-parameters of ``gradnorm``.

    Attributes:
        alpha: the asymmetry exponent (>= 0; the paper: 1.5 on NYUv2, 0.12 on its synthetic task).
        layer: the module (dotted path in the model, e.g. ``"neck.output"``) whose weights are W;
            None: the automatic choice (module docstring).
    """

    alpha: float = 1.5
    layer: str | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not math.isfinite(self.alpha)
            or self.alpha < 0
        ):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise ValueError(f"layer must be a module path such as 'neck.output', got {self.layer!r}")


def _weights_of(module: nn.Module) -> list[nn.Parameter]:
    """The trained tensors of 2+ dimensions of ``module`` (all its trained parameters if none is)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [p for p in params if p.ndim >= 2] or params


def _last_weighted(module: nn.Module) -> nn.Module | None:
    """The last submodule of ``module`` (registration order, itself included) holding a trained weight of 2+ dims."""
    found = None
    for sub in module.modules():
        if any(p.requires_grad and p.ndim >= 2 for p in sub.parameters(recurse=False)):
            found = sub
    return found


def last_shared_layer(model: nn.Module, layer: str | None = None) -> tuple[str, list[nn.Parameter]]:
    """(a description, the parameters W) of ``model``'s last shared layer (module docstring).

    Raises:
        MtlDataError: ``layer`` is not a module of ``model``, or holds no trained parameter.
    """
    if layer is not None:
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise MtlDataError(f"weighting gradnorm: layer {layer!r} is not a module of the model") from None
        chosen = _weights_of(module)
        if not chosen:
            raise MtlDataError(f"weighting gradnorm: layer {layer!r} has no trained parameter")
        return layer, chosen
    neck = getattr(model, "neck", None)
    if isinstance(neck, nn.Module) and any(p.requires_grad for p in neck.parameters()):
        output = getattr(neck, "output", None)
        if isinstance(output, nn.Module) and _weights_of(output):
            return "neck.output", _weights_of(output)
        layers = getattr(neck, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and _weights_of(layers[-1]):
            return f"neck.layers.{len(layers) - 1}", _weights_of(layers[-1])
        scope, where = neck, "neck"
    elif isinstance(getattr(model, "encoder", None), nn.Module):
        scope, where = model.encoder, "encoder"
    else:
        scope, where = model, "model"
    last = _last_weighted(scope)
    if last is None:
        chosen = [p for p in scope.parameters() if p.requires_grad][-1:]
        if not chosen:
            raise MtlDataError(
                f"weighting gradnorm: the {where} has no trained parameter to take as the last "
                "shared layer; set the option layer"
            )
        return where, chosen
    name = next(n for n, m in scope.named_modules() if m is last)
    return f"{where}.{name}" if name else where, _weights_of(last)


@register_weighting
class GradNorm(Weighting):
    """Learned weights balancing the gradient norms on the last shared layer (module docstring).

    Parameter: ``weight`` (T,), initialised to 1. Buffers: ``initial`` (T,) each task's first
    present loss (averaged over ranks), ``seen`` (T,) bool, set with it. Attribute (not state):
    ``layer_name``, the last shared layer chosen by ``attach``.
    """

    name = "gradnorm"
    Config = GradNormConfig
    custom_backward = True

    def __init__(self, tasks: Sequence[str], config: GradNormConfig | None = None):
        super().__init__(tasks, config)
        self.weight = nn.Parameter(torch.ones(self.num_tasks))  # (T,)
        self.register_buffer("initial", torch.zeros(self.num_tasks))  # (T,) L_t(0)
        self.register_buffer("seen", torch.zeros(self.num_tasks, dtype=torch.bool))  # (T,)
        self.layer_name: str | None = None
        # what on_step_end needs from the step's combine (not state: one step's scratch)
        self._present: torch.Tensor | None = None
        self._before: torch.Tensor | None = None

    def attach(self, model: nn.Module) -> None:
        self.layer_name, params = last_shared_layer(model, self.config.layer)
        self._shared = tuple(params)

    # ---- the contract --------------------------------------------------------------------------

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        total, weights, _ = self._combine(losses, present)
        return total, weights

    def _combine(self, losses: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``combine``'s (total, weights), and the global batch's losses (T,) (averaged over ranks, detached)."""
        self.check_inputs(losses, present)
        value = mean_over_ranks(losses).to(self.initial.dtype)  # (T,)
        fresh = present & ~self.seen & torch.isfinite(value) & (value > 0)  # (T,) first usable loss
        with torch.no_grad():
            self.initial.copy_(torch.where(fresh, value, self.initial))
            self.seen.copy_(self.seen | fresh)
        self._present = present.detach().clone()
        self._before = self.weight.detach().clone()
        weights = torch.where(present, self.weight.detach(), torch.zeros_like(self.weight)).to(losses.dtype)  # (T,)
        return weighted_sum(losses, weights, present), weights, value

    def backward(
        self, losses: torch.Tensor, present: torch.Tensor, step: int, scale: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's gradients of ``sum_t w_t L_t`` (w constant), then ``weight.grad`` from L_grad."""
        if not self._shared:
            raise MtlDataError("weighting gradnorm: attach(model) must be called before training (the trainer does)")
        total, weights, value = self._combine(losses, present)
        # The model's backward first (DDP: module docstring); the graph is kept for the per-task passes.
        if total.requires_grad:
            scale(total).backward(retain_graph=True)
        norms = self._task_gradient_norms(losses, present, scale)  # (T,) || grad_W s L_t ||, global batch
        self._gradnorm_gradient(value, present, norms)
        return total.detach(), weights

    def _task_gradient_norms(
        self, losses: torch.Tensor, present: torch.Tensor, scale: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(T,) the norm of each task's (scaled) loss gradient on W, averaged over ranks before the norm; 0 absent."""
        shared = self._shared
        rows = []
        for t in range(self.num_tasks):
            # where(): an absent task's entry (0, or a NaN) sends exactly 0 back; no host read of present.
            loss = torch.where(present[t], losses[t], torch.zeros_like(losses[t]))
            grads: Sequence[torch.Tensor | None] = (
                torch.autograd.grad(scale(loss), shared, retain_graph=t < self.num_tasks - 1, allow_unused=True)
                if loss.requires_grad
                else [None] * len(shared)
            )
            rows.append(
                torch.cat(
                    [
                        (torch.zeros_like(p) if g is None else g).reshape(-1).to(torch.float32)
                        for p, g in zip(shared, grads, strict=True)
                    ]
                )
            )
        per_task = mean_over_ranks(torch.stack(rows))  # (T, |W|) the global batch's gradients
        return per_task.norm(dim=1)  # (T,)

    def _gradnorm_gradient(self, value: torch.Tensor, present: torch.Tensor, norms: torch.Tensor) -> None:
        """Set (or add to) ``weight.grad`` the gradient of L_grad (module docstring); ``value`` (T,): the
        global batch's losses (averaged over ranks by ``combine``), ``norms`` (T,): ``|| grad_W L_t ||``."""
        w = self.weight
        norms = norms.to(w.dtype)
        mask = present.to(w.device)
        count = mask.sum().clamp_min(1)
        # r_t from the global losses relative to L_t(0); tasks without a usable ratio count as r = 1
        value = value.to(w.dtype)
        ratio_ok = mask & self.seen & torch.isfinite(value) & (self.initial > 0)
        relative = torch.where(
            ratio_ok,
            value / torch.where(ratio_ok, self.initial, torch.ones_like(self.initial)),
            torch.zeros_like(value),
        )  # (T,) L~_t
        mean_relative = relative.sum() / ratio_ok.sum().clamp_min(1)
        r = torch.where(
            ratio_ok & (mean_relative > 0),
            relative / mean_relative.clamp_min(torch.finfo(w.dtype).tiny),
            torch.ones_like(relative),
        )  # (T,)
        g = w * norms  # (T,) G_t, differentiable in w only
        g_mean = torch.where(mask, g.detach(), torch.zeros_like(g)).sum() / count
        target = (g_mean * r.pow(self.config.alpha)).detach()  # (T,) a constant (paper, section 3.2)
        loss = torch.where(mask, (g - target).abs(), torch.zeros_like(g)).sum()
        (grad,) = torch.autograd.grad(loss, w)
        w.grad = grad if w.grad is None else w.grad + grad

    # ---- hooks ---------------------------------------------------------------------------------

    @torch.no_grad()
    def on_step_end(self, step: int) -> None:
        """Renormalise: the present tasks' weights sum to T minus the absent ones', which are as they were."""
        if self._present is None or self._before is None:
            return
        present, before = self._present, self._before
        self._present = self._before = None
        now = torch.where(present, self.weight.clamp_min(0), before)  # (T,)
        # T - sum of the absent weights (= the present ones' sum before the step): anchored to T, so
        # rounding does not accumulate over the steps
        goal = self.num_tasks - torch.where(present, torch.zeros_like(before), before).sum()
        sum_now = torch.where(present, now, torch.zeros_like(now)).sum()
        usable = torch.isfinite(sum_now) & (sum_now > 0) & (goal > 0)
        factor = torch.where(
            usable, goal / torch.where(usable, sum_now, torch.ones_like(sum_now)), torch.ones_like(sum_now)
        )
        self.weight.copy_(torch.where(present & usable, now * factor, before))
