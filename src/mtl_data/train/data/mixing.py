"""Source sampling ratios for the training loader: parse ``mix`` into one probability per source.

``mix`` takes one of:

- ``None`` or ``"proportional"``: each source in proportion to its sample count in the split
  (what concatenating the datasets would give);
- a mapping ``{source: ratio}``, e.g. ``{"kitti": 0.3, "a2d2": 0.7}``: non-negative numbers,
  normalized to sum to 1; a source left out gets 0 (it is not loaded at all);
- ``"PATH#ALPHA"``: the recommendation of a stats report (``mtl-data stats --json PATH``),
  ``json["recommendations"]["mix"][ALPHA]``, a ``{source: p}`` table from temperature sampling
  ``p_s ~ n_s ** alpha``; ALPHA matches the report's key as written (``"0.5"``) or as a number
  (``0.50`` finds ``"0.5"``). A report already loaded with ``json.load`` is passed as its table:
  ``report["recommendations"]["mix"]["0.5"]`` is a plain mapping of ratios.

Every mistake is a ``MtlDataError`` that names what was wrong and what is allowed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from mtl_data.errors import MtlDataError
from mtl_data.stats.recommendations import read_recommendations

PROPORTIONAL = "proportional"

logger = logging.getLogger(__name__)


def resolve_mix(mix: str | Mapping[str, float] | None, counts: Mapping[str, int]) -> dict[str, float]:
    """Sampling probability per source, summing to 1, for the sources that are sampled at all.

    Args:
        mix: ``None``, ``"proportional"``, ``{source: ratio}`` or ``"PATH#ALPHA"`` (module docstring).
        counts: every source of the shards -> its samples that can be loaded (in the split, and
            labelling a requested task); 0 for a source that has none.

    Returns:
        ``{source: p}`` with ``p > 0``, sorted by source name. Sources with ratio 0 are left
        out, and so are sources given a positive ratio that have no sample to load (with a
        logged note: asking for tasks a source does not label is not an error).

    Raises:
        MtlDataError: an unknown source, a negative or non-finite ratio, ratios that are all 0,
            no source left to sample, an unreadable stats report or a missing ALPHA (the message
            lists the available ones).
    """
    if mix is None or mix == PROPORTIONAL:
        if not any(n > 0 for n in counts.values()):
            raise MtlDataError("proportional mix: no source has a sample in the split that labels a requested task")
        ratios: Mapping[str, float] = dict(counts)
        where = "proportional mix"
    elif isinstance(mix, str):
        ratios, where = _from_report(mix), f"mix {mix!r}"
    elif isinstance(mix, Mapping):
        ratios, where = mix, "mix"
    else:
        raise MtlDataError(
            f"mix must be {PROPORTIONAL!r}, a {{source: ratio}} mapping or 'STATS.json#ALPHA', got {type(mix).__name__}"
        )
    return _normalized(ratios, counts, where)


def _normalized(ratios: Mapping[str, float], counts: Mapping[str, int], where: str) -> dict[str, float]:
    unknown = sorted(set(ratios) - set(counts))
    if unknown:
        raise MtlDataError(
            f"{where}: unknown source(s) {', '.join(map(repr, unknown))}; "
            f"the shards hold {', '.join(sorted(counts)) or 'no source'}"
        )
    for source, value in ratios.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MtlDataError(f"{where}: ratio of {source!r} must be a finite number, got {value!r}")
        if value < 0:
            raise MtlDataError(f"{where}: ratio of {source!r} is negative ({value}); ratios must be >= 0")
    if not any(v > 0 for v in ratios.values()):
        raise MtlDataError(f"{where}: every ratio is 0; give at least one source a positive ratio")
    for source in sorted(s for s, v in ratios.items() if v > 0 and counts[s] == 0):
        logger.warning(
            "%s: source %s is left out: it has no sample to load (none in the split labels a requested task)",
            where,
            source,
        )
    kept = {s: float(ratios[s]) for s in sorted(ratios) if ratios[s] > 0 and counts[s] > 0}
    if not kept:
        raise MtlDataError(
            f"{where}: no sampled source has a sample in the split that labels a requested task "
            f"(samples per source: {dict(sorted(counts.items()))})"
        )
    total = math.fsum(kept.values())
    return {s: v / total for s, v in kept.items()}


def _from_report(spec: str) -> dict[str, float]:
    """The ``{source: p}`` table of ``"PATH#ALPHA"`` (see the module docstring)."""
    path_text, sep, alpha = spec.rpartition("#")
    if not sep or not path_text or not alpha:
        raise MtlDataError(
            f"mix {spec!r}: expected {PROPORTIONAL!r}, a {{source: ratio}} mapping or "
            "'STATS.json#ALPHA' (a stats report and one of its recommendations.mix keys)"
        )
    path = Path(path_text)
    mixes = read_recommendations(path, "mix")
    key = alpha if alpha in mixes else _same_number(alpha, mixes)
    if key is None:
        raise MtlDataError(f"{path}: no mix for alpha {alpha!r}; available: {', '.join(sorted(mixes))}")
    table = mixes[key]
    if not isinstance(table, dict):
        raise MtlDataError(f"{path}: recommendations.mix[{key!r}] is not a {{source: p}} table")
    return table


def _same_number(alpha: str, keys) -> str | None:
    """The key of ``keys`` equal to ``alpha`` as a number (``"0.50"`` finds ``"0.5"``), or None."""
    try:
        wanted = float(alpha)
    except ValueError:
        return None
    for key in keys:
        try:
            if float(key) == wanted:
                return key
        except ValueError:
            continue
    return None
