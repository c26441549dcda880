"""The sparse depth member ``depth.pts`` (schema 2): the measured pixels themselves, not a picture.

A LiDAR or velodyne depth map holds 8-20 thousand measurements in a 0.5-2.3 megapixel frame.
Stored as a 16-bit PNG (schema 1, ``depth.png``) every reader inflates the whole frame
(4.6 MB for an A2D2 frame) and then searches it for the few non-zero pixels; stored as points
it decodes at the cost of its points and scatters straight to a training size
(``schema.placement.place_depth_points``). It is lossless against ``depth.png``: the same
pixels, the same uint16 values, and 35-40 % smaller on the real KITTI and A2D2 frames
(BENCHMARKS.md, "Loader").

Layout (every integer little-endian)::

    offset  size  content
    0       4     magic b"DPT1"
    4       4     height (uint32), the stored image's
    8       4     width (uint32)
    12      4     n, measured pixels (uint32)
    16      ...   one zlib stream of 6 n bytes:
                    4 n: the index deltas as uint32, byte-planar (the n lowest bytes, then
                         the n second bytes, ...); delta[0] = index[0],
                         delta[i] = index[i] - index[i - 1] > 0
                    2 n: the values as uint16, byte-planar likewise

``index`` is the row-major flat pixel index ``row * width + col``, strictly increasing; the
value is ``round(metres * 256)`` as in ``depth.png`` (0 never appears: no measurement is no
point). Byte planes put the nearly always zero high bytes of the deltas together, which zlib
then stores in a few bytes: 20 % smaller than interleaved. Read it with numpy::

    import zlib, numpy as np
    h, w, n = (int(v) for v in np.frombuffer(data, "<u4", 3, offset=4))
    raw = np.frombuffer(zlib.decompress(data[16:]), np.uint8)
    index = np.cumsum(raw[: 4 * n].reshape(4, n).T.copy().view("<u4").ravel(), dtype=np.int64)
    value = raw[4 * n :].reshape(2, n).T.copy().view("<u2").ravel()
    depth = np.zeros(h * w, np.uint16); depth[index] = value; depth = depth.reshape(h, w)  # metres = depth / 256

The stream is written with the standard ``zlib`` at level 1 (the same bytes for the same map,
so shards stay reproducible) and read with zlib-ng where installed (same output, ~2x faster).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

try:  # zlib-ng is a dependency; stock zlib inflates the same streams, only slower
    from zlib_ng import zlib_ng as _inflater
except ImportError:  # pragma: no cover - exercised only where zlib-ng is not installed
    _inflater = zlib

MAGIC = b"DPT1"
EXTENSION = "depth.pts"
_HEADER = struct.Struct("<4sIII")
#: zlib level of the stream. Level 6 makes a KITTI member 7 % and an A2D2 one 4 % smaller but
#: costs 2.2-2.5x the encode time (3.6 vs 1.4 ms for KITTI), and 4.5x on a dense stereo map
#: (217 vs 48 ms for a Cityscapes-size frame with a million points: more than its 16-bit PNG's
#: 58 ms); inflating is as fast either way.
ZLIB_LEVEL = 1


@dataclass(frozen=True)
class DepthPoints:
    """The measured pixels of a sparse depth map.

    Attributes:
        size: (height, width) of the map (the stored image's).
        index: (n,) int64 row-major flat pixel indices, strictly increasing.
        value: (n,) uint16 ``round(metres * 256)``, all > 0.
    """

    size: tuple[int, int]
    index: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    @classmethod
    def from_map(cls, depth: np.ndarray) -> DepthPoints:
        """The points of an (H, W) uint16 map (0 = no measurement)."""
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise ValueError(f"expected an (H, W) uint16 depth map, got {depth.dtype} {depth.shape}")
        flat = depth.ravel()
        index = np.flatnonzero(flat != 0)  # (n,) int64, increasing; 4x faster than on uint16 itself
        return cls((int(depth.shape[0]), int(depth.shape[1])), index, flat[index])

    def to_map(self) -> np.ndarray:
        """The (H, W) uint16 map (0 where there is no point)."""
        out = np.zeros(self.size[0] * self.size[1], np.uint16)
        out[self.index] = self.value
        return out.reshape(self.size)


def _planes(values: np.ndarray, dtype: str) -> bytes:
    """Little-endian ``values`` as byte planes (all lowest bytes first)."""
    raw = np.ascontiguousarray(values, dtype=dtype).view(np.uint8)  # (n * itemsize,)
    return np.ascontiguousarray(raw.reshape(-1, np.dtype(dtype).itemsize).T).tobytes()


def _unplane(raw: np.ndarray, n: int, dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    out = np.empty((n, size), np.uint8)
    for i, plane in enumerate(raw.reshape(size, n)):  # a column at a time: 4x faster than .T.copy()
        out[:, i] = plane
    return out.view(dtype).ravel()  # (n,)


def encode_depth_points(depth: np.ndarray) -> bytes:
    """``depth.pts`` bytes of an (H, W) uint16 map in ``round(metres * 256)``, 0 = none."""
    points = DepthPoints.from_map(depth)
    delta = np.diff(points.index, prepend=0)  # (n,) > 0; delta[0] = index[0]
    h, w = points.size
    payload = _planes(delta, "<u4") + _planes(points.value, "<u2")
    return _HEADER.pack(MAGIC, h, w, len(points)) + zlib.compress(payload, ZLIB_LEVEL)


def depth_points_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a ``depth.pts`` header, without inflating.

    Raises:
        ValueError: not a ``depth.pts`` member.
    """
    return _header(data)[:2]


def _header(data: bytes) -> tuple[int, int, int]:
    if len(data) < _HEADER.size:
        raise ValueError(f"depth.pts: {len(data)} bytes, shorter than its {_HEADER.size}-byte header")
    magic, h, w, n = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"depth.pts: starts with {magic!r}, expected {MAGIC!r}")
    if n > h * w:
        raise ValueError(f"depth.pts: {n} points in a {h}x{w} map")
    return h, w, n


def decode_depth_points(data: bytes) -> DepthPoints:
    """The points of ``depth.pts`` bytes (checked: sizes, increasing in-range indices, values > 0).

    Raises:
        ValueError: the bytes are not a well-formed ``depth.pts`` member.
    """
    h, w, n = _header(data)
    try:
        raw = np.frombuffer(_inflater.decompress(data[_HEADER.size :]), np.uint8)
    except (zlib.error, _inflater.error) as exc:
        raise ValueError(f"depth.pts: the point stream does not inflate ({exc})") from None
    if raw.size != 6 * n:
        raise ValueError(f"depth.pts: the stream holds {raw.size} bytes, {n} points need {6 * n}")
    delta = _unplane(raw[: 4 * n], n, "<u4")
    value = _unplane(raw[4 * n :], n, "<u2")
    index = np.cumsum(delta, dtype=np.int64)  # (n,) flat indices
    # Deltas > 0 make the indices strictly increasing (unique pixels); the last must be inside.
    if n and (delta[1:].min(initial=1) == 0 or index[-1] >= h * w or value.min() == 0):
        raise ValueError(f"depth.pts: indices not strictly increasing inside {h}x{w}, or a zero value")
    return DepthPoints((h, w), index, value)
