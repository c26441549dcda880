"""Predictions over a video, frame after frame: ``mtl-train predict RUN --video DIR_OR_FILE``.

Frames come from a folder of images (``IMAGE_SUFFIXES``, sorted by file name: name them so that
this is their order, e.g. zero-padded numbers) or a video file (``cv2.VideoCapture``: whatever
codecs the OpenCV build has). Each frame is brought to the run's evaluation input exactly as
the loader brings a stored sample (``transforms.transform_view`` without augmentation: the
run's image size, letterboxed or stretched; ``targets.encode_example`` + ``collate``:
normalised, with the view fields decoding reads), and run through a ``FrameStream``: a
multi-frame run caches the previous frames' encoder maps, so each frame costs one encoder pass
(+ fusion, neck and heads); the first frame has no previous one and stands in for it, as in
training. A single-frame run predicts every frame on its own.

The frames are written by ``predict.write_batches``, as ``mtl-train predict`` writes a split:
each frame is a sample ``video_frames_<id>`` (source ``video``, split ``frames``; ``<id>`` the
file's stem or the frame's index, 6 digits) without labels, at its own size, so the
predictions folder holds ``seg/<key>.png``, ``depth/<key>.png``, ``lane.json``,
``steer.csv``, ``sign.csv``, ``det3d/video/frames/<id>_pred.json`` (empty: a video has no
camera intrinsics, so no 3D box can be placed) and, with overlays, ``overlays/<key>.png``.
2D detections appear in the overlays only: the COCO files hold labelled images alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import Sample, make_key
from mtl_data.train.data.targets import TargetConfig, collate, encode_example
from mtl_data.train.data.transforms import TransformConfig, transform_view
from mtl_data.train.models import MultiTaskModel
from mtl_data.train.models.multiframe import FrameStream
from mtl_data.train.predict import write_batches

#: image files a frames folder may hold (other files are ignored)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
#: source and split of the frames' keys (``video_frames_<id>``)
SOURCE, SPLIT = "video", "frames"


def read_frames(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, (H, W, 3) uint8 RGB)`` per frame of a folder of images or a video file, in order.

    The path is checked here, before the first frame is asked for (so before anything is
    written); a frame that cannot be decoded raises when it is reached.

    Raises:
        MtlDataError: no such path, a folder without images or with two images of one stem, an
            image or a video OpenCV cannot read (named).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MtlDataError(f"{path}: no frames in it (images {', '.join(IMAGE_SUFFIXES)}, sorted by name)")
        seen: dict[str, Path] = {}
        for file in files:  # a frame's key is its stem: two files of one stem would be one frame
            key = make_key(SOURCE, SPLIT, file.stem)
            if key in seen:
                raise MtlDataError(f"{file} and {seen[key]} name the same frame ({key}); rename one")
            seen[key] = file
        return _image_frames(files)
    if not path.is_file():
        raise MtlDataError(f"{path}: no such folder of frames or video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise MtlDataError(f"{path}: not a video OpenCV can open (pass a video file or a folder of images)")
    return _video_frames(capture, path)


def _image_frames(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    for file in files:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MtlDataError(f"{file}: not an image OpenCV can read; remove it from the frames folder")
        yield file.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _video_frames(capture: cv2.VideoCapture, path: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield f"{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise MtlDataError(f"{path}: OpenCV read no frame from this video")
    finally:
        capture.release()


def frame_batch(key: str, image: np.ndarray, image_size: tuple[int, int], letterbox: bool) -> tuple[dict, Sample]:
    """One frame as a batch of one, as the evaluation loader gives a stored sample, and the frame
    as an unlabelled ``Sample`` (what the writers and the overlays read)."""
    h, w = image.shape[:2]
    sample = Sample(key=key, source=SOURCE, split=SPLIT, id=key, image=image, orig_size=(h, w))
    transform = TransformConfig(image_size=image_size, letterbox=letterbox, augment=False)
    placed, view = transform_view(sample, transform, np.random.default_rng(0))  # no draw without augment
    # no task fields: a frame has no labels; decoding reads only the image and view fields
    example = encode_example(placed, TargetConfig(tasks=(), image_size=image_size), view)
    return collate([example]), sample


def write_video_predictions(
    model: MultiTaskModel,
    frames: Iterator[tuple[str, np.ndarray]],
    out_dir: str | Path,
    *,
    image_size: tuple[int, int],
    letterbox: bool,
    overlays: bool = True,
    overwrite: bool = False,
) -> dict[str, int]:
    """Stream ``frames`` through ``model`` and write every task's predictions (module docstring).

    Args:
        model: a run's model (single- or multi-frame), on its device; put in eval mode here.
        frames: ``(id, RGB image)`` in order (``read_frames``).
        out_dir: the predictions folder to create.
        image_size: (H, W) of the network's input (the run's evaluation size).
        letterbox: letterbox (else stretch) as the run's loader does.
        overlays: also draw ``overlays/<key>.png``.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``{task: frames written}``.
    """
    model.eval()
    device = next(model.parameters()).device
    stream = FrameStream(model)
    tasks = dict(model.tasks)

    def predicted() -> Iterator[tuple[dict, dict, dict[str, Sample]]]:
        for frame_id, image in frames:
            key = make_key(SOURCE, SPLIT, frame_id)
            batch, sample = frame_batch(key, image, image_size, letterbox)
            outputs = stream(batch["image"].to(device))
            yield outputs, batch, {key: sample}

    with torch.inference_mode():
        return write_batches(tasks, list(tasks), predicted(), out_dir, overwrite=overwrite, overlays=overlays)
