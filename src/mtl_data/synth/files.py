"""Writing synthetic raw files the way the ingest writes its outputs: never half a file."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path.tmp`` beside ``path`` and rename it, creating the folder if needed.

    A reader (or a converter run on a folder still being written) never sees a partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
