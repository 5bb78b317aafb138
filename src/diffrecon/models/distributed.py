"""Data-parallel training processes: the environment ``torchrun`` sets, and the few collectives
the training loop needs.

``torchrun --nproc_per_node N`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (plus the rendezvous address) in their environment; without them a process is
rank 0 of 1 and nothing here communicates. :func:`setup` initialises the process group once
(NCCL for CUDA, gloo for CPU) and returns each process's device (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def environment() -> DistEnv:
    """Rank, world size and local rank from ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (0, 1, 0 when unset)."""
    env = DistEnv(_int_env("RANK", 0), _int_env("WORLD_SIZE", 1), _int_env("LOCAL_RANK", 0))
    if env.world < 1 or not 0 <= env.rank < env.world or env.local_rank < 0:
        raise ValueError(f"environment RANK={env.rank}, WORLD_SIZE={env.world}, LOCAL_RANK={env.local_rank} "
                         "is not a valid process layout")
    return env


def setup(device: str | torch.device) -> tuple[DistEnv, torch.device]:
    """Initialise the process group (once) when started by ``torchrun``; return the environment and
    this process's device: ``cuda:LOCAL_RANK`` for a CUDA ``device``, ``device`` otherwise."""
    env = environment()
    device = torch.device(device)
    if not env.distributed:
        return env, device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise ValueError(f"process {env.rank} of {env.world} needs GPU {env.local_rank}, this node has {count}: "
                             "lower train.gpus or request more GPUs")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world,
                                timeout=datetime.timedelta(minutes=30))
    elif dist.get_world_size() != env.world:
        raise ValueError(f"process group of {dist.get_world_size()} processes, environment says {env.world}")
    return env, device


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if active():
        dist.barrier()


def from_main(fn):
    """``fn()`` evaluated on rank 0 only; every process gets its (picklable) result. An exception on
    rank 0 is raised in every process (as :class:`ValueError` with its message elsewhere)."""
    if not active():
        return fn()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", fn())]
        except Exception as exc:          # every process must leave the collective below
            box = [("error", exc)]
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        if dist.get_rank() == 0:
            raise value
        raise ValueError(str(value)) from None
    return value


def mean_of(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over the processes (itself in a single process)."""
    if not active():
        return value
    out = value.detach().clone().float()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def teardown() -> None:
    """Destroy the process group (end of a ``torchrun`` entry point)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
