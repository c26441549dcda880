"""Checking parsed JSON against the shape a reader expects, with one error naming the field.

A reader says what it needs, field by field, with a few small shapes::

    box = check(doc["box_3"], OBJECT, path, "box_3")
    bbox = field(box, "2d_bbox", numbers(4), path, "box_3")       # (4,) float64
    K = field(camera, "CamMatrix", matrix(3, 3), path, "cameras.front_center")

A missing field, a value of the wrong type or length, or a number that is not finite raises
``InputError(path, 'box_3.2d_bbox: expected a list of 4 finite numbers (|x| <= 1e+09), found
the string "abcd"')``: the file, the JSON path of the field, what was expected and what was
found. Whatever the document holds, nothing else is raised.

Numbers are bounded by ``MAX_MAGNITUDE`` as well as finite: no pixel position, size in metres,
angle or calibration entry of these datasets comes near it, and the bound keeps the geometry
computed from them free of overflow (a JSON file may well hold ``1e308``). Timestamps are
integers (`integer`) and not bounded by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl_data.errors import InputError

#: largest magnitude accepted by `number`, `numbers` and `matrix` (see the module docstring).
MAX_MAGNITUDE = 1e9
_REQUIRED = object()


@dataclass(frozen=True)
class Shape:
    """What a JSON value must be.

    Attributes:
        expected: the shape in words, for the error ("a list of 4 finite numbers").
        convert: the value as the reader wants it; raises ValueError when it does not fit.
    """

    expected: str
    convert: Callable[[Any], Any]


def check(value: Any, shape: Shape, path: str | Path, where: str, hint: str | None = None) -> Any:
    """``value`` converted by ``shape``.

    Args:
        value: a parsed JSON value.
        shape: what it must be.
        path: the file it comes from. where: its JSON path there (``box_3.2d_bbox``).
        hint: what the user can do, added to the error.

    Raises:
        InputError: ``"<where>: expected <shape>, found <value>"``.
    """
    try:
        return shape.convert(value)
    except ValueError:
        raise InputError(path, f"{where}: expected {shape.expected}, found {describe(value)}", hint=hint) from None


def field(
    doc: dict,
    key: str,
    shape: Shape,
    path: str | Path,
    where: str = "",
    default: Any = _REQUIRED,
    hint: str | None = None,
) -> Any:
    """``doc[key]`` converted by ``shape``; ``default`` when it is absent (required without one).

    Args:
        doc: a JSON object (checked by the caller, e.g. with ``check(..., OBJECT, ...)``).
        key: the field. where: the JSON path of ``doc`` in its file ("" at the top level).
        shape, path, hint: as `check`.

    Raises:
        InputError: the field is missing (and required) or does not fit ``shape``.
    """
    name = f"{where}.{key}" if where else key
    if key not in doc:
        if default is not _REQUIRED:
            return default
        raise InputError(path, f"{name}: missing (expected {shape.expected})", hint=hint)
    return check(doc[key], shape, path, name, hint)


def quote(value: Any, limit: int = 60) -> str:
    """A JSON value as compact JSON text on one line, cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):  # an int of thousands of digits, a deep nest
        text = "..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any, limit: int = 60) -> str:
    """A JSON value for an error, with its type: ``the string "abcd"``, ``a list of 2 items [1, 2]``."""
    text = quote(value, limit)
    if isinstance(value, str):
        return f"the string {text}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'} {text}"
    if isinstance(value, dict):
        return f"an object {text}"
    if value is None or isinstance(value, bool):
        return text
    return f"the number {text}"


# ---- shapes ------------------------------------------------------------------------------------


def _object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise ValueError
    return value


#: a JSON object (returned as is).
OBJECT = Shape("an object", _object)
#: a JSON array, of anything (returned as is).
LIST = Shape("a list", _list)
#: a JSON string.
TEXT = Shape("a string", _text)


def _finite(value: Any, limit: float) -> float:
    """``value`` as a float when it is a JSON number (not a boolean) within ``limit``."""
    # an int is compared before float(): one of 400 digits does not fit a double
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= limit:
        raise ValueError
    return float(value)


def number(limit: float = MAX_MAGNITUDE) -> Shape:
    """A finite number within ``limit``, as a float."""
    return Shape(f"a finite number (|x| <= {limit:g})", lambda v: _finite(v, limit))


def integer(low: int | None = None, high: int | None = None) -> Shape:
    """A JSON integer (not a boolean, not 1.0) in ``[low, high]``, as an int."""
    bounds = [f">= {low}"] if low is not None else []
    bounds += [f"<= {high}"] if high is not None else []

    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError
        return value

    return Shape(" ".join(["an integer", *bounds]), convert)


def numbers(count: int | tuple[int, ...], limit: float = MAX_MAGNITUDE) -> Shape:
    """A list of ``count`` finite numbers within ``limit`` (a tuple: any of those lengths), as (count,) float64."""
    counts = (count,) if isinstance(count, int) else tuple(count)
    words = " or ".join(str(c) for c in counts)

    def convert(value: Any) -> np.ndarray:
        if not isinstance(value, list) or len(value) not in counts:
            raise ValueError
        return np.array([_finite(v, limit) for v in value], dtype=np.float64)

    return Shape(f"a list of {words} finite numbers (|x| <= {limit:g})", convert)


def matrix(rows: int, cols: int, limit: float = MAX_MAGNITUDE) -> Shape:
    """``rows`` lists of ``cols`` finite numbers within ``limit``, as (rows, cols) float64."""
    row = numbers(cols, limit)

    def convert(value: Any) -> np.ndarray:
        if not isinstance(value, list) or len(value) != rows:
            raise ValueError
        return np.stack([row.convert(r) for r in value]) if rows else np.zeros((0, cols))

    return Shape(f"{rows} rows of {cols} finite numbers (|x| <= {limit:g})", convert)


def list_of(item: Shape, count: int) -> Shape:
    """A list of ``count`` values, each of shape ``item``, as a list of the converted values."""

    def convert(value: Any) -> list:
        if not isinstance(value, list) or len(value) != count:
            raise ValueError
        return [item.convert(v) for v in value]

    return Shape(f"a list of {count}, each {item.expected}", convert)
