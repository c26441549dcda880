"""Reading one table of a stats report's ``recommendations`` (the trainer's source and task
weights come from ``mtl-data stats --json``), with every problem one error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from mtl_data.errors import MtlDataError


def read_recommendations(path: Path, table: str, where: str | None = None) -> dict:
    """``report["recommendations"][table]`` of the stats report at ``path`` (a non-empty dict).

    Args:
        path: a ``mtl-data stats --json`` report.
        table: ``mix`` or ``task_weights``.
        where: how errors name the file (default: the path).

    Raises:
        MtlDataError: the file cannot be read, is not JSON, or has no such table.
    """
    where = str(path) if where is None else where
    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MtlDataError(f"{where}: cannot read the stats report ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise MtlDataError(f"{where}: not a JSON stats report ({exc})") from None
    recommendations = report.get("recommendations") if isinstance(report, dict) else None
    found = recommendations.get(table) if isinstance(recommendations, dict) else None
    if not isinstance(found, dict) or not found:
        raise MtlDataError(f"{where}: no recommendations.{table} table (write it with `mtl-data stats --json`)")
    return found
