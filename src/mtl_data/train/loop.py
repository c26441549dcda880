"""The training loop: ``train(config)`` reads top to bottom in visible sections (nanoGPT style).

    # ---- processes and run folder   torchrun ranks, RUN/ created (or resumed) by rank 0
    # ---- data                       the endless training stream of the train split
    # ---- model                      model, weighting, optimizer, schedule, scaler, DDP, compile
    # ---- resume                     every state of RUN/checkpoints/last.pt
    # ---- loop                       steps; logs every log_every; eval every eval.every; saves every save_every
    # ---- end                        last.pt, the final evaluation (eval.json), best.pt

**The data stream is cut into segments** of ``save_every`` steps (the whole run when 0):
segment k is the loader's pass k (``loader.set_epoch(k)``: its shard draws, shuffles and
augmentations are seeded by (seed, rank, worker, k)). A run resumed from a checkpoint at step
``m`` restarts segment ``m // save_every`` and skips its first ``m % save_every`` batches, so it
sees exactly the batches an uninterrupted run sees: on CPU the parameters after N steps are the
same bytes (tests/test_train_loop.py). Checkpoints are written at segment ends, where nothing
is skipped; a run stopped elsewhere (a non-finite loss) resumes from its last checkpoint.

**No host synchronisation inside a step**: losses, weights and counts stay on the device; a
non-finite loss is recorded on the device (the first step it was seen, per task) and read at
the next log step or checkpoint, which stops the run naming the task and step and keeps the
last good checkpoint (nothing is saved after the bad step).

Only rank 0 writes files (the run layout of ``run``); every rank takes part in the collectives
(loss counts, evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.shards.reader import ShardSet
from mtl_data.train import checkpoint as ckpt
from mtl_data.train.config import TrainConfig, to_dict
from mtl_data.train.data.loader import build_loader, default_workers
from mtl_data.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    setup,
    teardown,
)
from mtl_data.train.evaluate import EVAL_FILE, evaluate, write_eval
from mtl_data.train.optim import NoSchedule, build_optimizer, build_part_optimizers, build_schedule, part_lrs
from mtl_data.train.precision import check_precision, grad_scaler
from mtl_data.train.run import (
    CHECKPOINTS,
    MetricsLog,
    best_metric,
    build_model,
    build_weighting,
    check_asymmetric,
    check_run,
    create_run,
    epoch_length,
    eval_loader_config,
    frames_note,
    init_from,
    metrics_columns,
    run_tasks,
    train_loader_config,
    use_channels_last,
)
from mtl_data.train.steps import StepOutput, asymmetric_step, symmetric_step
from mtl_data.train.tasks import Task

logger = logging.getLogger(__name__)


class NonFiniteLoss(MtlDataError):
    """A task's loss became NaN or infinite; the run stops, its last checkpoint is kept."""


# ---- the loop -------------------------------------------------------------------------------


def train(config: TrainConfig, *, resume: bool = False, progress: bool = False, stop_at: int | None = None) -> dict:
    """Train as ``config`` says; returns ``{"run", "step", "eval"}`` (``eval`` is the final
    ``eval.json``, None when stopped early).

    Args:
        config: the resolved configuration.
        resume: continue ``config.out`` from its last checkpoint.
        progress: a tqdm bar on rank 0.
        stop_at: stop after this step with a checkpoint, to be resumed later (a job scheduler's
            time limit); the schedule still runs to ``config.steps``, so the resumed run is the
            uninterrupted one.

    Raises:
        MtlDataError: bad input (module docstrings of the pieces), or ``NonFiniteLoss``.
    """
    info = setup(config.device)
    try:
        return _train(config, info, resume, progress, stop_at)
    finally:
        teardown()


def _train(config: TrainConfig, info: DistInfo, resume: bool, progress: bool, stop_at: int | None) -> dict:
    # ---- processes and run folder
    check_precision(config.precision, info.device)
    shard_set = ShardSet.open(Path(config.shards))
    tasks_run = run_tasks(config, shard_set)
    note = frames_note(config, shard_set)
    if note is not None and info.is_main:
        logger.info(note)
    # The resolved tasks and worker count go into config.toml: the data stream is seeded per
    # worker, so a resume on a machine with another CPU count must keep the run's count.
    workers = default_workers() if config.loader.workers is None else config.loader.workers
    config = dataclasses.replace(config, tasks=tasks_run, loader=dataclasses.replace(config.loader, workers=workers))
    state = check_run(config, resume, info.world_size)

    # ---- data
    loader = build_loader(
        config.shards,
        train_loader_config(config, tasks_run),
        rank=info.rank,
        world_size=info.world_size,
        device=info.device,
    )
    segment = config.save_every or config.steps  # steps per data segment (module docstring)
    epoch = config.epoch_steps or epoch_length(
        shard_set, loader, config.train_split, config.loader.batch_size * info.world_size
    )

    # ---- model
    model = build_model(config, tasks_run, loader.classes, weights=state is None and config.init_from is None)
    if state is None and config.init_from is not None:
        init_from(model, Path(config.init_from))
    tasks: dict[str, Task] = model.tasks
    model.to(info.device)
    channels_last = use_channels_last(config, info.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    weighting = build_weighting(config, tasks_run).to(info.device)
    weighting.attach(model)  # gradient-based strategies keep the last shared layer
    global_batch = config.loader.batch_size * info.world_size
    if config.mode == "asymmetric":
        check_asymmetric(config, weighting, global_batch, tasks_run)
        optimizer, part_params = build_part_optimizers(
            model, weighting, config.optim, config.schedule, config.steps, config.asymmetric.k, global_batch, tasks_run
        )
        scheduler = NoSchedule()  # each part has its own
    else:
        parts = dict(model.parts())
        if any(True for _ in weighting.parameters()):
            parts["weighting"] = weighting
        optimizer = build_optimizer(parts, config.optim)
        scheduler = build_schedule(optimizer, config.steps, config.schedule)
    scaler = grad_scaler(config.precision, info.device)
    # Clipping is for the model: GradNorm's weight gradients live on another scale.
    own = {id(p) for p in weighting.parameters()}
    params = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in own]
    if config.compile and weighting.custom_backward:
        raise MtlDataError(
            f"weighting {config.weighting.name} takes per-task gradients through the model, which "
            "torch.compile is not tested with here: leave out --compile"
        )
    net: nn.Module = model
    if info.distributed:
        # static_graph: every head runs on every batch, so the parameters used never change; a
        # neck map no head reads (FPN's stride 8 and 16 outputs for seg + sign) is found unused
        # once, at the first step, instead of find_unused_parameters' search at every step.
        device_ids = [info.device] if info.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, static_graph=True)
    if config.compile:
        net = torch.compile(net)

    # ---- resume
    held = Held(
        config,
        dict(loader.classes),
        model,
        optimizer,
        scheduler,
        scaler,
        weighting,
        segment,
        {"metric": best_metric(config, tasks), "value": None, "step": 0},
        info.world_size,
    )
    start = 0 if state is None else held.load(state)
    run = create_run(config, info)
    n_params = sum(p.numel() for p in model.parameters())
    if info.is_main:
        logger.info(
            "run %s: %s (%.2f M parameters), mode %s, tasks %s; sources %s; batch %d x %d process(es), "
            "%d steps from %d, %s, %s",
            run,
            config.model
            + ("" if config.loader.frames == 1 else f" x {config.loader.frames} frames ({config.frame_fusion})"),
            n_params / 1e6,
            config.mode,
            ", ".join(tasks_run),
            ", ".join(f"{s} {p:.1%}" for s, p in loader.probs.items()),
            config.loader.batch_size,
            info.world_size,
            config.steps,
            start,
            info.device,
            config.precision,
        )
    log = (
        MetricsLog(run, metrics_columns(tasks_run, sorted({g["part"] for g in optimizer.param_groups})), start)
        if info.is_main
        else None
    )

    # ---- loop
    first_bad = torch.full((len(tasks_run),), -1, dtype=torch.long, device=info.device)  # (T,) step of a NaN
    stream: Iterator[dict] | None = None
    window = Window()
    bar = _progress(progress and info.is_main, start, config.steps)
    out: StepOutput | None = None
    end = config.steps if stop_at is None else max(start, min(stop_at, config.steps))
    try:
        for step in range(start, end):
            if stream is None or step % segment == 0:
                stream = _segment(loader, step, segment, stream)
            t0 = time.perf_counter()
            batch = next(stream)
            window.wait += time.perf_counter() - t0
            if channels_last:
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            if config.mode == "asymmetric":
                out = asymmetric_step(
                    net,
                    tasks,
                    weighting,
                    batch,
                    step,
                    optimizer,
                    part_params,
                    info,
                    config.precision,
                    config.optim.clip_grad_norm,
                )
            else:
                out = symmetric_step(
                    net,
                    tasks,
                    weighting,
                    batch,
                    step,
                    optimizer,
                    scheduler,
                    scaler,
                    info,
                    config.precision,
                    config.optim.clip_grad_norm,
                    params,
                )
            weighting.on_step_end(step)
            if (step + 1) % epoch == 0:  # epochs are counted in steps (the stream is endless)
                weighting.on_epoch_end((step + 1) // epoch - 1)
            bad = ~torch.isfinite(out.losses)  # (T,)
            first_bad = torch.where((first_bad < 0) & bad, torch.full_like(first_bad, step), first_bad)
            window.steps += 1
            done = step + 1
            if done % config.log_every == 0 or done == end:
                _stop_if_bad(first_bad, tasks_run)
                row = _log_row(
                    done, out, tasks_run, optimizer, window, config.loader.batch_size * info.world_size, info
                )
                if log is not None:
                    log.write(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", sps=f"{row['samples_per_s']:.1f}")
                window = Window()
            if bar is not None:
                bar.update(1)
            if config.eval.every and done % config.eval.every == 0 and done < config.steps:
                _evaluate(held, info, run, done)
            if config.save_every and done % config.save_every == 0:
                _stop_if_bad(first_bad, tasks_run)
                _save(held, info, run / CHECKPOINTS / ckpt.LAST, done)
    finally:
        _close(stream)
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    # ---- end
    _stop_if_bad(first_bad, tasks_run)
    _check_ranks_agree(model, info)
    if not config.save_every or end % config.save_every:
        _save(held, info, run / CHECKPOINTS / ckpt.LAST, end)
    if end < config.steps:
        return {"run": str(run), "step": end, "eval": None}  # stopped early: resume it
    final = end
    _evaluate(held, info, run, final)
    doc = broadcast_object(_read_eval(run) if info.is_main else None, info)
    return {"run": str(run), "step": final, "eval": doc}


@dataclasses.dataclass
class Window:
    """Steps and loader waiting time since the last log row (wall clock of the window)."""

    steps: int = 0
    wait: float = 0.0
    start: float = dataclasses.field(default_factory=time.perf_counter)


def _segment(loader, step: int, segment: int, previous: Iterator[dict] | None) -> Iterator[dict]:
    """The stream of segment ``step // segment``, advanced to ``step`` (module docstring)."""
    _close(previous)
    loader.set_epoch(step // segment)
    stream = iter(loader)
    for _ in range(step % segment):  # only when resuming inside a segment
        next(stream)
    return stream


def _close(stream: Iterator[dict] | None) -> None:
    if stream is not None and hasattr(stream, "close"):
        stream.close()  # stops the loader's workers now (the Loader's generator cleans up)


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _check_ranks_agree(model: nn.Module, info: DistInfo) -> None:
    """Under DDP every rank must hold the same parameters (DDP keeps them so; a rank that
    diverged would train a different model silently). Compares one float64 checksum per rank."""
    if not info.distributed:
        return
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)  # (1,)
    sums = [t.item() for t in gather_objects(total.cpu(), info)]
    if len(set(sums)) != 1:
        raise MtlDataError(
            f"the {info.world_size} ranks hold different parameters (checksums {sums}); "
            "this is a bug: please report it with the command"
        )


def _stop_if_bad(first_bad: torch.Tensor, tasks: tuple[str, ...]) -> None:
    steps = first_bad.tolist()  # a host sync: only at log steps and checkpoints
    bad = [(s, t) for s, t in zip(steps, tasks) if s >= 0]
    if bad:
        s, t = min(bad)
        raise NonFiniteLoss(
            f"the {t} loss is not finite at step {s + 1}; the run stops, its last checkpoint is kept "
            "(lower the LR, enable --set optim.clip_grad_norm=..., or check that task's labels)"
        )


def _log_row(
    step: int,
    out: StepOutput,
    tasks: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
    window: Window,
    global_batch: int,
    info: DistInfo,
) -> dict[str, float]:
    """One row of ``metrics.csv``: this step's global losses, weights, counts, LRs, and the
    window's speed; the host reads the device values here."""
    losses = all_reduce_sum(out.losses.clone(), info) / info.world_size  # (T,) global task losses
    total = all_reduce_sum(out.total.clone(), info) / info.world_size
    elapsed = max(time.perf_counter() - window.start, 1e-9)
    row: dict[str, float] = {"step": step, "loss": float(total)}
    row.update({f"loss/{t}": float(v) for t, v in zip(tasks, losses.tolist())})
    row.update({f"weight/{t}": float(v) for t, v in zip(tasks, out.weights.tolist())})
    row.update({f"present/{t}": int(v) for t, v in zip(tasks, out.counts.tolist())})
    row.update({f"lr/{p}": lr for p, lr in part_lrs(optimizer).items()})
    row["samples_per_s"] = window.steps * global_batch / elapsed
    row["data_wait"] = min(1.0, window.wait / elapsed)
    return row


@dataclasses.dataclass
class Held:
    """Everything a checkpoint holds, and the best evaluation so far (``checkpoint`` module)."""

    config: TrainConfig
    classes: dict[str, tuple[str, ...]]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    weighting: nn.Module
    segment: int
    best: dict
    world_size: int = 1

    def state(self, step: int) -> dict[str, Any]:
        """The checkpoint of ``step`` (plain data and tensors: ``weights_only`` loads it)."""
        return {
            "step": int(step),
            "config": to_dict(self.config),
            "classes": {t: list(c) for t, c in self.classes.items()},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "rng": ckpt.rng_state(),
            "loader": {"segment": int(step // self.segment), "offset": int(step % self.segment)},
            "best": dict(self.best),
            "grads": self._pending_grads(),
            "world_size": int(self.world_size),
        }

    def _pending_grads(self) -> dict[str, torch.Tensor]:
        # Gradients accumulated for parts that have not stepped yet (the asymmetric mode): a
        # resume without them would drop those samples' contribution.
        named = [*self.model.named_parameters(), *(("weighting." + n, p) for n, p in self.weighting.named_parameters())]
        return {name: p.grad.detach().clone() for name, p in named if p.grad is not None}

    def load(self, state: dict[str, Any]) -> int:
        """Restore every state of a checkpoint; returns its step."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.weighting.load_state_dict(state["weighting"])
        ckpt.set_rng_state(state["rng"])
        self.best = dict(state["best"])
        named = dict(
            [*self.model.named_parameters(), *(("weighting." + n, p) for n, p in self.weighting.named_parameters())]
        )
        for name, grad in state.get("grads", {}).items():
            named[name].grad = grad.to(named[name].device)
        return int(state["step"])


def _save(held: Held, info: DistInfo, path: Path, step: int) -> None:
    if info.is_main:
        ckpt.save(held.state(step), path)
    barrier(info)


def _evaluate(held: Held, info: DistInfo, run: Path, step: int) -> None:
    """Evaluate (every rank), write ``eval.json`` and, when the selected metric improves, ``best.pt``."""
    config, tasks = held.config, held.model.tasks
    metrics = evaluate(held.model, tasks, config.shards, eval_loader_config(config), info, config.precision)
    task_name, _, metric = held.best["metric"].partition("/")
    value = metrics.get(task_name, {}).get(metric)
    higher = tasks[task_name].higher_is_better
    improved = (
        value is not None
        and math.isfinite(value)
        and (held.best["value"] is None or (value > held.best["value"] if higher else value < held.best["value"]))
    )
    if improved:
        held.best = {"metric": held.best["metric"], "value": float(value), "step": int(step)}
    if info.is_main:
        write_eval(run, config.eval.split, step, metrics, config.eval.stl, tasks)
        if improved:
            ckpt.save(held.state(step), run / CHECKPOINTS / ckpt.BEST)
    barrier(info)


def _read_eval(run: Path) -> dict:
    return json.loads((run / EVAL_FILE).read_text())
