"""A2D2 vehicle bus signals -> the ``steer`` label (steering-wheel angle, speed) at a timestamp.

Two file formats exist, both named ``<seq>/bus/<YYYYMMDDhhmmss>_bus_signals.json``:

* **sensor fusion** (``camera_lidar/<seq>/bus/``): a JSON object, one key per signal::

      {"steering_angle_calculated": {"unit": "Unit_DegreOfArc",
                                     "values": [[1533904617000000, 12.3], ...]},
       "steering_angle_calculated_sign": {"unit": null, "values": [[1533904617000000, 0], ...]},
       "vehicle_speed": {"unit": "Unit_KiloMeterPerHour", "values": [[...], ...]}, ...}

* **semantic subset** (``camera_lidar_semantic_bus/<seq>/bus/``): a JSON array, one entry per
  camera frame, each carrying a short window of samples per signal without their own times::

      [{"frame_name": "..._camera_frontcenter_000012345.json", "timestamp": 1533904617000000,
        "flexray": {"steering_angle_calculated": {"unit": ..., "values": [12.3, 12.45, ...]},
                    ...}}, ...]

  Each signal becomes one sample per entry: time = the entry's ``timestamp``, value = the
  mean of its ``values`` (the public readers of this format all average the window).

Both are read into the same `BusSignals`: per signal, int64 timestamps (µs) strictly
increasing and float64 values. `steering_at` then gives the signed steering-wheel angle
(positive = left), the speed and the time gap to the bus samples it used.

See ``docs/raw-formats.md`` section 1.8 for the signal table and the sign convention.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_data.errors import InputError
from mtl_data.schema.sample import Steer

#: steering-wheel angle magnitude, degrees (0 = centred).
STEERING_ANGLE = "steering_angle_calculated"
#: direction of `STEERING_ANGLE`: 0 = left (positive), 1 = right (negative).
STEERING_SIGN = "steering_angle_calculated_sign"
#: vehicle speed, km/h.
VEHICLE_SPEED = "vehicle_speed"

#: magnitudes at or above this are the bus's "init" (614.10) and "error" (614.25) codes, not
#: angles (the wheel physically stops well below 600 deg).
STEERING_INVALID_MIN_DEG = 614.10 - 1e-6

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Signal:
    """One bus signal as a time series.

    Attributes:
        t_us: (N,) int64 timestamps, µs, strictly increasing.
        values: (N,) float64 values in the signal's unit.
    """

    t_us: np.ndarray  # (N,) int64 µs
    values: np.ndarray  # (N,) float64


@dataclass(frozen=True)
class BusSignals:
    """All signals of one bus file.

    Attributes:
        path: the file they were read from (for messages).
        signals: signal name -> series; every signal of the file, known or not.
    """

    path: str
    signals: dict[str, Signal]


# ---------------------------------------------------------------------------------------------
# reading


def read_bus_file(path: Path) -> BusSignals:
    """Parse an A2D2 bus file of either format (see the module docstring).

    Parse once per file and keep the result: `steering_at` is cheap, this is not.

    Args:
        path: the ``*_bus_signals.json`` file.

    Returns:
        Every signal in the file. Sensor-fusion signals keep their samples; semantic-subset
        signals get one sample per frame entry (the mean of its window; an entry whose window
        is empty contributes nothing to that signal). Entries of the semantic format may be in
        any order in the file; the series are sorted by time.

    Raises:
        InputError: the file is missing or unreadable; not JSON (with the line of the JSON
            error); the top level is neither an object nor an array; a signal has no
            ``values`` list; a sample is not ``[timestamp_us, number]`` (or, in the semantic
            format, a window value is not a number); timestamps of a sensor-fusion signal are
            not strictly increasing; two semantic entries share a timestamp.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "bus signal file not found", hint="check the scene's bus/ folder") from None
    except OSError as e:
        raise InputError(path, f"cannot read bus signal file: {e.strerror or e}") from None
    try:
        # json.loads on bytes detects UTF-8/16/32 itself.
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(
            path,
            f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
            line=e.lineno,
            hint="the file may be truncated; re-extract it",
        ) from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not valid JSON: not UTF-8/16/32 text ({e.reason})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(path, f"not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(path, "not valid JSON: nested too deeply") from None

    return parse_bus_document(path, doc)


def parse_bus_document(path: Path, doc: object) -> BusSignals:
    """`read_bus_file` of an already parsed document (``path`` names it in errors).

    Whatever ``doc`` holds, the result is a `BusSignals` or an InputError (see `read_bus_file`).
    """
    if isinstance(doc, dict):
        signals = _read_sensor_fusion(path, doc)
    elif isinstance(doc, list):
        signals = _read_semantic_subset(path, doc)
    else:
        raise InputError(
            path,
            f"top level is a JSON {_json_type(doc)}; expected an object "
            "(sensor-fusion bus file) or an array (semantic-subset bus file)",
        )
    return BusSignals(path=str(path), signals=signals)


def _read_sensor_fusion(path: Path, doc: dict) -> dict[str, Signal]:
    """``{"<signal>": {"unit": ..., "values": [[t_us, v], ...]}}`` -> series per signal."""
    signals = {}
    for name, spec in doc.items():
        if not isinstance(spec, dict) or "values" not in spec:
            raise InputError(
                path,
                f'signal {name!r} has no \'values\'; expected {{"unit": ..., "values": [[timestamp_us, value], ...]}}',
            )
        t_us, values = _parse_pairs(path, name, spec["values"])
        _check_increasing(path, name, t_us)
        signals[name] = Signal(t_us=t_us, values=values)
    return signals


def _parse_pairs(path: Path, name: str, samples: object) -> tuple[np.ndarray, np.ndarray]:
    """``[[t_us, v], ...]`` -> (int64 t_us, float64 values), with an error at the first bad sample."""
    if not isinstance(samples, list):
        raise InputError(
            path,
            f"signal {name!r}: 'values' is a JSON {_json_type(samples)}; "
            "expected a list of [timestamp_us, value] pairs",
        )
    if not samples:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)

    # Fast path: one C-level conversion for a well-formed list (a real file holds ~10^5
    # samples per signal). Anything irregular (ragged, strings, null, huge ints) ends up in a
    # non-numeric dtype or the wrong shape and goes to the slow path, which finds the culprit.
    try:
        arr = np.asarray(samples)
    except (ValueError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in "if" or arr.shape != (len(samples), 2):
        return _parse_pairs_slow(path, name, samples)
    if arr.dtype.kind == "i":
        t_us = arr[:, 0].astype(np.int64)
    else:
        # A float column would round timestamps above 2**53; take them from the JSON numbers.
        column = arr[:, 0]
        in_int64 = np.abs(column) < 2.0**63  # 2**63 itself (9.223372036854776e18) is not an int64
        if not (np.isfinite(column).all() and (column == np.floor(column)).all() and in_int64.all()):
            return _parse_pairs_slow(path, name, samples)
        t_us = np.fromiter((int(s[0]) for s in samples), dtype=np.int64, count=len(samples))
    values = arr[:, 1].astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise InputError(path, f"signal {name!r}: sample {i} has value {samples[i][1]!r}; expected a finite number")
    return t_us, values


def _parse_pairs_slow(path: Path, name: str, samples: list) -> tuple[np.ndarray, np.ndarray]:
    """Sample-by-sample version of `_parse_pairs`, raising at the first bad sample."""
    t_us = np.empty(len(samples), dtype=np.int64)
    values = np.empty(len(samples), dtype=np.float64)
    for i, sample in enumerate(samples):
        if not (isinstance(sample, list) and len(sample) == 2):
            raise InputError(path, f"signal {name!r}: sample {i} is {_quote(sample)}; expected [timestamp_us, value]")
        t, v = sample
        if not _is_int_us(t):
            raise InputError(
                path,
                f"signal {name!r}: sample {i} has timestamp {_quote(t)}; expected an integer number of microseconds",
            )
        if not _is_finite_number(v):
            raise InputError(path, f"signal {name!r}: sample {i} has value {_quote(v)}; expected a finite number")
        t_us[i] = int(t)
        values[i] = float(v)
    return t_us, values


def _check_increasing(path: Path, name: str, t_us: np.ndarray) -> None:
    """Raise at the first timestamp that is not after its predecessor."""
    bad = np.flatnonzero(np.diff(t_us) <= 0)
    if not bad.size:
        return
    i = int(bad[0])
    t0, t1 = int(t_us[i]), int(t_us[i + 1])
    if t0 == t1:
        problem = f"timestamp {t1} repeated at samples {i} and {i + 1}"
    else:
        problem = f"timestamps out of order at sample {i + 1}: {t1} follows {t0}"
    raise InputError(path, f"signal {name!r}: {problem}; expected strictly increasing timestamps")


def _read_semantic_subset(path: Path, doc: list) -> dict[str, Signal]:
    """``[{"frame_name", "timestamp", "flexray": {"<signal>": {"values": [v, ...]}}}]`` -> series."""
    entries = []  # (timestamp, file index, frame name, flexray)
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict):
            raise InputError(
                path,
                f"entry {i} is a JSON {_json_type(entry)}; expected an object "
                'with "frame_name", "timestamp" and "flexray"',
            )
        where = _entry_name(i, entry)
        t = entry.get("timestamp")
        if not _is_int_us(t):
            raise InputError(path, f"{where}: timestamp is {_quote(t)}; expected an integer number of microseconds")
        flexray = entry.get("flexray")
        if not isinstance(flexray, dict):
            raise InputError(
                path,
                f"{where}: 'flexray' is {_quote(flexray)}; "
                'expected an object {"<signal>": {"unit": ..., "values": [...]}}',
            )
        entries.append((int(t), i, where, flexray))

    # File order is not time order in this format; sort, but two frames at the same instant
    # would make a series with a repeated time, which no interpolation can resolve.
    entries.sort(key=lambda e: (e[0], e[1]))
    for (t0, _, where0, _), (t1, _, where1, _) in zip(entries, entries[1:]):
        if t0 == t1:
            raise InputError(
                path, f"{where0} and {where1} share timestamp {t0}; expected one entry per camera frame time"
            )

    series: dict[str, tuple[list[int], list[float]]] = {}
    for t, _, where, flexray in entries:
        for name, spec in flexray.items():
            times, means = series.setdefault(name, ([], []))
            if not isinstance(spec, dict) or "values" not in spec:
                raise InputError(
                    path, f'{where}: signal {name!r} has no \'values\'; expected {{"unit": ..., "values": [v, ...]}}'
                )
            window = spec["values"]
            if not isinstance(window, list):
                raise InputError(
                    path, f"{where}: signal {name!r}: 'values' is {_quote(window)}; expected a list of numbers"
                )
            for j, v in enumerate(window):
                if not _is_finite_number(v):
                    raise InputError(
                        path, f"{where}: signal {name!r}: value {j} is {_quote(v)}; expected a finite number"
                    )
            if window:  # an empty window says nothing about this frame
                times.append(t)
                means.append(_mean(window))
    return {
        name: Signal(t_us=np.array(times, dtype=np.int64), values=np.array(means, dtype=np.float64))
        for name, (times, means) in series.items()
    }


def _mean(window: list) -> float:
    """The exact mean of finite numbers; summing them could overflow (two values of 1e308)."""
    try:
        return math.fsum(window) / len(window)
    except OverflowError:
        return math.fsum(v / len(window) for v in window)  # each term <= max / n: no overflow


def _entry_name(i: int, entry: dict) -> str:
    frame = entry.get("frame_name")
    return f"entry {i} ({frame})" if isinstance(frame, str) else f"entry {i}"


def _is_int_us(x: object) -> bool:
    # bool is an int subclass in Python, but `true` is no timestamp; integral floats
    # (1.5339e15 written by a float-only writer) are accepted.
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return _INT64_MIN <= x <= _INT64_MAX
    return isinstance(x, float) and math.isfinite(x) and x == math.floor(x) and abs(x) < 2.0**63


def _is_finite_number(x: object) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    # not math.isfinite: it raises OverflowError on 10**400 (a JSON integer may have any length)
    return abs(x) <= sys.float_info.max  # False for inf and NaN


def _json_type(x: object) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(x), type(x).__name__)


def _quote(x: object, limit: int = 60) -> str:
    text = json.dumps(x) if not isinstance(x, float) or math.isfinite(x) else repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# sampling


def steering_at(bus: BusSignals, t_us: int, max_gap_ms: float = 100.0) -> Steer | None:
    """The signed steering-wheel angle and the speed at ``t_us``, interpolated linearly.

    The angle is ``steering_angle_calculated`` (magnitude, degrees) signed by
    ``steering_angle_calculated_sign`` (0 = left = positive, 1 = right = negative). The signed
    series is what is interpolated, so a left-to-right swing passes through 0 between its
    samples. Where the sign series has other timestamps than the magnitude series, each
    magnitude sample takes the sign of the nearest sign sample in time (the earlier on a tie);
    a sign value that is not 0/1 (a semantic-subset window mean) counts as right when >= 0.5.

    Time gap: with the angle samples ``t_a <= t_us <= t_b`` used, ``gap = max(t_us - t_a,
    t_b - t_us)`` (0 on a sample). Outside the series there is no extrapolation: the nearest
    sample is used and the gap is the distance to it.

    Timing caveat: the A2D2 FAQ says the camera-to-bus delay ``tstamp_delay`` is already applied
    to the camera timestamps of the semantic/bbox subsets but not to the raw sensor-fusion
    data. This function adds no delay; the caller decides which time to ask for.

    Cost: two binary searches per signal, nothing proportional to the file (the signed series
    is evaluated only at the two samples used, which gives the same result as signing it all).

    Args:
        bus: a parsed bus file (`read_bus_file`).
        t_us: the image timestamp, µs, same clock as the bus.
        max_gap_ms: the largest acceptable gap.

    Returns:
        ``Steer(angle_deg, speed_kmh, gap_ms)`` as Python floats; ``speed_kmh`` is None when
        ``vehicle_speed`` is absent or its own gap exceeds ``max_gap_ms``. None when the
        magnitude or the sign signal is absent or empty, when the gap exceeds ``max_gap_ms``,
        or when a magnitude sample used carries the bus's init/error code (>= 614.10).
    """
    t_us = int(t_us)
    magnitude = bus.signals.get(STEERING_ANGLE)
    sign = bus.signals.get(STEERING_SIGN)
    if magnitude is None or sign is None or not len(magnitude.t_us) or not len(sign.t_us):
        return None

    a, b, gap_us = _bracket(magnitude.t_us, t_us)
    gap_ms = gap_us / 1000.0
    if gap_ms > max_gap_ms:
        return None
    if max(magnitude.values[a], magnitude.values[b]) >= STEERING_INVALID_MIN_DEG:
        return None
    signed_a = _signed_sample(magnitude, sign, a)
    signed_b = signed_a if b == a else _signed_sample(magnitude, sign, b)
    angle = _lerp(magnitude.t_us, a, b, signed_a, signed_b, t_us)

    speed = None
    speed_signal = bus.signals.get(VEHICLE_SPEED)
    if speed_signal is not None and len(speed_signal.t_us):
        sa, sb, speed_gap_us = _bracket(speed_signal.t_us, t_us)
        if speed_gap_us / 1000.0 <= max_gap_ms:
            speed = _lerp(
                speed_signal.t_us, sa, sb, float(speed_signal.values[sa]), float(speed_signal.values[sb]), t_us
            )
    return Steer(angle_deg=float(angle), speed_kmh=None if speed is None else float(speed), gap_ms=float(gap_ms))


def _bracket(times: np.ndarray, t: int) -> tuple[int, int, int]:
    """Indices ``a <= b`` of the samples to interpolate between at ``t``, and the gap in µs.

    ``a == b`` on an exact hit (gap 0) and outside the range (the nearest end, gap = distance).
    """
    n = len(times)
    i = int(np.searchsorted(times, t, side="left"))  # times[i - 1] < t <= times[i]
    if i < n and int(times[i]) == t:
        return i, i, 0
    if i == 0:
        return 0, 0, int(times[0]) - t
    if i == n:
        return n - 1, n - 1, t - int(times[n - 1])
    ta, tb = int(times[i - 1]), int(times[i])
    return i - 1, i, max(t - ta, tb - t)


def _lerp(times: np.ndarray, a: int, b: int, va: float, vb: float, t: int) -> float:
    if a == b:
        return va
    # Integer differences first: absolute µs times (~1.5e15) lose precision as float offsets.
    ta = int(times[a])
    frac = (t - ta) / (int(times[b]) - ta)
    return va + frac * (vb - va)


def _signed_sample(magnitude: Signal, sign: Signal, i: int) -> float:
    """Magnitude sample ``i`` with the sign of the nearest sign sample in time."""
    t = int(magnitude.t_us[i])
    j = int(np.searchsorted(sign.t_us, t, side="left"))  # sign.t_us[j - 1] < t <= sign.t_us[j]
    if j == len(sign.t_us) or (j > 0 and t - int(sign.t_us[j - 1]) <= int(sign.t_us[j]) - t):
        j -= 1
    value = float(magnitude.values[i])
    # 0.0 - v, not -v: a centred wheel on a "right" sample should not write -0.0 into steer.json.
    return 0.0 - value if sign.values[j] >= 0.5 else value
