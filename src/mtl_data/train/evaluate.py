"""Evaluation: one DDP-exact pass over a split, the scorer's metrics, and Delta_T.

``evaluate`` runs the model over an evaluation loader (every sample of the split exactly once
across ranks and workers, padding slots masked), decodes each task's outputs into stored
pixels, reads the ground truth from the shards (labels only) and accumulates each task's
``Metric``; the metrics of all ranks are gathered and merged, so every rank returns the
single-process numbers. These are the numbers ``mtl-train score`` gives on the same
predictions written to files (tests/test_train_library.py checks that identity).

Delta_T (Maninis et al. 2019; trainer.md section 7), over the tasks that have a single-task
baseline: ``(1/T) sum_t (-1)^{l_t} (M_t - M_stl,t) / M_stl,t x 100`` with ``M_t`` the task's
headline metric and ``l_t = 1`` where lower is better: positive means the multi-task model is
better on average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.files import read_json_document, write_atomic
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data.loader import LoaderConfig, build_loader
from mtl_data.train.distributed import DistInfo, gather_objects
from mtl_data.train.models.multiframe import model_inputs
from mtl_data.train.precision import autocast
from mtl_data.train.score import label_samples, to_json
from mtl_data.train.tasks import Metric, Task

EVAL_FILE = "eval.json"


def evaluate(
    model: nn.Module,
    tasks: Mapping[str, Task],
    shards: str | Path,
    config: LoaderConfig,
    info: DistInfo,
    precision: str = "fp32",
) -> dict[str, dict[str, float]]:
    """Metrics per task on the split of ``config`` (module docstring).

    Args:
        model: ``{task: output}`` for a batch's image; put in eval mode for the pass and restored.
        tasks: the task objects (decode, truth, metric).
        shards: the shards root.
        config: the evaluation loader (``split``, ``batch_size``, ``image_size``, ``letterbox``,
            ``workers``; ``infinite`` and ``tasks`` are set here).
        info: this process's rank and device.
        precision: the forward pass's precision.

    Returns:
        ``{task: {metric: value}}`` for the tasks that some sample of the split labels.

    Raises:
        MtlDataError: no sample of the split labels any of the tasks.
    """
    shard_set = ShardSet.open(Path(shards))
    rows = shard_set.manifest
    split_rows = rows.filter(rows["split"] == config.split)
    labelled = tuple(t for t in tasks if split_rows[f"has_{t}"].any())
    if not labelled:
        raise MtlDataError(
            f"{shards}: no sample of split {config.split!r} labels {', '.join(tasks)}; "
            "evaluate on a split that has labels (--split)"
        )
    loader = build_loader(
        shards, config, tasks=labelled, infinite=False, augment=False, rank=info.rank, world_size=info.world_size
    )
    metrics: dict[str, Metric] = {t: tasks[t].metric() for t in labelled}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            keys = [k for k in batch["key"] if k]
            if not keys:
                continue  # padding only (the short last rank); its forward would change nothing
            with autocast(precision, info.device):
                outputs = model(*model_inputs(batch, info.device))
            samples = {s.key: s for s in label_samples(shard_set, keys, labelled)}
            for t in labelled:
                for i, prediction in enumerate(tasks[t].decode(outputs[t], batch)):
                    key = batch["key"][i]
                    truth = tasks[t].ground_truth(samples[key]) if key else None
                    if truth is not None:
                        metrics[t].update(prediction, truth)
    model.train(was_training)
    merged: dict[str, Metric] = {}
    for part in gather_objects(metrics, info):  # rank order: the same merge on every rank
        for t, metric in part.items():
            if t in merged:
                merged[t].merge(metric)
            else:
                merged[t] = metric
    return {t: merged[t].compute() for t in labelled}


def headline(task: Task) -> tuple[str, bool]:
    """(headline metric name, higher is better) of a task."""
    return task.headline, task.higher_is_better


def delta_t(
    metrics: Mapping[str, Mapping[str, float]], baselines: Mapping[str, float], tasks: Mapping[str, Task]
) -> float | None:
    """Delta_T in percent over the tasks of ``baselines`` (module docstring); None without any.

    Args:
        metrics: the multi-task model's ``{task: {metric: value}}``.
        baselines: task -> the single-task run's value of that task's headline metric.
        tasks: the task objects (headline metric and direction).

    Raises:
        MtlDataError: a baseline of 0 (the relative change is undefined) or a task without its
            headline metric in ``metrics``.
    """
    terms = []
    for t, base in baselines.items():
        name, higher = headline(tasks[t])
        if t not in metrics or name not in metrics[t]:
            raise MtlDataError(f"Delta_T: the run has no {t} {name} to compare with its single-task baseline")
        if base == 0 or not math.isfinite(base):
            raise MtlDataError(f"Delta_T: the single-task {t} {name} is {base}; the relative change is undefined")
        sign = 1.0 if higher else -1.0
        terms.append(sign * (metrics[t][name] - base) / base * 100.0)
    return sum(terms) / len(terms) if terms else None


def read_baseline(run: str | Path, task: Task) -> float:
    """The headline metric of ``task`` in a single-task run's ``eval.json``.

    Raises:
        MtlDataError: no ``eval.json`` there, or no value of that task and metric in it.
    """
    path = Path(run) / EVAL_FILE
    doc = read_json_document(path, f"{path}: missing; evaluate that run first (mtl-train eval {run})")
    name = task.headline
    value = (doc.get("metrics") or {}).get(task.name, {}).get(name)
    if not isinstance(value, (int, float)):
        raise MtlDataError(f"{path}: no {task.name} {name} in it (a single-task run of {task.name}?)")
    return float(value)


def write_eval(
    run: str | Path,
    split: str,
    step: int,
    metrics: Mapping,
    baselines: Mapping[str, str],
    tasks: Mapping[str, Task],
    name: str = EVAL_FILE,
) -> dict:
    """Write ``RUN/<name>`` (``eval.json``) = ``{"split", "step", "metrics", "delta_t", "stl"}`` and
    return it.

    ``baselines``: task -> single-task run folder; ``stl`` records each one's run, metric and value.
    """
    values = {t: read_baseline(run_dir, tasks[t]) for t, run_dir in baselines.items() if t in tasks}
    doc = {
        "split": split,
        "step": int(step),
        "metrics": dict(metrics),
        "delta_t": delta_t(metrics, values, tasks),
        "stl": {t: {"run": str(baselines[t]), "metric": tasks[t].headline, "value": v} for t, v in values.items()},
    }
    write_atomic(Path(run) / name, to_json(doc))
    return doc
