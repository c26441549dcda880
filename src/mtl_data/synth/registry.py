"""Registry of synthetic raw-dataset writers (``mtl-data synth NAME``).

It reads as the other registries: ``@register_synth(name)`` on a writer, ``create_synth(name,
out_dir, seed=...)`` writes the dataset, ``list_synths()`` names them; the ``SYNTHESIZERS``
table behind them stays public.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mtl_data.errors import MtlDataError


class SynthWriter(Protocol):
    def __call__(self, out_dir: Path, *, seed: int = 0) -> None:
        """Write a tiny dataset in the native layout of one source under ``out_dir``."""


SYNTHESIZERS: dict[str, SynthWriter] = {}


def register_synth(name: str) -> Callable[[SynthWriter], SynthWriter]:
    """Register ``fn`` as the synthetic writer for dataset ``name``."""

    def wrap(fn: SynthWriter) -> SynthWriter:
        if name in SYNTHESIZERS:
            raise ValueError(f"synth writer {name!r} registered twice")
        SYNTHESIZERS[name] = fn
        return fn

    return wrap


def list_synths() -> list[str]:
    """The datasets with a synthetic writer, sorted by name."""
    return sorted(SYNTHESIZERS)


def create_synth(name: str, out_dir: Path, *, seed: int = 0) -> None:
    """Write the tiny synthetic dataset ``name`` in its native layout under ``out_dir``.

    Raises:
        MtlDataError: an unknown name (listing the datasets).
    """
    if name not in SYNTHESIZERS:
        raise MtlDataError(f"no synthetic writer for {name!r}; choose from {', '.join(list_synths())}")
    SYNTHESIZERS[name](Path(out_dir), seed=seed)
