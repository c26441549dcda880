"""Optimizer and learning-rate schedule from the config: one parameter group per model part.

Parts are what ``MultiTaskModel.parts()`` names (``encoder``, ``neck``, ``heads.<task>``) plus
``weighting`` when the weighting strategy learns parameters; ``optim.parts.<part>`` overrides
the LR and weight decay of one part (e.g. a smaller LR for an ImageNet-initialised encoder).
Each part is split in two groups: weight decay applies to weights of two or more dimensions
(convolutions, linear layers) and not to biases and normalisation parameters, as timm and most
detection and segmentation codebases do (decaying BN's scale towards 0 only fights the
normalisation). Groups are named ``<part>`` and ``<part>/no_decay``; ``lr/<part>`` is logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.config import OptimConfig, ScheduleConfig


def param_groups(parts: Mapping[str, nn.Module], config: OptimConfig) -> list[dict]:
    """The optimizer's parameter groups: per part, decayed and not decayed (module docstring).

    Raises:
        MtlDataError: ``optim.parts`` names a part the model does not have.
    """
    unknown = sorted(set(config.parts) - set(parts))
    if unknown:
        raise MtlDataError(f"optim.parts: no part {', '.join(unknown)} in this model; it has {', '.join(parts)}")
    groups = []
    for name, module in parts.items():
        override = config.parts.get(name)
        lr = config.lr if override is None or override.lr is None else override.lr
        decay = config.weight_decay if override is None or override.weight_decay is None else override.weight_decay
        params = [p for p in module.parameters() if p.requires_grad]
        decayed = [p for p in params if p.ndim >= 2]
        plain = [p for p in params if p.ndim < 2]
        for suffix, group, wd in (("", decayed, decay), ("/no_decay", plain, 0.0)):
            if group:
                groups.append({"name": name + suffix, "part": name, "params": group, "lr": lr, "weight_decay": wd})
    return groups


def build_optimizer(parts: Mapping[str, nn.Module], config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over ``param_groups``.

    Raises:
        MtlDataError: an unknown optimizer name.
    """
    groups = param_groups(parts, config)
    builders: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adamw": lambda: torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps),
        "sgd": lambda: torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov),
    }
    if config.name not in builders:
        raise MtlDataError(f"optim.name {config.name!r}: choose from {', '.join(builders)}")
    return builders[config.name]()


def lr_factor(step: int, total: int, config: ScheduleConfig) -> float:
    """The LR multiplier at ``step`` (0-based) of a ``total``-step run.

    A linear warm-up from ``warmup_factor`` to 1 over ``warmup_steps``, then: ``cosine``
    (Loshchilov and Hutter 2017, no restarts) or ``poly`` (``(1 - t)^power``, DeepLab) from 1 to
    ``min_lr_ratio`` over the remaining steps, ``step`` (times ``gamma`` every ``step_size``
    steps), or ``constant``.
    """
    if step < config.warmup_steps:
        return config.warmup_factor + (1.0 - config.warmup_factor) * step / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps) / span)
    low = config.min_lr_ratio
    shapes: dict[str, Callable[[], float]] = {
        "cosine": lambda: low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * t)),
        "poly": lambda: low + (1.0 - low) * (1.0 - t) ** config.power,
        "step": lambda: config.gamma ** ((step - config.warmup_steps) // config.step_size),
        "constant": lambda: 1.0,
    }
    if config.name not in shapes:
        raise MtlDataError(f"schedule.name {config.name!r}: choose from {', '.join(shapes)}")
    return shapes[config.name]()


def build_schedule(
    optimizer: torch.optim.Optimizer, total: int, config: ScheduleConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``lr_factor`` to every group's own LR, stepped once per step."""
    lr_factor(0, total, config)  # an unknown name fails now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, config))


def part_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current LR of each part (its decayed and undecayed groups share it)."""
    return {g["part"]: float(g["lr"]) for g in optimizer.param_groups}


# ---- asymmetric mode: one optimizer per part ------------------------------------------------


class PartOptimizers:
    """One optimizer and LR schedule per part, with the labelled-sample counters (module docstring).

    Args:
        optimizers: part -> optimizer; parts are ``encoder`` and the task names.
        schedules: part -> its LR schedule, stepped every training step (the schedule follows the
            run's steps, whichever steps a part takes).
        k: part -> effective batch in labelled samples.
    """

    def __init__(
        self,
        optimizers: dict[str, torch.optim.Optimizer],
        schedules: dict[str, torch.optim.lr_scheduler.LRScheduler],
        k: dict[str, int],
    ):
        self.optimizers, self.schedules, self.k = optimizers, schedules, k
        self.count = dict.fromkeys(optimizers, 0)  # labelled samples since the part's last step (surplus kept)
        self.steps = dict.fromkeys(optimizers, 0)  # optimizer steps taken per part

    @property
    def param_groups(self) -> list[dict]:
        """Every group of every part's optimizer (``optim.part_lrs`` reads them)."""
        return [g for o in self.optimizers.values() for g in o.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {p: o.state_dict() for p, o in self.optimizers.items()},
            "schedules": {p: s.state_dict() for p, s in self.schedules.items()},
            "count": dict(self.count),
            "steps": dict(self.steps),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for part, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][part])
            self.schedules[part].load_state_dict(state["schedules"][part])
        self.count = {p: int(v) for p, v in state["count"].items()}
        self.steps = {p: int(v) for p, v in state["steps"].items()}


class NoSchedule:
    """The schedule slot of ``Held`` in asymmetric mode (each part has its own)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        pass


def build_part_optimizers(
    model: nn.Module,
    weighting: nn.Module,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    total: int,
    k: Mapping[str, int],
    default_k: int,
    tasks: Sequence[str],
) -> tuple[PartOptimizers, dict[str, list[nn.Parameter]]]:
    """The asymmetric mode's optimizers: ``encoder`` (encoder + neck + the weighting's own
    parameters) and one per task head, each with its groups (``param_groups``) and schedule.

    Returns:
        The ``PartOptimizers`` and each part's parameters (for per-part gradient clipping).
    """
    # the shared parts of ``parts()`` (encoder, neck: with a multi-frame model's fusion in it)
    shared = {name: module for name, module in model.parts().items() if not name.startswith("heads.")}
    modules: dict[str, dict[str, nn.Module]] = {"encoder": shared}
    if any(True for _ in weighting.parameters()):
        modules["encoder"]["weighting"] = weighting
    modules.update({t: {f"heads.{t}": model.heads[t]} for t in tasks})
    optimizers = {part: build_optimizer(mods, optim) for part, mods in modules.items()}
    schedules = {part: build_schedule(o, total, schedule) for part, o in optimizers.items()}
    params = {part: [p for g in o.param_groups for p in g["params"]] for part, o in optimizers.items()}
    return PartOptimizers(optimizers, schedules, {p: int(k.get(p, default_k)) for p in optimizers}), params
