"""Fast decoding of the label PNGs this project writes, with OpenCV for every other PNG.

The label maps (``seg.png``, ``lane.png``: 8-bit grey; schema 1's ``depth.png``: 16-bit grey;
schema 2 stores depth as ``depth.pts``, ``shards.depthpoints``) are written with no PNG row
filter (``codec.LABEL_PNG_PARAMS``), so decoding one is an inflate and a reshape. libpng
inflates with stock zlib, which is most of its time: 2.3 ms for a KITTI depth map, 4.6 ms for an
A2D2 seg map; zlib-ng inflates the same streams in 0.3 ms (measured in BENCHMARKS.md, "Loader").
Anything outside that subset (another colour type or bit depth, interlacing, a row with a
filter, a PNG written by another tool) goes to ``cv2.imdecode``, so every valid PNG still
decodes, to the same array.

PNG layout used here (ISO/IEC 15948): an 8-byte signature, then chunks of
``length (4, big-endian) | type (4) | data | CRC (4)``; IHDR holds width, height, bit depth,
colour type, compression, filter method and interlace; the IDAT data concatenated is one zlib
stream of ``height`` rows, each a filter-type byte and ``width * bytes per pixel`` bytes,
16-bit samples big-endian. The zlib stream's Adler-32 checksum is verified by the inflate; the
chunk CRCs are not (libpng does not check IDAT CRCs by default either).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

try:  # zlib-ng is a dependency; stock zlib gives the same bytes, only slower
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - exercised only where zlib-ng is not installed
    import zlib as _zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY = 0
_CHUNK = struct.Struct(">I4s")


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(height, width, bit depth, PNG colour type) from a PNG's IHDR chunk, without decoding.

    Raises:
        ValueError: not a PNG.
    """
    ihdr = _ihdr(data)
    if ihdr is None:
        raise ValueError("not a PNG")
    width, height, bit_depth, colour = ihdr[:4]
    return height, width, bit_depth, colour


def _ihdr(data: bytes) -> tuple[int, ...] | None:
    """IHDR's (width, height, bit depth, colour type, compression, filter, interlace); None if not a PNG."""
    if len(data) < 29 or data[:8] != SIGNATURE or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">IIBBBBB", data[16:29])


def decode_png(data: bytes) -> np.ndarray | None:
    """Decode PNG bytes as ``cv2.imdecode(..., IMREAD_UNCHANGED)`` does; None if they do not decode.

    Unfiltered, non-interlaced 8- or 16-bit grey PNGs (this project's label maps) are decoded
    here: (H, W) uint8 or uint16. Everything else is handed to OpenCV (colour comes back BGR,
    as OpenCV returns it).
    """
    pixels = _unfiltered_grey(data)
    if pixels is None:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return pixels.astype(pixels.dtype.newbyteorder("="))  # (H, W) native uint8 / uint16, owned


def _unfiltered_grey(data: bytes) -> np.ndarray | None:
    """The fast path: an (H, W) view of the samples (16-bit big-endian), or None whenever the PNG
    is outside the fast path or anything looks wrong (OpenCV then decides)."""
    ihdr = _ihdr(data)
    if ihdr is None:
        return None
    width, height, bit_depth, colour, compression, filter_method, interlace = ihdr
    if colour != _GREY or bit_depth not in (8, 16) or compression or filter_method or interlace:
        return None
    idat, pos, end = [], 8, len(data)
    while pos + 12 <= end:
        length, kind = _CHUNK.unpack_from(data, pos)
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        return None  # no IEND: truncated
    row = 1 + width * (bit_depth // 8)
    try:
        raw = _zlib.decompress(b"".join(idat))
    except _zlib.error:
        return None
    if len(raw) != height * row:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, row)  # (H, 1 + W * bytes) filter byte first
    if rows[:, 0].any():
        return None  # a filtered row: libpng undoes the filters
    return rows[:, 1:].view(">u2" if bit_depth == 16 else np.uint8)  # (H, W) view into ``raw``
