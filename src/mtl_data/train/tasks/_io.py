"""Prediction files shared by the task modules: label PNGs and ``key,value`` CSV tables.

These read and write the benchmark files that ``mtl-train predict`` writes and ``mtl-train
score`` reads: plain numpy + OpenCV (``KeyValueWriter`` is the table tasks' ``PredictionWriter``).

* **Label PNGs** (``write_label_png`` / ``read_label_png``): one single-channel grey PNG per
  sample, 8-bit (class ids: Cityscapes' ``*_labelIds.png`` style) or 16-bit (KITTI depth:
  ``round(metres x 256)``, 0 = none). Written without a row filter, as the shards' own label
  maps (``shards.codec.LABEL_PNG_PARAMS``), so the shards' fast decoder reads them. Palette
  PNGs are refused rather than read: OpenCV would return their colours, not their indices.
* **key,value tables** (``write_key_value_csv`` / ``read_key_value_csv``): one row per
  sample, header ``key,value``, rows sorted by key (the same predictions give the same
  bytes). Floats are written with ``repr``, the shortest text that reads back to the same
  float64, so a table round-trips exactly.

Every file is written atomically (``files.write_atomic``). A malformed file is one
``MtlDataError`` (an ``InputError``) naming the file, and the line for a table.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from mtl_data.errors import InputError
from mtl_data.files import write_atomic
from mtl_data.schema.sample import Sample
from mtl_data.shards.codec import LABEL_PNG_PARAMS
from mtl_data.shards.png import decode_png, png_header
from mtl_data.train.tasks.base import PredictionWriter

T = TypeVar("T")

#: the header row of a ``key,value`` table.
CSV_HEADER = ("key", "value")
#: PNG colour types (ISO/IEC 15948, IHDR), for error messages.
_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey + alpha", 6: "RGBA"}
_BIT_DEPTHS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}


# ---- label PNGs ------------------------------------------------------------------------------


def write_label_png(path: Path, array: np.ndarray) -> Path:
    """Write an (H, W) uint8 or uint16 array as a single-channel grey PNG, atomically.

    Args:
        path: the file to write (its folder is created).
        array: (H, W) uint8 (8-bit PNG) or uint16 (16-bit PNG).

    Raises:
        ValueError: another dtype or shape (a bug in the caller, not a user error).
    """
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype not in _BIT_DEPTHS:
        raise ValueError(f"a label PNG holds an (H, W) uint8 or uint16 array, got {array.dtype} {array.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array), LABEL_PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV encodes every uint8 / uint16 grey image
        raise ValueError(f"PNG encoding failed for {array.dtype} {array.shape}")
    return write_atomic(path, buf.tobytes())


def read_label_png(path: Path, dtype: type, what: str) -> np.ndarray:
    """Read a single-channel grey PNG of ``dtype``'s bit depth.

    Args:
        path: the PNG.
        dtype: ``np.uint8`` (an 8-bit PNG) or ``np.uint16`` (16-bit).
        what: what the pixels hold, for the error message ("unified class ids").

    Returns:
        (H, W) array of ``dtype``.

    Raises:
        MtlDataError: the file cannot be read, is not a PNG, does not decode, or is not a
            single-channel grey PNG of that bit depth (one sentence naming the file).
    """
    path = Path(path)
    bits = _BIT_DEPTHS[np.dtype(dtype)]
    expected = f"expected a single-channel {bits}-bit grey PNG of {what}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc.strerror or exc}); {expected}") from None
    try:
        _, _, bit_depth, colour = png_header(data)
    except ValueError:
        raise InputError(path, f"not a PNG; {expected}") from None
    if colour != 0 or bit_depth != bits:
        kind = _COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise InputError(path, f"{expected}, found a {bit_depth}-bit {kind} PNG")
    pixels = decode_png(data)
    if pixels is None or pixels.ndim != 2 or pixels.dtype != np.dtype(dtype):
        raise InputError(path, f"the PNG does not decode (truncated or corrupt); {expected}")
    return pixels


# ---- key,value tables ------------------------------------------------------------------------


def format_value(value: float) -> str:
    """A table value as text: ints as digits, floats by ``repr`` (exact round trip)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"a table value is a number, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def write_key_value_csv(path: Path, values: Mapping[str, float]) -> Path:
    """Write ``values`` as a ``key,value`` table (header first, rows sorted by key), atomically.

    Args:
        path: the file to write (its folder is created).
        values: sample key -> number (see ``format_value``).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows((key, format_value(values[key])) for key in sorted(values))
    return write_atomic(path, out.getvalue())


class KeyValueWriter(PredictionWriter):
    """A ``key,value`` table of one number per sample (``<out_dir>/<name>``), written when closed.

    Args:
        out_dir: the predictions folder.
        name: the table's file name (``steer.csv``, ``sign.csv``).
        convert: a prediction -> the number written (``float`` for degrees, ``int`` for a class).
    """

    def __init__(self, out_dir: Path, name: str, convert: Callable[[object], float]):
        super().__init__(out_dir)
        self.name, self.convert = name, convert
        self.values: dict[str, float] = {}

    def add(self, key: str, prediction: object, sample: Sample) -> None:
        self.values[key] = self.convert(prediction)

    def close(self) -> None:
        write_key_value_csv(self.out_dir / self.name, self.values)


def parse_float(text: str) -> float:
    """A finite float; ValueError otherwise (``nan`` and ``inf`` are not predictions)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_int(text: str) -> int:
    """A base-10 integer (``"3"``, not ``"3.0"``); ValueError otherwise."""
    return int(text.strip(), 10)


def read_key_value_csv(path: Path, parse: Callable[[str], T], what: str) -> dict[str, T]:
    """Read a ``key,value`` table written by ``write_key_value_csv`` (or by hand).

    Blank lines are skipped; every other line after the header is ``key,value``; spaces around
    fields and a UTF-8 byte-order mark are tolerated.

    Args:
        path: the table.
        parse: text -> value, raising ValueError for a bad value (``parse_float``, ``parse_int``,
            or a stricter one that also checks a range).
        what: what a value is, for error messages ("a steering angle in degrees").

    Returns:
        key -> parsed value, in file order.

    Raises:
        MtlDataError: the file cannot be read or is not UTF-8; a header other than ``key,value``;
            a row without exactly two fields; an empty key; a key seen before (both lines named);
            a value ``parse`` rejects. Each names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark (spreadsheets) is dropped
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(path, "not a UTF-8 text file; expected a CSV table with the header key,value") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    values: dict[str, T] = {}
    first_line: dict[str, int] = {}
    header_seen = False
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if not header_seen:
                if tuple(field.strip() for field in row) != CSV_HEADER:
                    raise InputError(path, f"expected the header key,value, found {','.join(row)!r}", line)
                header_seen = True
                continue
            if len(row) != 2:
                raise InputError(path, f"expected 2 fields (key,value), found {len(row)}: {','.join(row)!r}", line)
            key, raw = row[0].strip(), row[1].strip()
            if not key:
                raise InputError(path, "empty sample key", line)
            if key in values:
                raise InputError(path, f"duplicate key {key!r} (first on line {first_line[key]})", line)
            try:
                values[key] = parse(raw)
            except ValueError:
                raise InputError(path, f"value {raw!r} of {key!r} is not {what}", line) from None
            first_line[key] = line
    except csv.Error as exc:
        raise InputError(path, f"not a readable CSV table ({exc})", reader.line_num) from None
    if not header_seen:
        raise InputError(path, "empty table; expected the header key,value")
    return values
