"""Numeric precision of a step: fp32, bf16 autocast, or fp16 autocast with a gradient scaler.

``bf16`` is the default choice on CUDA GPUs that have it (the same exponent range as fp32, so
no loss scaling); ``fp16`` needs ``GradScaler`` to keep small gradients from flushing to zero.
Losses are computed in fp32 whatever the precision (every task casts its outputs), and
parameters and optimizer states stay fp32 (autocast, not half-precision weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mtl_data.errors import MtlDataError

#: precision name -> autocast dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run.

    Raises:
        MtlDataError: an unknown name, or bf16 on a CUDA GPU without bf16 support.
    """
    if precision not in PRECISIONS:
        raise MtlDataError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MtlDataError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The forward pass's autocast context for ``precision`` (nothing for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler``, enabled for fp16 only (disabled, it passes losses and steps through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
