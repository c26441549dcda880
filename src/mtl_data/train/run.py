"""A run: its folder on disk and the pieces built from its config.

The layout other tools read (trainer.md section 8)::

    RUN/config.toml            the resolved config (``config.to_toml``)
    RUN/metrics.csv            step, loss, loss/<task>, weight/<task>, present/<task>, lr/<part>,
                               samples_per_s, data_wait (one row every log_every steps)
    RUN/tb/                    TensorBoard events of the same scalars
    RUN/checkpoints/last.pt    every state (``checkpoint`` module); best.pt: the best evaluation
    RUN/eval.json              {"split", "step", "metrics", "delta_t", "stl"}

The builders here are shared by training and by the commands that use a finished run
(``mtl-train eval``, ``predict``, ``report``), so a run is rebuilt exactly as it was trained.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import torch

from mtl_data.errors import MtlDataError
from mtl_data.files import write_atomic
from mtl_data.shards.reader import ShardSet, labels_any
from mtl_data.train import checkpoint as ckpt
from mtl_data.train.config import TrainConfig, differences, from_dict, to_toml
from mtl_data.train.data.loader import LoaderConfig
from mtl_data.train.distributed import DistInfo, barrier
from mtl_data.train.models import MultiTaskModel, create_model
from mtl_data.train.models.multiframe import wrap_frames
from mtl_data.train.tasks import Task, list_tasks
from mtl_data.train.weighting import Weighting, create_weighting

CONFIG_FILE, METRICS_FILE, TB_DIR, CHECKPOINTS = "config.toml", "metrics.csv", "tb", "checkpoints"


def run_tasks(config: TrainConfig, shards: ShardSet) -> tuple[str, ...]:
    """The tasks of a run: ``config.tasks``, or every task the training split labels.

    Raises:
        MtlDataError: an unknown task, or a task no sample of the training split labels.
    """
    rows = shards.manifest.filter(pl.col("split") == config.train_split)
    if rows.height == 0:
        splits = sorted(shards.manifest["split"].unique().to_list())
        raise MtlDataError(
            f"{config.shards}: no sample in split {config.train_split!r}; the shards have {', '.join(splits)}"
        )
    known = list_tasks()
    unknown = [t for t in config.tasks if t not in known]
    if unknown:
        raise MtlDataError(f"unknown task {', '.join(unknown)}; choose from {', '.join(known)}")
    labelled = [t for t in known if rows[f"has_{t}"].any()]
    tasks = tuple(t for t in known if t in config.tasks) if config.tasks else tuple(labelled)
    missing = [t for t in tasks if t not in labelled]
    if missing:
        raise MtlDataError(
            f"{config.shards}: no sample of split {config.train_split!r} labels {', '.join(missing)} "
            f"(labelled there: {', '.join(labelled) or 'nothing'})"
        )
    if config.mode == "stl" and len(tasks) != 1:
        raise MtlDataError(f"--mode stl trains one task; got {', '.join(tasks)} (pass --tasks with one of them)")
    return tasks


def frames_note(config: TrainConfig, shards: ShardSet) -> str | None:
    """With ``loader.frames`` > 1, how many training samples carry all their previous frames
    (the manifest's ``prev_frames``), as one log line; None for a single-frame run.

    A run on shards ingested without ``--prev-frames`` trains, but every sample's previous frames
    are absent (frame t stands in): the line says so, and how to ingest them.
    """
    n = config.loader.frames - 1
    if n < 1:
        return None
    rows = shards.manifest.filter(pl.col("split") == config.train_split)
    full = rows.filter(pl.col("prev_frames") >= n).height
    note = f"{n + 1} frames: {full} of {rows.height} {config.train_split} samples carry {n} previous frame(s)"
    if full == 0:
        note += f"; none do, so frame t stands in for every one (ingest with mtl-data ingest --prev-frames {n})"
    return note


def train_loader_config(config: TrainConfig, tasks: tuple[str, ...]) -> LoaderConfig:
    """The training stream's loader config: the run's split and tasks, endless; the mix defaults
    to the stats report's recommendation when ``stats`` is given."""
    mix = config.loader.mix
    if mix is None and config.stats:
        mix = f"{config.stats}#{config.mix_alpha}"
    return dataclasses.replace(
        config.loader, split=config.train_split, tasks=tasks, infinite=True, mix=mix, seed=config.seed
    )


def eval_loader_config(config: TrainConfig, split: str | None = None) -> LoaderConfig:
    """The evaluation pass's loader config: the training image size and batch (unless ``eval``
    says otherwise), every source of the split, no augmentation."""
    e = config.eval
    return dataclasses.replace(
        config.loader,
        split=split or e.split,
        mix=None,
        infinite=False,
        augment=False,
        seed=config.seed,
        batch_size=e.batch_size or config.loader.batch_size,
        workers=config.loader.workers if e.workers is None else e.workers,
    )


def build_model(
    config: TrainConfig, tasks: tuple[str, ...], classes: Mapping[str, tuple[str, ...]], weights: bool = True
) -> MultiTaskModel:
    """The run's model, initialised from ``config.seed`` (and the encoder weights file); with
    ``loader.frames`` > 1 a ``MultiFrameModel`` of it fusing the frames by ``frame_fusion``."""
    torch.manual_seed(config.seed)
    model = create_model(
        config.model,
        tasks=list(tasks),
        classes=dict(classes),
        weights=config.weights if weights else None,
        task_options=config.task_options,
        **config.model_options,
    )
    return wrap_frames(model, config.loader.frames, config.frame_fusion)


def build_weighting(config: TrainConfig, tasks: tuple[str, ...]) -> Weighting:
    """The weighting strategy with the fields of ``config.weighting`` that differ from their
    defaults and ``weighting.options`` (a strategy that does not take a field set by the user
    refuses it)."""
    w = config.weighting
    defaults = type(w)()
    options = {
        f.name: getattr(w, f.name)
        for f in dataclasses.fields(w)
        if f.name not in ("name", "options") and getattr(w, f.name) != getattr(defaults, f.name)
    }
    return create_weighting(w.name, list(tasks), **options, **w.options)


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    return device.type == "cuda" if config.channels_last is None else bool(config.channels_last)


# ---- the run folder -------------------------------------------------------------------------


def metrics_columns(tasks: tuple[str, ...], parts: list[str]) -> list[str]:
    """The columns of ``metrics.csv``."""
    return (
        ["step", "loss"]
        + [f"loss/{t}" for t in tasks]
        + [f"weight/{t}" for t in tasks]
        + [f"present/{t}" for t in tasks]
        + [f"lr/{p}" for p in parts]
        + ["samples_per_s", "data_wait"]
    )


class MetricsLog:
    """``RUN/metrics.csv`` (appended, flushed at each row) and TensorBoard scalars under ``RUN/tb``."""

    def __init__(self, run: Path, columns: list[str], start_step: int):
        self.path, self.columns = run / METRICS_FILE, columns
        kept = self._rows_up_to(start_step)
        self.file = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.file.flush()
        from torch.utils.tensorboard import SummaryWriter  # tensorboard: the 'train' extra

        self.tb = SummaryWriter(str(run / TB_DIR), purge_step=start_step + 1 if start_step else None)

    def _rows_up_to(self, step: int) -> list[dict]:
        # A resumed run re-does the steps after its checkpoint: their old rows go.
        if not step or not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return [r for r in csv.DictReader(f) if int(r["step"]) <= step]

    def write(self, row: Mapping[str, float]) -> None:
        self.writer.writerow({k: _fmt(row[k]) for k in self.columns})
        self.file.flush()
        for key, value in row.items():
            if key != "step":
                self.tb.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _fmt(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def check_run(config: TrainConfig, resume: bool, world_size: int = 1) -> dict | None:
    """Check the run folder before anything is built or written (nothing is written here).

    Returns:
        The checkpoint to resume from (None for a new run).

    Raises:
        MtlDataError: a new run into a folder that already holds a run, a resume without a
            checkpoint, a resume whose config differs from the run's (but for ``steps`` and
            ``out``), or one with another number of processes than the run's (``world_size``:
            the global batch, the data streams and the epoch length depend on it).
    """
    run = Path(config.out)
    state = None
    if resume:
        state = ckpt.load(run / CHECKPOINTS / ckpt.LAST)
        saved = from_dict(state["config"])
        # --steps may grow; ``out`` is where the run is now (a run folder moved or copied to
        # another machine resumes where it lies)
        changed = [d for d in differences(saved, config) if not d.startswith(("steps:", "out:"))]
        if changed:
            raise MtlDataError(
                f"{run}: --resume with a config that differs from the run's ({'; '.join(changed)}); "
                "resume with the same options (only --steps may change) or start a new --out"
            )
        saved_world = int(state.get("world_size", world_size))  # checkpoints before it: unchecked
        if saved_world != world_size:
            raise MtlDataError(
                f"{run}: trained by {saved_world} process(es), resumed by {world_size}: resume with "
                f"{saved_world} (torchrun --nnodes x --nproc-per-node = {saved_world}), or start a new --out"
            )
        if state["step"] >= config.steps:
            raise MtlDataError(f"{run}: already at step {state['step']} of {config.steps}; raise --steps to go on")
    elif run.exists() and any(run.iterdir()):
        raise MtlDataError(f"{run}: holds a run already; --resume it, or choose another --out")
    return state


def create_run(config: TrainConfig, info: DistInfo) -> Path:
    """Create the run folder (rank 0 writes ``config.toml``), once everything is built: a run
    refused for bad input leaves no folder behind."""
    run = Path(config.out)
    if info.is_main:
        (run / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        write_atomic(run / CONFIG_FILE, to_toml(config))
    barrier(info)
    return run


def load_run(run: str | Path, which: str = "last") -> tuple[TrainConfig, MultiTaskModel, dict]:
    """A finished (or interrupted) run rebuilt from its checkpoint ``which`` (``last`` or ``best``).

    Returns:
        (config, model with the checkpoint's weights on the CPU, the checkpoint's state).

    Raises:
        MtlDataError: no such run or checkpoint, or a damaged checkpoint.
    """
    run = Path(run)
    if not (run / CONFIG_FILE).is_file():
        raise MtlDataError(
            f"{run}: not a run folder (no {CONFIG_FILE}); train one with mtl-train --shards ... --out {run}"
        )
    state = ckpt.load(run / CHECKPOINTS / f"{which}.pt")
    config = from_dict(state["config"])
    classes = {task: tuple(names) for task, names in state["classes"].items()}
    model = build_model(config, tuple(config.tasks), classes, weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise MtlDataError(
            f"{run / CHECKPOINTS / which}.pt: its weights do not fit the model its config builds "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return config, model, state


def epoch_length(shard_set: ShardSet, loader, split: str, global_batch: int) -> int:
    """Steps of one epoch when ``epoch_steps`` is 0: as many samples as the split holds of the
    loaded sources that label a trained task, over the global batch (at least 1)."""
    rows = shard_set.manifest.filter(
        (pl.col("split") == split) & pl.col("source").is_in(list(loader.sources)) & labels_any(loader.tasks)
    )
    return max(1, math.ceil(rows.height / global_batch))


def check_asymmetric(config: TrainConfig, weighting, global_batch: int, tasks: tuple[str, ...]) -> None:
    """The asymmetric mode's own limits, each one clear error."""
    if config.precision == "fp16":
        raise MtlDataError(
            "--mode asymmetric runs in fp32 or bf16: fp16's gradient scaler cannot follow optimizers "
            "that step at different times; use --precision bf16"
        )
    if weighting.custom_backward:
        raise MtlDataError(
            f"--mode asymmetric accumulates one backward pass per step; weighting "
            f"{config.weighting.name} combines the tasks' gradients itself: use --mode symmetric"
        )
    for part in ("encoder", *tasks):
        k = config.asymmetric.k.get(part, global_batch)
        if k < global_batch:
            raise MtlDataError(
                f"asymmetric.k.{part}={k} is below the global batch ({global_batch} samples): a part "
                "steps at most once per batch; raise it or lower --batch-size"
            )


def best_metric(config: TrainConfig, tasks: Mapping[str, Task]) -> str:
    """``task/metric`` that selects ``best.pt``: ``eval.best_metric`` or the first task's headline.

    Raises:
        MtlDataError: ``eval.best_metric`` names a task the run does not train or a metric it lacks.
    """
    chosen = config.eval.best_metric
    if chosen is None:
        first = next(iter(tasks.values()))
        return f"{first.name}/{first.headline}"
    task, _, metric = chosen.partition("/")
    if task not in tasks or metric not in tasks[task].metric_keys:
        raise MtlDataError(
            f"eval.best_metric {chosen!r}: expected <task>/<metric> with a task of this run "
            f"({', '.join(tasks)}) and one of its metrics"
        )
    return chosen


def init_from(model: MultiTaskModel, path: Path) -> None:
    """Start ``model`` from the weights of a checkpoint (``init_from``; the search's weight
    transfer): the optimizer, schedule and step start afresh.

    Raises:
        MtlDataError: an unreadable checkpoint, or one of another architecture or other tasks.
    """
    state = ckpt.load(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise MtlDataError(
            f"{path}: init_from needs a checkpoint of the same model and tasks ({str(exc).splitlines()[0]})"
        ) from None
