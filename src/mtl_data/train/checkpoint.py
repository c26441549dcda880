"""Checkpoints: everything a run needs to continue exactly, loadable with ``weights_only=True``.

A checkpoint is a dict of plain data and tensors (no pickled classes), so ``torch.load(path,
weights_only=True)`` reads it without running code from the file:

=============  ==================================================================================
``format``     ``FORMAT`` (a later layout is refused with a clear message)
``step``       steps completed
``config``     the resolved training config (``config.to_dict``)
``model``      the model's ``state_dict`` (unwrapped from DDP / ``torch.compile``)
``optimizer``  the optimizer's ``state_dict``
``scheduler``  the LR scheduler's ``state_dict``
``scaler``     the ``GradScaler``'s ``state_dict`` (fp16)
``weighting``  the weighting strategy's ``state_dict`` (learned weights, remembered statistics)
``rng``        ``{"torch": ByteTensor, "cuda": [ByteTensor, ...]}``
``loader``     ``{"segment": k, "offset": i}``: the data stream's position (``loop`` module)
``best``       ``{"metric": name, "value": float or None, "step": int}``: what ``best.pt`` holds
``grads``      parameter name -> gradient accumulated but not yet applied (asymmetric mode)
``world_size`` processes that trained it (a resume with another count is refused)
=============  ==================================================================================

Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mtl_data.errors import MtlDataError

FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


def save(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` (``format`` added) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save`` (``weights_only=True``).

    Raises:
        MtlDataError: a missing, unreadable or foreign file, or another ``format``.
    """
    path = Path(path)
    if not path.is_file():
        raise MtlDataError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, runtime) for a damaged file
        # The kind only: torch's text can advise weights_only=False, which would run code from the file.
        raise MtlDataError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}); it may be truncated: resume from another one"
        ) from None
    if not isinstance(state, dict) or "format" not in state:
        raise MtlDataError(f"{path}: not an mtl-train checkpoint")
    if state["format"] != FORMAT:
        raise MtlDataError(f"{path}: checkpoint format {state['format']}, this version reads {FORMAT}")
    return state


def rng_state() -> dict[str, Any]:
    """The random states a step can use (torch's CPU generator, and each CUDA device's)."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
