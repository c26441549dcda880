"""``validate(sample) -> list[str]``: every way a ``Sample`` can break the schema.

A pure function: it never raises for bad data and never changes the sample. An empty list
means the sample is valid. Used by the ingest engine on every converted sample (a problem there
is a converter bug) and by ``mtl-data validate`` on every decoded sample.
"""

from __future__ import annotations

import re

import numpy as np

from mtl_data.schema.geometry import DEPTH_SCALE, MAX_DEPTH_M
from mtl_data.schema.sample import IGNORE_INDEX, MAX_PREV_FRAMES, READABLE_SCHEMA_VERSIONS, Sample

_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")
SPLITS = ("train", "val", "test")


def validate(sample: Sample, num_det_classes: int | None = None) -> list[str]:
    """List the schema violations of ``sample``.

    Args:
        sample: the record to check.
        num_det_classes: size of the detection taxonomy, to range-check class ids; None skips it.
    """
    problems: list[str] = []
    add = problems.append
    if not _KEY_OK.match(sample.key):
        add(f"key {sample.key!r} has characters outside [A-Za-z0-9_-]")
    if sample.split not in SPLITS:
        add(f"split {sample.split!r} is not one of {', '.join(SPLITS)}")
    img = sample.image
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        add(f"image must be (H, W, 3) uint8, got {getattr(img, 'shape', None)} {getattr(img, 'dtype', None)}")
        return problems
    h, w = sample.size
    if len(sample.prev) > MAX_PREV_FRAMES:
        add(f"{len(sample.prev)} previous frames, at most {MAX_PREV_FRAMES}")
    for k, prev in enumerate(sample.prev, start=1):
        if not (isinstance(prev, np.ndarray) and prev.dtype == np.uint8 and prev.shape == img.shape):
            add(
                f"previous frame t-{k} must be {img.shape} uint8 like the image, got "
                f"{getattr(prev, 'shape', None)} {getattr(prev, 'dtype', None)}"
            )
    if sample.K is not None and np.asarray(sample.K).shape != (3, 3):
        add(f"K must be 3x3, got {np.asarray(sample.K).shape}")
    for name in ("seg", "depth"):
        arr = getattr(sample, name)
        if arr is not None and arr.shape != (h, w):
            add(f"{name} is {arr.shape}, image is {(h, w)}")
    if sample.seg is not None and sample.seg.dtype != np.uint8:
        add(f"seg must be uint8, got {sample.seg.dtype}")
    if sample.depth is not None:
        problems += _check_depth(sample.depth)
    if sample.det2d is not None:
        problems += _check_det2d(sample, num_det_classes)
    if sample.det3d is not None:
        problems += _check_det3d(sample, num_det_classes)
    if sample.steer is not None and not np.isfinite(sample.steer.angle_deg):
        add(f"steer angle {sample.steer.angle_deg} is not finite")
    if sample.lane is not None:
        lane = sample.lane
        if lane.mask.shape != (h, w) or lane.mask.dtype != np.uint8:
            add(f"lane mask must be {(h, w)} uint8, got {lane.mask.shape} {lane.mask.dtype}")
        if lane.xs.ndim != 2 or lane.xs.shape[1] != len(lane.h_samples):
            add(f"lane xs {lane.xs.shape} does not match {len(lane.h_samples)} h_samples")
        labels = np.flatnonzero(np.bincount(lane.mask.ravel(), minlength=256))  # ids present, no sort
        if np.any((labels > lane.xs.shape[0]) & (labels != IGNORE_INDEX)):
            add(f"lane mask has ids {labels.tolist()} but only {lane.xs.shape[0]} lanes")
    return problems


def _check_depth(depth: np.ndarray) -> list[str]:
    if depth.dtype != np.float32:
        return [f"depth must be float32 metres, got {depth.dtype}"]
    values = depth[depth != 0]  # sparse: checking the measured pixels is enough (NaN != 0 too)
    problems = []
    if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > MAX_DEPTH_M:
        problems.append(f"depth values must be finite and in [0, {MAX_DEPTH_M:.3f}] m")
    scaled = values * np.float32(DEPTH_SCALE)
    if not np.array_equal(scaled, np.rint(scaled)):
        problems.append("depth is not quantized to 1/256 m (use geometry.quantize_depth)")
    return problems


def _check_boxes(name: str, boxes: np.ndarray, classes: np.ndarray, width: int, num_classes: int | None) -> list[str]:
    problems = []
    if boxes.ndim != 2 or boxes.shape[1] != width:
        return [f"{name} boxes must be (N, {width}), got {boxes.shape}"]
    if classes.shape != (boxes.shape[0],):
        problems.append(f"{name} has {boxes.shape[0]} boxes but {classes.shape} classes")
    if not np.all(np.isfinite(boxes)):
        problems.append(f"{name} boxes are not all finite")
    if num_classes is not None and classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        problems.append(f"{name} class ids {sorted(set(classes.tolist()))} outside 0..{num_classes - 1}")
    return problems


def _check_det2d(sample: Sample, num_classes: int | None) -> list[str]:
    det = sample.det2d
    h, w = sample.size
    problems = _check_boxes("det2d", det.boxes, det.classes, 4, num_classes)
    for name, boxes in (("det2d", det.boxes), ("det2d ignore", det.ignore)):
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.size == 0:
            continue
        if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
            problems.append(f"{name} has a box with x2 < x1 or y2 < y1")
        outside = (boxes[:, 2] < -0.5) | (boxes[:, 0] > w - 0.5) | (boxes[:, 3] < -0.5) | (boxes[:, 1] > h - 0.5)
        if np.any(outside):
            problems.append(f"{name} has {int(outside.sum())} box(es) entirely outside the {w}x{h} image")
    for attr in ("truncated", "occluded", "native_class"):
        values = getattr(det, attr)
        if values is not None and len(values) != det.boxes.shape[0]:
            problems.append(f"det2d {attr} has {len(values)} entries for {det.boxes.shape[0]} boxes")
    return problems


def _check_det3d(sample: Sample, num_classes: int | None) -> list[str]:
    det = sample.det3d
    problems = _check_boxes("det3d", det.boxes, det.classes, 7, num_classes)
    if det.boxes.ndim == 2 and det.boxes.shape[1] == 7 and np.any(det.boxes[:, 3:6] <= 0):
        problems.append("det3d has a box with a non-positive size")
    if det.rotation is not None and det.rotation.shape != (det.boxes.shape[0], 3, 3):
        problems.append(f"det3d rotation must be (N, 3, 3), got {det.rotation.shape}")
    return problems


def validate_meta(meta: dict) -> list[str]:
    """Problems of a decoded ``meta.json`` (its required keys and a readable schema version)."""
    required = ("schema", "source", "split", "id", "sequence", "size", "orig_size", "K", "timestamp_us", "tasks")
    problems = [f"meta.json lacks {k!r}" for k in required if k not in meta]
    # bool is an int to Python: ``true`` must not pass as version 1
    version = meta.get("schema")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        problems.append(f"meta.json schema {version!r}, this tool reads schema versions {readable}")
    return problems
