"""Decode one tar sample into a ``Sample`` with explicit handlers, for the training loader.

A raw sample is what a tar reader yields: ``{"__key__": key, "__url__": shard, ext: bytes, ...}``
(webdataset's layout; ``ext`` is everything after the key's first dot, e.g. ``det2d.json``).

Handlers, member by member (nothing is decoded by guessing from the extension):

==================  ==============================================================================
``jpg``             ``jpeg.decode_jpeg`` to RGB uint8 (OpenCV or simplejpeg, the same pixels);
                    decoded at 1/2, 1/4 or 1/8 size in the DCT domain when the training size is
                    that much smaller (``transforms.reduced_decode_factor``)
``png`` (image)     ``cv2.imdecode`` to RGB uint8
``seg.png``         8-bit single-channel PNG, ``IMREAD_UNCHANGED``: class ids as stored
``lane.png``        8-bit single-channel PNG, ``IMREAD_UNCHANGED``
``depth.pts``       schema 2: the measured pixels (``shards.depthpoints``), kept as points
                    (``Decoded.depth``): the transform scatters them straight to the training
                    size, the full-size map is never built
``depth.png``       schema 1: 16-bit single-channel PNG (stays uint16, never scaled to 8 bits),
                    turned into the same points
``prevK.jpg|png``    the K-th previous frame (``ingest --prev-frames``), decoded only when asked for
                    (``prev_frames``), exactly as the image (the same reduced-decode factor); it
                    must have the image's size
``*.json``, ``cls`` ``json.loads`` / decimal text, through ``shards.codec.decode_sample``
pickle-style       ``pyd``, ``pickle``, ``pkl``, ``pth``, ``pt``: **refused**
other extensions    ignored (a later schema may add members: add keys, never rename)
==================  ==============================================================================

The label PNG headers are checked before decoding (bit depth, one channel, the size in
``meta.json``), so an 8-bit depth map or an RGB class map is a corrupt sample rather than a
silently wrong label.

**Pickle-style members are refused, not skipped**: unpickling (``pickle.loads``,
``torch.load``) runs code chosen by whoever wrote the file, and this project never writes such
members, so a shard holding one was not written by ``mtl-data ingest`` or was tampered with. The
loader stops with ``UnsafeMemberError`` naming the shard and member instead of training on a
silently filtered subset. ``npy`` / ``npz`` are not refused: NumPy reads them without pickle
(``allow_pickle=False``), and this decoder does not read them at all.

**A corrupt sample** (bytes that do not decode, missing members, malformed JSON, a label of the
wrong shape) raises ``CorruptSampleError``; the loader catches it, counts it and goes on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import TASKS, Sample
from mtl_data.shards.codec import IMAGE_FORMATS, DecodeError, decode_image, decode_sample
from mtl_data.shards.depthpoints import DepthPoints, decode_depth_points, depth_points_size
from mtl_data.shards.png import decode_png, png_header
from mtl_data.train.data.jpeg import decode_jpeg
from mtl_data.train.data.transforms import placement, reduced_decode_factor

#: member extensions whose usual decoder unpickles (webdataset: pickle.loads / torch.load).
PICKLE_EXTENSIONS = frozenset({"pyd", "pickle", "pkl", "pth", "pt"})

#: label PNGs: extension -> (bit depth, what it holds), all single-channel (PNG colour type 0).
LABEL_PNGS = {"seg.png": (8, "class ids"), "lane.png": (8, "lane ids"), "depth.png": (16, "depth")}

_PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
# The errors decode_sample raises on bad content: its own, and what malformed JSON values give.
_CONTENT_ERRORS = (DecodeError, KeyError, ValueError, TypeError, IndexError)


class UnsafeMemberError(MtlDataError):
    """A sample holds a pickle-style member (see the module docstring); never decoded.

    Built with ``unsafe_member(shard, key, ext)``; the message alone also constructs it, which
    lets torch re-raise it with its own type when it happens in a DataLoader worker.
    """

    def __init__(self, message: str, shard: str = "", key: str = "", ext: str = ""):
        super().__init__(message)
        self.shard, self.key, self.ext = shard, key, ext

    def __reduce__(self):  # keep the fields when a worker process sends the error back
        return (type(self), (str(self), self.shard, self.key, self.ext))


def unsafe_member(shard: str, key: str, ext: str) -> UnsafeMemberError:
    """The ``UnsafeMemberError`` for member ``key.ext`` of ``shard``."""
    return UnsafeMemberError(
        f"{shard}: {key}.{ext}: refusing a pickle-style member (.{ext.rsplit('.', 1)[-1]}): unpickling runs "
        "code from the file, and mtl-data never writes one; re-create the shard with `mtl-data ingest`",
        shard,
        key,
        ext,
    )


class CorruptSampleError(MtlDataError):
    """One sample cannot be read or decoded; the loader skips it and counts it."""

    def __init__(self, message: str, shard: str = "", key: str = ""):
        super().__init__(message)
        self.shard, self.key = shard, key

    def __reduce__(self):
        return (type(self), (str(self), self.shard, self.key))


@dataclass(frozen=True)
class Decoded:
    """A decoded sample and, when the JPEG was decoded at reduced size, that image.

    Attributes:
        sample: labels in pixels of the stored size. ``sample.image`` is the full image, or,
            when ``image`` is set, a zero-copy placeholder of the stored shape (read its shape,
            never its pixels). ``sample.depth``, when ``depth`` is set, is such a placeholder
            too: it says that the sample has depth and of which size.
        image: (ceil(h / f), ceil(w / f), 3) uint8 RGB decoded at 1/f of the stored size, or None.
        depth: the sample's depth measurements as points, or None (no depth, or not loaded).
            Pass both on as ``transform_sample(..., image=decoded.image, depth=decoded.depth)``.
        prev: the previous frames asked for that the sample has, t-1 first (members ``prev1``,
            ``prev2``, ...), each (h, w, 3) uint8 RGB of the shape the image was decoded at
            (``image``'s when set, else the stored size).
    """

    sample: Sample
    image: np.ndarray | None = None
    depth: DepthPoints | None = None
    prev: tuple[np.ndarray, ...] = ()


def refuse_unsafe(raw: Mapping[str, object]) -> None:
    """Raise ``UnsafeMemberError`` if any member of ``raw`` has a pickle-style extension."""
    for ext in raw:
        if not ext.startswith("__") and ext.rsplit(".", 1)[-1].lower() in PICKLE_EXTENSIONS:
            raise unsafe_member(str(raw.get("__url__", "?")), str(raw.get("__key__", "?")), ext)


def task_of(ext: str) -> str | None:
    """The task a member belongs to (``lane.json`` -> ``lane``), or None (image, meta, unknown)."""
    head = ext.partition(".")[0]
    return head if head in TASKS else None


def decode(
    raw: Mapping[str, object],
    tasks: Collection[str] | None = None,
    target_hw: tuple[int, int] | None = None,
    letterbox: bool = False,
    jpeg_decoder: str = "auto",
    prev_frames: int = 0,
) -> Decoded:
    """Decode a raw tar sample with the handlers of the module docstring.

    Args:
        raw: ``{"__key__", "__url__", ext: bytes}``.
        tasks: decode only the labels of these tasks (the others are dropped unread, as if the
            sample did not have them); None = every label present.
        target_hw: the (H, W) the sample will be transformed to; when given, a JPEG at least twice
            as large on both sides (of the letterbox content, with ``letterbox``) is decoded at
            reduced size (``Decoded.image``). None = always full size.
        letterbox: whether the transform letterboxes (decides the content size above).
        jpeg_decoder: the ``jpeg`` backend of ``jpg`` members (``auto``, ``opencv``,
            ``simplejpeg``): the same pixels whichever decodes them.
        prev_frames: decode up to this many previous frames (``Decoded.prev``); the members
            are consecutive from ``prev1``, so decoding stops at the first one missing.

    Returns:
        The ``Decoded`` sample.

    Raises:
        UnsafeMemberError: a pickle-style member (checked before anything is decoded).
        CorruptSampleError: anything about the sample's content that does not decode or check.
    """
    refuse_unsafe(raw)
    key, shard = str(raw.get("__key__", "?")), str(raw.get("__url__", "?"))
    members = {ext: data for ext, data in raw.items() if not ext.startswith("__")}
    try:
        decoded = _decode(key, members, tasks, target_hw, letterbox, jpeg_decoder)
        if prev_frames:
            decoded = _with_prev(decoded, members, prev_frames, target_hw, letterbox, jpeg_decoder)
        return decoded
    except _CONTENT_ERRORS as exc:
        raise CorruptSampleError(f"{shard}: {key}: does not decode: {exc}", shard, key) from None


def _decode(
    key: str,
    members: dict[str, bytes],
    tasks: Collection[str] | None,
    target_hw: tuple[int, int] | None,
    letterbox: bool,
    jpeg_decoder: str,
) -> Decoded:
    if "meta.json" not in members:
        raise DecodeError("no meta.json member")
    meta = json.loads(members["meta.json"])
    if not isinstance(meta, dict):
        raise DecodeError("meta.json is not a JSON object")
    size = (int(meta["size"][0]), int(meta["size"][1]))
    for ext in LABEL_PNGS.keys() & members.keys():
        if tasks is None or task_of(ext) in tasks:  # unwanted labels are never read
            _check_label_png(ext, members[ext], size)
    points = None
    if tasks is None or "depth" in tasks:
        points = _depth_points(members, size)
        if points is not None:  # decode_sample leaves depth to us (a placeholder goes back in)
            members = {ext: data for ext, data in members.items() if task_of(ext) != "depth"}
            tasks = [t for t in (meta.get("tasks", ()) if tasks is None else tasks) if t != "depth"]

    factor = 1
    if target_hw is not None and "jpg" in members:
        factor = reduced_decode_factor(size, placement(size, tuple(target_hw), letterbox).content_size)
    if factor == 1:
        image = None
        if "jpg" in members:
            image = decode_jpeg(members["jpg"], 1, jpeg_decoder)  # (h, w, 3) RGB
            if image is None:
                raise DecodeError("jpg: image does not decode")
        sample = decode_sample(key, members, tasks=tasks, image=image)
        if sample.size != size:
            raise DecodeError(f"image is {sample.size[0]}x{sample.size[1]}, meta.json says {size[0]}x{size[1]}")
        return _with_points(Decoded(sample), points)
    reduced = decode_jpeg(members["jpg"], factor, jpeg_decoder)  # (h/f, w/f, 3) RGB
    expected = (math.ceil(size[0] / factor), math.ceil(size[1] / factor))
    if reduced is None or reduced.shape[:2] != expected:
        got = "nothing" if reduced is None else f"{reduced.shape[0]}x{reduced.shape[1]}"
        raise DecodeError(
            f"jpg: decoded at 1/{factor} to {got}, expected {expected[0]}x{expected[1]} "
            f"(meta.json size {size[0]}x{size[1]})"
        )
    placeholder = np.broadcast_to(np.uint8(0), (*size, 3))  # (h, w, 3) of the stored size, no memory
    return _with_points(Decoded(decode_sample(key, members, tasks=tasks, image=placeholder), reduced), points)


def _with_prev(
    decoded: Decoded,
    members: dict[str, bytes],
    count: int,
    target_hw: tuple[int, int] | None,
    letterbox: bool,
    jpeg_decoder: str,
) -> Decoded:
    """``decoded`` with up to ``count`` previous frames, decoded as its image was: at the same
    reduced-decode factor (so the transform maps them with the image's placement) and checked
    to have the image's decoded shape."""
    if not any(f"prev1.{e}" in members for e in IMAGE_FORMATS):
        return decoded  # no previous frame (A2D2, GTSRB, the start of a sequence)
    size = decoded.sample.size
    shape = (decoded.image if decoded.image is not None else decoded.sample.image).shape[:2]
    # the image's reduced-decode factor, once for every previous frame
    factor = 1 if target_hw is None else reduced_decode_factor(size, placement(size, target_hw, letterbox).content_size)
    frames = []
    for k in range(1, count + 1):
        ext = next((f"prev{k}.{e}" for e in IMAGE_FORMATS if f"prev{k}.{e}" in members), None)
        if ext is None:
            break  # ingest writes them consecutively: no t-k, no t-k-1
        data = members[ext]
        if ext.endswith(".jpg"):
            frame = decode_jpeg(data, factor, jpeg_decoder)
        else:
            frame = decode_image(data)
        if frame is None:
            raise DecodeError(f"{ext}: image does not decode")
        if frame.shape[:2] != shape:
            raise DecodeError(
                f"{ext}: decoded to {frame.shape[0]}x{frame.shape[1]}, the image to {shape[0]}x{shape[1]}"
            )
        frames.append(frame)
    return dataclasses.replace(decoded, prev=tuple(frames))


def _depth_points(members: dict[str, bytes], size: tuple[int, int]) -> DepthPoints | None:
    """The depth member as points (``depth.pts``, or a schema-1 ``depth.png``), None without one."""
    if "depth.pts" in members:
        if "depth.png" in members:
            raise DecodeError("holds both depth.pts and depth.png; a sample has one depth member")
        data = members["depth.pts"]
        if depth_points_size(data) != size:
            h, w = depth_points_size(data)
            raise DecodeError(f"depth.pts: is {h}x{w}, the image is {size[0]}x{size[1]}")
        return decode_depth_points(data)
    if "depth.png" in members:  # schema 1; its header was checked with the other label PNGs
        depth = decode_png(members["depth.png"])
        if depth is None:
            raise DecodeError("depth.png: does not decode as PNG")
        return DepthPoints.from_map(depth)
    return None


def _with_points(decoded: Decoded, points: DepthPoints | None) -> Decoded:
    """``decoded`` with the depth points and a placeholder ``sample.depth`` of the stored size."""
    if points is None:
        return decoded
    placeholder = np.broadcast_to(np.float32(0), points.size)  # (h, w), no memory
    sample = dataclasses.replace(decoded.sample, depth=placeholder)
    return dataclasses.replace(decoded, sample=sample, depth=points)


def _check_label_png(ext: str, data: bytes, size: tuple[int, int]) -> None:
    """A label PNG must be single-channel at its bit depth and of the stored image size."""
    bits, what = LABEL_PNGS[ext]
    try:
        h, w, bit_depth, colour_type = png_header(data)
    except ValueError:
        raise DecodeError(f"{ext}: not a PNG") from None
    if colour_type != 0 or bit_depth != bits:
        kind = _PNG_COLOUR_TYPES.get(colour_type, f"colour type {colour_type}")
        raise DecodeError(f"{ext}: expected a single-channel {bits}-bit PNG of {what}, found {bit_depth}-bit {kind}")
    if (h, w) != size:
        raise DecodeError(f"{ext}: is {h}x{w}, the image is {size[0]}x{size[1]}")
