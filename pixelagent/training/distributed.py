"""Process-group setup under torchrun (torch.distributed: gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``torchrun`` sets the variables)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_process_group(world: World, backend: str, device: str) -> None:
    """Join the group torchrun started; ``backend="auto"`` picks nccl for CUDA, gloo otherwise."""
    if not world.distributed or dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)


def barrier(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: str) -> str:
    """``auto`` → this rank's CUDA device when there is one, else CPU."""
    if device != "auto":
        return device
    return f"cuda:{world.local_rank}" if torch.cuda.is_available() else "cpu"
