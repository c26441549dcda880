"""Decoder handlers for plain ``webdataset``: the label maps as stored, depth as a uint16 map.

webdataset's stock image decoders (``.decode("l8")``, ``"rgb8"``, ``"pil"``, ``"l"``,
``"torch"`` ...) open every ``*.png`` with Pillow and ``convert`` it to ``L`` / ``RGB``: a
16-bit ``depth.png`` (schema 1's depth member) is clipped to 255, so every measurement beyond
255 / 256 m (about 1 m, i.e. nearly all of them) becomes 255 and the depth map is reduced to a
validity mask (the float specs give 1.0). Without an image spec, ``.decode()`` leaves PNGs as
bytes. The handlers here decode ``seg.png``, ``lane.png`` (uint8) with the project's own PNG
decoder (``shards.png.decode_png``, the codec's) and the depth member to the (H, W) uint16 map
``round(metres * 256)``, 0 = no measurement: ``depth.pts`` (schema 2, what ``mtl-data ingest``
writes; webdataset has no handler for it and leaves its bytes) with ``shards.depthpoints``,
``depth.png`` (schema 1 shards) with the PNG decoder. Both are bit for bit what
``codec.decode_sample`` reads; the image is left to the caller::

    import webdataset as wds
    from mtl_data.readers.webdataset import decoders

    ds = wds.WebDataset(urls, shardshuffle=False).decode(*decoders(image="numpy"))
    # sample["depth.pts"]: (H, W) uint16; metres = sample["depth.pts"] / 256, 0 = no measurement
    # (a schema 1 shard: sample["depth.png"], the same map)

``meta.json``, ``det2d.json`` ... and ``sign.cls`` are decoded by webdataset's default
handlers (JSON -> dict, ``cls`` -> int). webdataset cuts member names at the first dot, so the
label maps arrive as ``seg.png``, ``depth.pts`` (or ``depth.png``), ``lane.png`` and the image
as ``jpg`` (or ``png`` with ``--image-format png``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mtl_data.shards.codec import IMAGE_FORMATS, DecodeError, decode_image
from mtl_data.shards.depthpoints import EXTENSION as DEPTH_POINTS
from mtl_data.shards.depthpoints import decode_depth_points
from mtl_data.shards.png import decode_png

#: the label maps and their stored dtype (design.md section 3): 2-D, single channel.
#: ``depth.png`` is schema 1's depth member (``depth.pts`` since schema 2).
LABEL_PNGS: dict[str, np.dtype] = {
    "seg.png": np.dtype(np.uint8),
    "lane.png": np.dtype(np.uint8),
    "depth.png": np.dtype(np.uint16),
}


def _extension(key: str) -> str:
    """webdataset passes handlers ``"." + member extension`` (``".depth.png"``)."""
    return key.lstrip(".").lower()


def decode_label_png(key: str, data: bytes) -> np.ndarray | None:
    """webdataset handler: ``seg.png`` / ``lane.png`` -> (H, W) uint8, ``depth.png`` -> (H, W)
    uint16, exactly as stored; None (not mine) for every other member.

    Raises:
        DecodeError: the member does not decode, or is not a single-channel map of its dtype.
    """
    ext = _extension(key)
    dtype = LABEL_PNGS.get(ext)
    if dtype is None:
        return None
    array = decode_png(data)
    if array is None:
        raise DecodeError(f"{ext}: does not decode as PNG")
    if array.ndim != 2 or array.dtype != dtype:
        raise DecodeError(f"{ext}: {array.dtype} {array.shape}, expected a single-channel {dtype} map")
    return array


def decode_depth_member(key: str, data: bytes) -> np.ndarray | None:
    """webdataset handler: ``depth.pts`` -> the (H, W) uint16 map ``round(metres * 256)``, 0 = no
    measurement; None (not mine) for every other member.

    Raises:
        DecodeError: the member is not well-formed ``depth.pts`` (the message says how).
    """
    if _extension(key) != DEPTH_POINTS:
        return None
    try:
        return decode_depth_points(data).to_map()
    except ValueError as exc:  # its messages start with the member's name
        raise DecodeError(str(exc)) from None


class ImageMemberHandler:
    """webdataset handler for the sample image only (member ``jpg`` or ``png``, never a label PNG).

    Args:
        spec: ``"numpy"``: the codec's decode, (H, W, 3) uint8 RGB (OpenCV), as the project reads
            it; any other string is a webdataset image spec (``"rgb8"``, ``"pil"``, ``"torchrgb"``
            ...) handed to ``webdataset.autodecode.ImageHandler``.
    """

    def __init__(self, spec: str):
        self.spec = spec
        self._stock = None
        if spec != "numpy":
            from webdataset.autodecode import ImageHandler  # lazy: webdataset imports torch when present

            self._stock = ImageHandler(spec, extensions=list(IMAGE_FORMATS))

    def __call__(self, key: str, data: bytes) -> Any:
        ext = _extension(key)
        if ext not in IMAGE_FORMATS:
            return None
        if self._stock is not None:
            return self._stock(key, data)
        image = decode_image(data)
        if image is None:
            raise DecodeError(f"{ext}: image does not decode")
        return image


def decoders(image: str | None = None) -> list[Callable[[str, bytes], Any]]:
    """Handlers for ``webdataset.WebDataset(urls).decode(*decoders(...))``.

    Put them before any image spec of your own (``.decode(*decoders(), "rgb8")``): webdataset
    tries handlers in order, and a stock image spec would otherwise take the label PNGs
    (and a schema 1 ``depth.png``) too.

    Args:
        image: how to decode the image member: None = leave its bytes (or to a handler or spec
            passed after these), ``"numpy"`` = (H, W, 3) uint8 RGB with the project's codec, or a
            webdataset image spec (``"rgb8"``, ``"pil"``, ``"torchrgb"`` ...).
    """
    handlers: list[Callable[[str, bytes], Any]] = [decode_label_png, decode_depth_member]
    if image is not None:
        handlers.append(ImageMemberHandler(image))
    return handlers
