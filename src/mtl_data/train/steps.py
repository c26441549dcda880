"""The update rules of a training step (trainer.md sections 3 and 5).

``symmetric``: one forward of every head, each task's loss normalised by the number of samples
that label it on **all** ranks, the weighting strategy's combination, one backward, one
optimizer step. ``stl`` is the same rule with a single task (the model has that head only).

``asymmetric`` (UberNet, Kokkinos 2017; the Tartu thesis): one optimizer per part (``encoder``
= encoder + neck, with the weighting's own parameters; one per head), each with its effective
batch ``k`` counted in **labelled samples**. Every step back-propagates; gradients accumulate;
a head steps when its task has been labelled by ``k_task`` more samples since its last step,
the encoder when ``k_encoder`` more samples labelled any task (counters carry the surplus
over, so a part steps exactly ``floor(labelled / k)`` times; they are global across ranks, so
all ranks step together). The scaling rule for accumulated gradients: task t's loss enters the
backward pass with the gradient of ``sum_b m_bt l_bt / k_t`` (its value, seen by the weighting,
stays the per-step mean), so a part's accumulated gradient is each task's summed per-sample
gradient over the window divided by that task's k: with every k equal to the batch size and
every sample labelling every task it is exactly the symmetric step (tested bit for bit); no
gradient is dropped or counted twice when a window overshoots k. **Staleness**: a gradient
accumulated before a part steps was computed with the parameters of the other parts as they
were then; e.g. a head with k = 4 batches accumulates gradients taken through 4 different
encoder states when the encoder steps every batch (the thesis notes the same). Nothing corrects
it: small k for the shared part and larger k for rare heads keep it small.

Partial labels and DDP: on every rank the loss of task t is
``L_t = world_size * sum_{b on this rank} m_bt l_bt / max(1, n_t)`` with ``n_t`` the labelled
samples of t on all ranks (an all-reduce); DDP averages gradients over ranks, so the gradient
is that of ``sum_{all b} m_bt l_bt / max(1, n_t)``: the mean over the labelled samples of the
global batch, whatever way they fall on ranks. ``present_t = n_t > 0`` goes to the weighting.
Nothing here reads a value back to the host: logging happens in ``loop`` every ``log_every``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtl_data.train.distributed import DistInfo, all_reduce_sum
from mtl_data.train.models.multiframe import model_inputs
from mtl_data.train.optim import PartOptimizers
from mtl_data.train.precision import autocast
from mtl_data.train.tasks import Task
from mtl_data.train.weighting import Weighting


@dataclass
class StepOutput:
    """What a step leaves on the device for logging (read only every ``log_every`` steps).

    Attributes:
        total: () the weighted loss this rank back-propagated.
        losses: (T,) each task's loss on this rank (the global loss is their mean over ranks).
        weights: (T,) the weighting's weights.
        counts: (T,) labelled samples of each task on all ranks.
    """

    total: torch.Tensor
    losses: torch.Tensor
    weights: torch.Tensor
    counts: torch.Tensor


def task_losses(
    outputs: Mapping[str, Any], batch: Mapping[str, Any], tasks: Mapping[str, Task], info: DistInfo
) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses (T,), counts (T,)) in ``tasks`` order, normalised by the global labelled counts."""
    device = batch["image"].device
    counts = torch.stack([batch["present"][t].sum() for t in tasks]).to(device, torch.float32)  # (T,)
    counts = all_reduce_sum(counts, info)
    losses = torch.stack(
        [task.batch_loss(outputs[t], batch, count=counts[i]) for i, (t, task) in enumerate(tasks.items())]
    )
    return losses * info.world_size, counts  # (T,), (T,)


def average_weighting_grads(weighting: Weighting, info: DistInfo) -> None:
    """The weighting's own parameters (learned weights, log-variances) sit outside the DDP
    module, so DDP does not average their gradients: average them here (all ranks then keep the
    same weights)."""
    if not info.distributed:
        return
    for p in weighting.parameters():
        if p.grad is not None:
            all_reduce_sum(p.grad, info).div_(info.world_size)


def symmetric_step(
    model: nn.Module,
    tasks: Mapping[str, Task],
    weighting: Weighting,
    batch: Mapping[str, Any],
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    info: DistInfo,
    precision: str,
    clip_grad_norm: float,
    params: list[nn.Parameter],
) -> StepOutput:
    """One symmetric (or single-task) update (module docstring)."""
    with autocast(precision, info.device):
        outputs = model(*model_inputs(batch))  # {task: output}
    losses, counts = task_losses(outputs, batch, tasks, info)  # fp32 (tasks compute losses in fp32)
    if weighting.custom_backward:  # the strategy combines the tasks' gradients itself
        total, weights = weighting.backward(losses, counts > 0, step, scaler.scale)
    else:
        total, weights = weighting.combine(losses, counts > 0, step)
        scaler.scale(total).backward()
    average_weighting_grads(weighting, info)
    if clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # fp16: GradScaler skips the optimizer step when the gradients overflowed (the first
        # steps, while it finds its scale). Knowing it needs a host sync, so the schedule
        # advances anyway (it counts steps, not updates); torch warns about that order.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        scheduler.step()
    return StepOutput(total.detach(), losses.detach(), weights.detach(), counts)


# ---- asymmetric -------------------------------------------------------------------------------


def asymmetric_step(
    model: nn.Module,
    tasks: Mapping[str, Task],
    weighting: Weighting,
    batch: Mapping[str, Any],
    step: int,
    parts: PartOptimizers,
    part_params: Mapping[str, list[nn.Parameter]],
    info: DistInfo,
    precision: str,
    clip_grad_norm: float,
) -> StepOutput:
    """One asymmetric step: back-propagate, count labelled samples, step the parts that are due."""
    with autocast(precision, info.device):
        outputs = model(*model_inputs(batch))  # {task: output}
    losses, counts = task_losses(outputs, batch, tasks, info)  # (T,) per-step means, (T,) global counts
    k = torch.tensor([float(parts.k[t]) for t in tasks], device=losses.device)  # (T,)
    # The value stays the mean (what the weighting sees); the gradient is that of sum / k_t.
    scaled = losses.detach() + (losses - losses.detach()) * (counts / k)  # (T,)
    total, weights = weighting.combine(scaled, counts > 0, step)
    total.backward()
    average_weighting_grads(weighting, info)
    any_labelled = torch.zeros_like(batch["present"][next(iter(tasks))])  # (B,) bool
    for t in tasks:
        any_labelled |= batch["present"][t]
    n_any = all_reduce_sum(any_labelled.sum().to(torch.float32).reshape(1), info)  # (1,)
    # The one host read of a step in this mode: which parts are due (every rank reads the same).
    labelled = dict(zip(tasks, (int(v) for v in counts.tolist())), encoder=int(n_any.item()))
    for part, optimizer in parts.optimizers.items():
        parts.count[part] += labelled[part]
        if parts.count[part] >= parts.k[part]:
            parts.count[part] -= parts.k[part]
            if clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(part_params[part], clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            parts.steps[part] += 1
    with warnings.catch_warnings():
        # A part that has not stepped yet still follows the run's LR schedule (see steps above).
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for schedule in parts.schedules.values():
            schedule.step()
    return StepOutput(total.detach(), losses.detach(), weights.detach(), counts)
