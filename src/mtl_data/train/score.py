"""The scorer: any model's exported predictions checked against the shards, task by task.

``score(shards, split, pred_dir)`` finds which tasks a predictions folder holds (each task
module knows its files: ``seg/``, ``depth/``, ``det2d.json``, ``det3d/``, ``lane.json``,
``steer.csv``, ``sign.csv``), reads them with the task's own reader, reads the ground truth of
every sample of the split that labels the task from the shards (labels only: images are never
decoded), and accumulates the task's metric. The result is
``{"split": split, "metrics": {task: {key: value}}}`` with the keys of each task's
``metric_keys`` first.

Rules (a predictions folder is user input; every problem is one ``MtlDataError``):

* a prediction for a key that is not in the split is refused, naming the file and the key;
* tasks whose official tool requires a prediction for every image (``Task.
  requires_every_prediction``: seg, depth, det3d, steer, sign, lane) refuse a folder that lacks
  a labelled sample, naming how many and the first; detection counts a missing sample as
  "nothing detected", as COCO does;
* a prediction for a sample of the split that does not label the task is ignored (there is
  nothing to score it against), and a task no sample of the split labels is left out of the
  result;
* a prediction that does not fit its sample (a seg PNG of another size, lanes at other rows) is
  refused with the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import Sample
from mtl_data.shards.codec import DecodeError, decode_sample
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data.loader import shard_classes
from mtl_data.train.tasks import Task, create_task, list_tasks, task_class

logger = logging.getLogger(__name__)


def tasks_for(shard_set: ShardSet, names: Collection[str]) -> dict[str, Task]:
    """The task objects of ``names`` with the class names of the shards' ``classes.json``."""
    classes = shard_classes(shard_set, shard_set.sources(), names)
    out = {}
    for name in names:
        table = task_class(name).class_table
        out[name] = create_task(name, classes=classes.get(table) if table else None)
    return out


#: labels a task's ground truth reads besides its own: det3d's DS matches predictions to the
#: truth's amodal 2D boxes and skips its ignore regions, both stored with det2d (Cityscapes-3D).
#: Without them a run that trains det3d but not det2d would never get a DS.
TRUTH_ALSO = {"det3d": ("det2d",)}


def label_samples(shard_set: ShardSet, keys: Sequence[str], tasks: Collection[str]) -> Iterator[Sample]:
    """The stored samples of ``keys`` with the labels of ``tasks`` (and those their ground truth
    reads, ``TRUTH_ALSO``) only; the image is a zero-copy placeholder of the stored shape (never
    decoded: scoring needs sizes, not pixels).

    Raises:
        MtlDataError: a sample that cannot be read or decoded (naming shard and key).
    """
    tasks = {*tasks, *(extra for t in tasks for extra in TRUTH_ALSO.get(t, ()))}
    rows = shard_set.manifest.filter(pl.col("key").is_in(list(keys)))
    sizes = {k: (h, w) for k, h, w in rows.select("key", "height", "width").iter_rows()}
    for key in keys:
        try:
            members = shard_set.read_members(key)
            placeholder = np.broadcast_to(np.uint8(0), (*sizes[key], 3))  # (h, w, 3), no memory
            yield decode_sample(key, members, tasks=tasks, image=placeholder)
        except (DecodeError, KeyError, ValueError, OSError) as exc:
            raise MtlDataError(
                f"{shard_set.root}: sample {key} cannot be read ({exc}); check the shards with `mtl-data validate`"
            ) from None


def score(shards: str | Path, split: str, pred_dir: str | Path, tasks: Collection[str] | None = None) -> dict:
    """Score the predictions under ``pred_dir`` against the ``split`` of ``shards`` (module docstring).

    Args:
        shards: a shards root or one source folder.
        split: the split the predictions are for.
        pred_dir: a predictions folder (``Task.writer`` layout).
        tasks: score only these tasks (each must have predictions there); None = every task
            the folder holds.

    Returns:
        ``{"split": split, "metrics": {task: {name: value}}}``.

    Raises:
        MtlDataError: see the module docstring; also a split without samples or a folder
            without predictions.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise MtlDataError(f"{pred_dir}: no such predictions folder")
    shard_set = ShardSet.open(Path(shards))
    rows = shard_set.manifest.filter(pl.col("split") == split)
    if rows.height == 0:
        splits = sorted(shard_set.manifest["split"].unique().to_list())
        raise MtlDataError(f"{shards}: no sample in split {split!r}; the shards have {', '.join(splits)}")
    all_tasks = tasks_for(shard_set, list_tasks())
    found = [t for t, task in all_tasks.items() if task.holds_predictions(pred_dir)]
    if tasks is not None:
        absent = [t for t in tasks if t not in found]
        if absent:
            raise MtlDataError(
                f"{pred_dir}: no predictions of {', '.join(absent)} (it holds {', '.join(found) or 'none'})"
            )
        found = [t for t in found if t in tasks]
    if not found:
        raise MtlDataError(
            f"{pred_dir}: holds no predictions of any task (expected e.g. seg/, depth/, det2d.json, "
            "det3d/, lane.json, steer.csv, sign.csv)"
        )
    split_keys = set(rows["key"].to_list())
    predictions: dict[str, dict] = {}
    labelled: dict[str, list[str]] = {}
    for name in list(found):
        predictions[name] = _checked_predictions(all_tasks[name], pred_dir, split, split_keys)
        keys = rows.filter(pl.col(f"has_{name}"))["key"].to_list()
        if not keys:  # predictions for a split that has no labels of the task: nothing to score
            logger.info("%s: no %s sample labels %s; its predictions are not scored", pred_dir, split, name)
            found.remove(name)
            continue
        missing = [k for k in keys if k not in predictions[name]]
        if missing and all_tasks[name].requires_every_prediction:
            raise MtlDataError(
                f"{pred_dir}: no {name} prediction for {len(missing)} of the {len(keys)} {split} "
                f"samples that label {name} (first: {missing[0]}); the benchmark scores every image"
            )
        labelled[name] = keys
    if not found:
        raise MtlDataError(f"{pred_dir}: no sample of split {split!r} labels the tasks it holds predictions of")
    metrics = {name: all_tasks[name].metric() for name in found}
    order = sorted(set().union(*labelled.values()))
    for sample in label_samples(shard_set, order, found):
        for name in found:
            truth = all_tasks[name].ground_truth(sample)
            if truth is None:
                continue
            try:
                metrics[name].update(predictions[name].get(sample.key), truth)
            except ValueError as exc:
                raise MtlDataError(
                    f"{pred_dir}: the {name} prediction for {sample.key} does not fit its sample: {exc}"
                ) from None
    return {"split": split, "metrics": {name: metrics[name].compute() for name in found}}


def _checked_predictions(task: Task, pred_dir: Path, split: str, split_keys: set[str]) -> dict:
    predictions = task.read_predictions(pred_dir)
    stray = sorted(k for k in predictions if k not in split_keys)
    if stray:
        raise MtlDataError(
            f"{pred_dir}: {task.name} predictions for {len(stray)} key(s) not in split {split!r} "
            f"(first: {stray[0]}); predict the same split you score"
        )
    return predictions


def render(result: Mapping) -> str:
    """The scorer's result as a table, one line per task (headline metrics first)."""
    lines = [f"split {result['split']}"]
    for task, values in result["metrics"].items():
        shown = [(k, v) for k, v in values.items() if "/" not in k]
        lines.append(f"{task:6s} " + "  ".join(f"{k} {_fmt(v)}" for k, v in shown))
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_json(result: Mapping) -> str:
    """The result as JSON text (NaN written as null: JSON has no NaN)."""

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, float) and not np.isfinite(v):
            return None
        return v

    return json.dumps(clean(result), indent=1) + "\n"
