"""Reading one native file, with the failure turned into an ``InputError`` naming that file.

Every converter reads images, text and JSON this way, so a missing, unreadable or corrupt file
is always one clear line (and a reject under ``--on-error skip``), never a traceback. Callers
pass their own wording for the messages: what the file is and what its absence means.
"""

from __future__ import annotations

import io
import json
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mtl_data.errors import InputError
from mtl_data.shards.codec import decode_image
from mtl_data.shards.png import SIGNATURE as PNG_SIGNATURE

#: what an image file of each suffix should be, for the messages
_IMAGE_KINDS = {".png": "a PNG image", ".jpg": "a JPEG image", ".jpeg": "a JPEG image", ".ppm": "a PPM image"}
#: what np.load and reading an array of an npz archive raise on a corrupt or truncated file (an
#: array's header is parsed as a Python literal: TokenError, SyntaxError; a header can claim a
#: shape of terabytes: MemoryError)
NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    KeyError,
    tokenize.TokenError,
    SyntaxError,
    MemoryError,
)
_CHUNK = struct.Struct(">I4s")


def read_file(path: Path, missing: str) -> bytes:
    """The bytes of ``path``; ``missing`` is the message when it does not exist (or is a folder)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except IsADirectoryError:
        raise InputError(path, f"{missing} (a folder is in its place)", hint="remove or rename the folder") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the file: {exc.strerror}") from None


def decode_or_raise(data: bytes, path: Path, undecodable: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of encoded image bytes; ``undecodable`` is the message when they do not decode."""
    return _decode(decode_image, data, path, undecodable)


def read_image(path: Path, missing: str, undecodable: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (PNG, JPEG, PPM)."""
    return decode_or_raise(read_file(path, missing), path, undecodable)


def read_image_as_stored(path: Path, missing: str, undecodable: str) -> np.ndarray:
    """The values of an image file as stored: 8- or 16-bit, (H, W) grey or (H, W, C) in OpenCV's
    channel order (a 16-bit disparity PNG, a label-id PNG)."""
    return _decode(_decode_unchanged, read_file(path, missing), path, undecodable)


def _decode_unchanged(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


def _decode(decode: Callable[[bytes], np.ndarray | None], data: bytes, path: Path, undecodable: str) -> np.ndarray:
    """``decode(data)``, or an InputError naming ``path``: what is wrong and what was expected.

    An empty or truncated file is found before decoding, with a precise message; OpenCV's own
    log lines about bytes it cannot read are silenced (the InputError is the one line shown).
    """
    expected = _IMAGE_KINDS.get(Path(path).suffix.lower(), "an image")
    if not data:
        raise InputError(path, f"empty file (0 bytes), expected {expected}", hint="re-extract or re-download it")
    problem = png_problem(data) if data.startswith(PNG_SIGNATURE) else None
    if problem:
        raise InputError(path, f"{undecodable}: {problem}", hint="re-extract or re-download it")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        image = decode(data)
    except cv2.error as exc:  # OpenCV asserts on some malformed headers instead of returning None
        raise InputError(path, f"{undecodable}: {' '.join(str(exc).split())}") from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if image is None:
        raise InputError(path, undecodable)
    return image


def png_problem(data: bytes) -> str | None:
    """Why PNG bytes are cut short or malformed as a chunk sequence, or None when every chunk up to
    ``IEND`` is whole (ISO/IEC 15948: an 8-byte signature, then ``length | type | data | CRC``).

    Checking the chunks first names a truncated file as such, and keeps libpng from printing its
    own error line on stderr.
    """
    pos, end = len(PNG_SIGNATURE), len(data)
    while pos + _CHUNK.size <= end:
        length, kind = _CHUNK.unpack_from(data, pos)
        if not kind.isalpha():
            return f"corrupt PNG: no chunk type at byte {pos} ({kind!r})"
        if pos + 12 + length > end:
            return f"truncated PNG: its {kind.decode()} chunk needs {pos + 12 + length} bytes, the file has {end}"
        if kind == b"IEND":
            return None
        pos += 12 + length
    return f"truncated PNG: the file ends after {end} bytes, before the IEND chunk"


def read_npz(path: Path, missing: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, by name.

    Raises:
        InputError: the file is missing, empty, not an npz archive (truncated, a single ``.npy``,
            a pickle) or one of its arrays does not read; naming the file and the array.
    """
    data = read_file(path, missing)
    if not data:
        raise InputError(path, "empty file (0 bytes), expected an npz archive", hint="re-extract it")
    try:  # from memory: np.load on a path leaks the open file when the archive is corrupt
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except NPZ_ERRORS as exc:
        raise InputError(
            path, f"not a readable npz archive ({type(exc).__name__}: {exc})", hint="re-extract it"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InputError(path, "is a single .npy array, expected an npz archive of named arrays")
    arrays = {}
    with npz:
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except NPZ_ERRORS as exc:
                raise InputError(
                    path, f"array {name!r} does not read ({type(exc).__name__}: {exc})", hint="re-extract it"
                ) from None
    return arrays


def read_text(path: Path, what: str, missing: str | None = None) -> str:
    """The text of ``path``; ``what`` names it in errors (``missing`` defaults to "<what> missing")."""
    data = read_file(path, missing or f"{what} missing")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(path, f"{what} is not a text file") from None


def read_json(path: Path, what: str, missing: str | None = None):
    """The parsed JSON of ``path``; a syntax error is reported with its line number."""
    text = read_text(path, what, missing)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(path, f"{what} is not valid JSON: {exc}", line=getattr(exc, "lineno", None)) from None
    except RecursionError:  # arrays nested thousands deep
        raise InputError(path, f"{what} is not valid JSON: nested too deeply") from None
