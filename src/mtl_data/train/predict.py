"""Predictions of a model over an evaluation pass, written in each benchmark's own format.

``write_predictions(model, tasks, loader, shards, out_dir)`` runs the model on every batch of
an evaluation loader (``infinite=False``), decodes each task's outputs into stored-image pixels
(``Task.decode``) and hands them to each task's writer (``Task.writer``), which writes the
benchmark's submission files (``seg/<key>.png``, ``depth/<key>.png``, ``det2d.json`` +
``det2d_gt.json``, ``det3d/<source>/<split>/<id>_pred.json``, ``lane.json``, ``steer.csv``,
``sign.csv``). The folder is written as ``OUT.partial`` and renamed to ``OUT`` when every file
is complete, so an interrupted run leaves no folder that looks finished. ``mtl-train score``
reads it back. With ``overlays=True`` it also writes ``overlays/<key>.png``: each task's
``Task.draw`` of the sample, one panel per task, for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_data.errors import MtlDataError
from mtl_data.files import write_atomic
from mtl_data.schema.sample import Sample
from mtl_data.shards.codec import encode_image
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data.loader import Loader
from mtl_data.train.models.multiframe import model_inputs
from mtl_data.train.score import label_samples
from mtl_data.train.tasks import Task


def write_predictions(
    model: torch.nn.Module,
    tasks: dict[str, Task],
    loader: Loader,
    shards: str | Path,
    out_dir: str | Path,
    *,
    only: Collection[str] | None = None,
    overwrite: bool = False,
    overlays: bool = False,
) -> dict:
    """Write the predictions of ``model`` for every sample of an evaluation pass.

    Args:
        model: returns ``{task: output}`` for a batch's ``image``; put in eval mode here.
        tasks: the task objects that decode the outputs (the model's ``tasks``).
        loader: an evaluation loader (one pass, ``infinite=False``) over the shards.
        shards: the shards root the loader reads (the writers get each stored sample's labels).
        out_dir: the predictions folder to create.
        only: write only these tasks; None = every task of ``tasks`` that the loader loads.
        overwrite: replace an existing ``out_dir``.
        overlays: also draw every sample's predictions into ``overlays/<key>.png``.

    Returns:
        ``{task: samples written}``.

    Raises:
        MtlDataError: ``out_dir`` exists (without ``overwrite``), or the loader is a training stream.
    """
    if loader.infinite:
        raise MtlDataError(
            "write_predictions needs an evaluation loader (infinite=False): a training stream never ends"
        )
    names = [t for t in tasks if t in loader.tasks and (only is None or t in only)]
    shard_set = ShardSet.open(Path(shards))
    model.eval()
    device = next(model.parameters()).device

    def predicted() -> Iterator[tuple[dict, dict, dict[str, Sample]]]:
        for batch in loader:
            outputs = model(*model_inputs(batch, device))
            keys = [k for k in batch["key"] if k]
            samples = (
                {k: shard_set.read_sample(k) for k in keys}
                if overlays
                else {s.key: s for s in label_samples(shard_set, keys, names)}
            )
            yield outputs, batch, samples

    return write_batches(tasks, names, predicted(), out_dir, overwrite=overwrite, overlays=overlays)


def write_batches(
    tasks: dict[str, Task],
    names: list[str],
    predicted: Iterable[tuple[dict, dict, dict[str, Sample]]],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    overlays: bool = False,
) -> dict[str, int]:
    """Decode and write what ``predicted`` yields into the predictions folder ``out_dir``.

    The writing half of ``write_predictions``, shared with the video predictor (``train/video.py``).

    Args:
        tasks: the task objects that decode the outputs.
        names: the tasks to write.
        predicted: ``(outputs, batch, samples)`` per batch: the model's ``{task: output}``, the
            batch it ran on (the ``key`` and view fields ``Task.decode`` reads; "" keys are
            padding) and the stored samples by key (the writers' labels; the image for overlays).
            Iterated under ``torch.no_grad``.
        out_dir: the folder to create, written as ``OUT.partial`` and renamed when complete.
        overwrite: replace an existing ``out_dir``.
        overlays: also draw every sample's predictions into ``overlays/<key>.png``.

    Returns:
        ``{task: samples written}``.

    Raises:
        MtlDataError: ``out_dir`` exists (without ``overwrite``).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MtlDataError(f"{out_dir}: exists; choose another folder or overwrite it")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    writers = {t: tasks[t].writer(partial) for t in names}
    counts = dict.fromkeys(names, 0)
    with torch.no_grad():
        for outputs, batch, samples in predicted:
            decoded = {t: tasks[t].decode(outputs[t], batch) for t in names}
            for i, key in enumerate(batch["key"]):
                if not key:
                    continue  # a padding slot of the evaluation pass
                for t in names:
                    writers[t].add(key, decoded[t][i], samples[key])
                    counts[t] += 1
                if overlays:
                    panels = {t: tasks[t].draw(samples[key].image, decoded[t][i], samples[key]) for t in names}
                    write_atomic(partial / "overlays" / f"{key}.png", encode_image(overlay(panels), "png"))
    for writer in writers.values():
        writer.close()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    return counts


#: width of one panel of an overlay, px (wide frames are shrunk, GTSRB crops enlarged).
PANEL_WIDTH = 640


def overlay(panels: dict[str, np.ndarray]) -> np.ndarray:
    """Task drawings of one sample -> one picture: a captioned panel per task, two per row.

    Args:
        panels: task -> (H, W, 3) uint8 RGB drawing of the stored image.

    Returns:
        (H', W', 3) uint8 RGB.
    """
    tiles = []
    for name, image in panels.items():
        h, w = image.shape[:2]
        height = max(1, round(h * PANEL_WIDTH / w))
        interpolation = cv2.INTER_AREA if w > PANEL_WIDTH else cv2.INTER_NEAREST
        tile = cv2.resize(image, (PANEL_WIDTH, height), interpolation=interpolation)  # (h', 640, 3)
        band = np.full((28, PANEL_WIDTH, 3), 255, np.uint8)
        cv2.putText(band, name, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([band, tile]))
    if len(tiles) % 2:
        tiles.append(np.full_like(tiles[-1], 255))
    rows = []
    for left, right in zip(tiles[0::2], tiles[1::2]):
        height = max(left.shape[0], right.shape[0])
        pad = [np.vstack([t, np.full((height - t.shape[0], PANEL_WIDTH, 3), 255, np.uint8)]) for t in (left, right)]
        rows.append(np.hstack(pad))
    return np.vstack(rows)
