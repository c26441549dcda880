"""Writing a file so that no reader ever sees half of it."""

from __future__ import annotations

import os
from pathlib import Path


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
