"""Registry of synthetic raw-dataset writers (``mtl-data synth NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol


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
