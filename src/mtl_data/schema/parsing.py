"""Parsing numbers out of native text files, with errors that name the file, line and field."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtl_data.errors import InputError


def parse_numbers(
    tokens: Sequence[str], path: str | Path, line: int, names: Sequence[str] | None = None, prefix: str = ""
) -> np.ndarray:
    """Float64 values of ``tokens``.

    Args:
        tokens: the text fields.
        path, line: where they come from (for the error).
        names: a name per token for the error (``left``, ``rotation_y``); default ``value N``.
        prefix: put before the field name in the error (``"P2: "``).

    Raises:
        InputError: naming the first field that is not a finite number (``nan``, ``inf`` and
            ``1e999`` parse as floats but are no measurement), and its text.
    """
    values = []
    for i, token in enumerate(tokens):
        try:
            value = float(token)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            name = names[i] if names is not None else f"value {i + 1}"
            what = "not a number" if value is None else "not a finite number"
            raise InputError(path, f"{prefix}{name} is {what}: {token!r}", line=line)
        values.append(value)
    return np.array(values, dtype=np.float64)
