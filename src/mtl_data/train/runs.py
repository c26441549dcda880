"""What ``mtl-train eval`` and ``predict`` do with a finished run (the library behind the commands).

Both rebuild the run's model from a checkpoint (``run.load_run``: the config, class tables and
weights it was trained with) and read the split of the shards the run was trained on. Under
``torchrun`` every process takes part (the evaluation pass is cut across ranks); only rank 0
writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtl_data.errors import MtlDataError
from mtl_data.train import checkpoint as ckpt
from mtl_data.train.config import from_dict
from mtl_data.train.data.loader import build_loader
from mtl_data.train.distributed import setup, teardown
from mtl_data.train.evaluate import EVAL_FILE, evaluate, write_eval
from mtl_data.train.predict import write_predictions
from mtl_data.train.run import CHECKPOINTS, eval_loader_config, load_run
from mtl_data.train.video import read_frames, write_video_predictions


def stl_task(run: str | Path) -> str:
    """The task of a single-task run (its checkpoint's config).

    Raises:
        MtlDataError: the run trained more than one task.
    """
    state = ckpt.load(Path(run) / CHECKPOINTS / ckpt.LAST)
    config = from_dict(state["config"])
    if len(config.tasks) != 1:
        raise MtlDataError(f"{run}: trained {', '.join(config.tasks)}; --stl wants a single-task run")
    return config.tasks[0]


def evaluate_run(
    run: str | Path,
    *,
    split: str | None = None,
    stl: Sequence[str | Path] = (),
    which: str = "last",
    predictions: str | Path | None = None,
    device: str = "auto",
) -> dict:
    """Evaluate a run on ``split`` (default: its eval split) and write ``eval.json`` (or
    ``eval_<split>.json`` for another split); returns the document with its ``path``.

    ``stl`` runs add to the run's configured single-task baselines (``eval.stl``) for Delta_T.
    With ``predictions``, the predictions of the same pass are also written there.
    """
    run = Path(run)
    config, model, state = load_run(run, which)
    split = split or config.eval.split
    baselines = {**config.eval.stl, **{stl_task(r): str(r) for r in stl}}
    info = setup(device)
    try:
        model.to(info.device)
        metrics = evaluate(model, model.tasks, config.shards, eval_loader_config(config, split), info, config.precision)
        name = EVAL_FILE if split == config.eval.split else f"eval_{split}.json"
        doc = write_eval(run, split, state["step"], metrics, baselines, model.tasks, name=name) if info.is_main else {}
        if predictions is not None and info.is_main:
            _predict(config, model, predictions, split, overlays=True, overwrite=False)
    finally:
        teardown()
    return {**doc, "path": str(run / name)}


def predict_run(
    run: str | Path,
    out_dir: str | Path,
    *,
    split: str | None = None,
    which: str = "last",
    overlays: bool = True,
    overwrite: bool = False,
    device: str = "auto",
) -> dict[str, int]:
    """Write a run's predictions of ``split`` in the benchmarks' formats; returns counts per task."""
    config, model, _ = load_run(Path(run), which)
    info = setup(device)
    try:
        model.to(info.device)
        return _predict(config, model, out_dir, split or config.eval.split, overlays, overwrite)
    finally:
        teardown()


def predict_video(
    run: str | Path,
    video: str | Path,
    out_dir: str | Path,
    *,
    which: str = "last",
    overlays: bool = True,
    overwrite: bool = False,
    device: str = "auto",
) -> dict[str, int]:
    """Write a run's predictions of every frame of ``video`` (a folder of images or a video
    file), streamed as a car's camera delivers them (``train/video.py``); counts per task."""
    config, model, _ = load_run(Path(run), which)
    loader = eval_loader_config(config)
    frames = read_frames(video)  # a missing path or an empty folder: one line before any writing
    info = setup(device)
    try:
        model.to(info.device)
        return write_video_predictions(
            model,
            frames,
            out_dir,
            image_size=loader.image_size,
            letterbox=loader.letterbox,
            overlays=overlays,
            overwrite=overwrite,
        )
    finally:
        teardown()


def _predict(config, model, out_dir, split: str, overlays: bool, overwrite: bool) -> dict[str, int]:
    labelled = config.tasks
    loader = build_loader(config.shards, eval_loader_config(config, split), tasks=labelled, rank=0, world_size=1)
    return write_predictions(model, model.tasks, loader, config.shards, out_dir, overwrite=overwrite, overlays=overlays)
