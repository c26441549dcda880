"""The update rules of a training step (trainer.md sections 3 and 5).

``symmetric``: one forward of every head, each task's loss normalised by the number of samples
that label it on **all** ranks, the weighting strategy's combination, one backward, one
optimizer step. ``stl`` is the same rule with a single task (the model has that head only).
The asymmetric rule (per-part optimizers and effective batches) is a later step of the project.

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


def task_losses(outputs: Mapping[str, Any], batch: Mapping[str, Any], tasks: Mapping[str, Task],
                info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses (T,), counts (T,)) in ``tasks`` order, normalised by the global labelled counts."""
    device = batch["image"].device
    counts = torch.stack([batch["present"][t].sum() for t in tasks]).to(device, torch.float32)  # (T,)
    counts = all_reduce_sum(counts, info)
    losses = torch.stack([task.batch_loss(outputs[t], batch, count=counts[i]) for i, (t, task) in enumerate(tasks.items())])
    return losses * info.world_size, counts  # (T,), (T,)


def symmetric_step(model: nn.Module, tasks: Mapping[str, Task], weighting: Weighting, batch: Mapping[str, Any],
                   step: int, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   scaler: torch.amp.GradScaler, info: DistInfo, precision: str, clip_grad_norm: float,
                   params: list[nn.Parameter]) -> StepOutput:
    """One symmetric (or single-task) update (module docstring)."""
    with autocast(precision, info.device):
        outputs = model(batch["image"])  # {task: output}
    losses, counts = task_losses(outputs, batch, tasks, info)  # fp32 (tasks compute losses in fp32)
    if weighting.custom_backward:  # the strategy combines the tasks' gradients itself
        total, weights = weighting.backward(losses, counts > 0, step, scaler.scale)
    else:
        total, weights = weighting.combine(losses, counts > 0, step)
        scaler.scale(total).backward()
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
