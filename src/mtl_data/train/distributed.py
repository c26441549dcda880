"""Processes and devices: one process per device, started by ``torchrun`` for DDP.

``setup(device)`` reads the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), initialises the process group when there is
more than one process (NCCL on CUDA, gloo on CPU) and picks this process's device. Collectives
used by the trainer are wrapped here so that a single process needs no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mtl_data.errors import MtlDataError


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the training processes.

    Attributes:
        rank, world_size: data-parallel rank and number of processes.
        local_rank: rank on this machine (selects the CUDA device).
        device: the torch device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` -> the local
    rank's GPU; anything else as torch reads it.

    Raises:
        MtlDataError: CUDA asked for but not available, or a device torch does not know.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except RuntimeError as exc:
        raise MtlDataError(f"device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MtlDataError(f"device {name!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return device


def setup(device: str = "auto") -> DistInfo:
    """This process's ``DistInfo``; initialises the process group under ``torchrun``.

    Raises:
        MtlDataError: a bad device, or an inconsistent ``torchrun`` environment.
    """
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not 0 <= rank < world:
        raise MtlDataError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    torch_device = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, torch_device)


def teardown() -> None:
    """Destroy the process group if this process made one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``tensor`` over every process (in place; itself on one process)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` on one process."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
