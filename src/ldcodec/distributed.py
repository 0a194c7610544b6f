"""Data-parallel processes under ``torchrun``: which process this is, and the process group.

``torchrun`` (PyTorch's launcher; its ``--nnodes``, ``--node_rank``, ``--rdzv_*`` flags do the
multi-node rendezvous) starts one process per device and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``. :func:`join` reads them and joins the default process group: gloo for CPU
training, NCCL for CUDA. Without them it is one process (rank 0 of 1) and no group is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import LdcodecError


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` training processes; rank 0 logs and checkpoints."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def main(self) -> bool:
        return self.rank == 0


def size() -> int:
    """The number of training processes torchrun started (1 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise LdcodecError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer: launch with torchrun") from None


def join(device: str) -> tuple[World, str]:
    """Join the torchrun process group if launched by torchrun; returns the world and this process's device.

    Under torchrun, ``--device cuda`` means the GPU of this process's ``LOCAL_RANK``.
    """
    if "WORLD_SIZE" not in os.environ:
        return World(), device
    try:
        rank, size, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError):
        raise LdcodecError("WORLD_SIZE is set but RANK/LOCAL_RANK are not integers: launch with torchrun") from None
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is not None and size > 1:
            raise LdcodecError(f"--device {device} under torchrun: give --device cuda, each process then uses "
                               f"the GPU of its LOCAL_RANK")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return World(rank, size, local, backend), device


def is_main() -> bool:
    """Whether this is the process that logs and checkpoints (rank 0, or the only one)."""
    return os.environ.get("RANK", "0") == "0"


def leave() -> None:
    """Destroy the process group if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here."""
    dist.barrier()


def all_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """Mean of a tensor over all processes (``values`` itself for one process)."""
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def all_min(value: torch.Tensor, world: World) -> torch.Tensor:
    """Minimum of a tensor over all processes."""
    if world.size > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value
