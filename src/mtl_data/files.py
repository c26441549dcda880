"""Writing outputs: so that no reader ever sees half a file, nothing half-written stays behind
after a failure, and a failure is one ``OutputError`` naming the path; reading a JSON document
with one clear error."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mtl_data.errors import MtlDataError, OutputError


def open_output(path: Path) -> BinaryIO:
    """Open ``path`` for writing, binary. Every output file of the data side is opened here
    (``write_atomic``, the tar writer, the manifest), so a test can make them fail like a full
    or read-only disk by replacing this module's ``open``."""
    return open(path, "wb")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into an ``OutputError`` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise OutputError(path, exc) from exc


def make_dirs(path: Path) -> Path:
    """``path.mkdir(parents=True, exist_ok=True)``; an ``OutputError`` naming it when that fails."""
    with writing(path):
        Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def remove_quietly(path: Path) -> None:
    """Delete a temporary file if it is there; never raises (it runs while another error propagates)."""
    with contextlib.suppress(OSError):
        Path(path).unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path.part`` beside ``path`` and rename it, creating the folder if needed.

    A reader (a converter run on a folder still being written, a trainer reading a report)
    sees the old file or the new one, never a partial one. ``str`` is written as UTF-8.

    Raises:
        OutputError: the folder or file cannot be written (disk full, read-only, ...); the
            ``.part`` file is removed first.
    """
    path = Path(path)
    make_dirs(path.parent)
    tmp = path.with_name(path.name + ".part")
    try:
        with writing(tmp), open_output(tmp) as f:
            f.write(data.encode() if isinstance(data, str) else data)
        with writing(path):
            os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return path


def read_json_document(path: Path, missing: str) -> Any:
    """The parsed JSON of ``path``.

    Raises:
        MtlDataError: ``missing`` (the whole message: what to do) when there is no such file;
            ``"{path}: not readable JSON (...)"`` when it cannot be read or parsed.
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MtlDataError(missing) from None
    except (OSError, ValueError) as exc:
        raise MtlDataError(f"{path}: not readable JSON ({exc})") from None
