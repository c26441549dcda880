"""Writing a file so that no reader ever sees half of it; reading a JSON document with one clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mtl_data.errors import MtlDataError


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path.part`` beside ``path`` and rename it, creating the folder if needed.

    A reader (a converter run on a folder still being written, a trainer reading a report)
    sees the old file or the new one, never a partial one. ``str`` is written as UTF-8.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
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
