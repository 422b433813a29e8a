"""Process-group helpers for training under `torchrun`.

torchrun starts one process per device and sets RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Without those
variables everything here degrades to a single process, so the same training
code runs with `python -m ...`, `budget-edge ...` and `torchrun ... -m ...`.
gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from budget_edge.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among world_size, and its device."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    owns_group: bool = False  # this process group was started by init_distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints and writes files."""
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def pick_device(requested: str, local_rank: int) -> torch.device:
    """`auto`: the local GPU if there is one, else the CPU."""
    if requested not in DEVICES:
        raise ConfigError(f"unknown device {requested!r}; use one of {', '.join(DEVICES)}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but torch sees no CUDA GPU; use --device cpu")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU (this machine has "
            f"{torch.cuda.device_count()}); start torchrun with fewer processes per node"
        )
    return torch.device("cuda", local_rank)


def init_distributed(requested_device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one, and pick this rank's device.

    `shutdown` leaves the group again; call it when the work is done.
    """
    world_size = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", 0)
    local_world_size = env_int("LOCAL_WORLD_SIZE", world_size)
    device = pick_device(requested_device, local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns = True
    return DistContext(rank, world_size, local_rank, local_world_size, device, owns)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if init_distributed started it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def cpu_threads(ctx: DistContext, requested: int = 0) -> int:
    """Intra-op threads for this process: `requested`, or the CPU cores this
    process may use shared evenly among the processes on this machine.

    Oversubscribing cores is far worse than leaving one idle: OpenMP threads
    spin while they wait for each other.
    """
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, ctx.local_world_size))


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op in a single process)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sync_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last
    training step every rank holds statistics updated by its own last batch.
    Evaluating or saving after this makes all ranks hold the same model.
    """
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def all_gather_objects(value: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `value`, in rank order (one-element list in a single process)."""
    if not ctx.distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
