"""Random objects of a synthetic scene: what every generator that places boxes shares.

Each generator keeps its own geometry (where an object may stand, what "inside the image" and
"apart" mean in its camera); this module draws the class and the jittered size and runs the
rejection loop, in one fixed order of random draws, so every writer stays byte-reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def draw_class_and_size(
    rng: np.random.Generator, table: Mapping[str, Sequence[Any]], jitter: float
) -> tuple[str, np.ndarray]:
    """One class drawn by its weight, and its nominal size jittered.

    Args:
        table: class name -> ``(weight, (3 nominal sizes, metres), ...)``.
        jitter: standard deviation of the per-axis size factor (around 1).

    Returns:
        The class name and its three sizes, each times ``N(1, jitter)``, rounded to centimetres.
    """
    names = list(table)
    weights = np.array([table[n][0] for n in names], dtype=np.float64)
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    return name, np.round(np.array(table[name][1]) * rng.normal(1.0, jitter, 3), 2)


def place_objects(
    rng: np.random.Generator,
    table: Mapping[str, Sequence[Any]],
    *,
    jitter: float,
    wanted: int,
    attempts: int,
    place: Callable[[str, np.ndarray, list[T]], T | None],
) -> list[T]:
    """Rejection sampling of up to ``wanted`` objects in at most ``attempts`` proposals.

    Each proposal draws a class and size (`draw_class_and_size`) and asks
    ``place(name, size, placed)`` for an object at a random pose, or None when it does not fit
    (outside the view, too close to one already ``placed``); ``place`` makes its own draws.
    """
    placed: list[T] = []
    for _ in range(attempts):
        if len(placed) == wanted:
            break
        name, size = draw_class_and_size(rng, table, jitter)
        obj = place(name, size, placed)
        if obj is not None:
            placed.append(obj)
    return placed
