"""Reading one native file, with the failure turned into an ``InputError`` naming that file.

Every converter reads images, text and JSON this way, so a missing, unreadable or corrupt file
is always one clear line (and a reject under ``--on-error skip``), never a traceback. Callers
pass their own wording for the messages: what the file is and what its absence means.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtl_data.errors import InputError
from mtl_data.shards.codec import decode_image


def read_file(path: Path, missing: str) -> bytes:
    """The bytes of ``path``; ``missing`` is the message when it does not exist (or is a folder)."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(path, missing) from None
    except OSError as exc:
        raise InputError(path, f"cannot read the file: {exc.strerror}") from None


def decode_or_raise(data: bytes, path: Path, undecodable: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of encoded image bytes; ``undecodable`` is the message when they do not decode."""
    image = decode_image(data)
    if image is None:
        raise InputError(path, undecodable)
    return image


def read_image(path: Path, missing: str, undecodable: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (PNG, JPEG, PPM)."""
    return decode_or_raise(read_file(path, missing), path, undecodable)


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
