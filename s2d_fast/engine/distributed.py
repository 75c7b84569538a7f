"""Distributed data parallel: torchrun (one or many machines) or `NUM_GPUS N` on one machine.

Under torchrun the usual variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
say who this process is. `NUM_GPUS N > 1` without them spawns N processes here, as the paper's
`NUM_GPUS 2` does. NCCL joins GPUs, gloo joins CPU processes (so it runs on any machine). Every
collective has a timeout (DIST.TIMEOUT): a rank that dies makes the others fail, not hang.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s2d_fast.config import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(cfg, local_rank: int) -> torch.device:
    if cfg.NUM_GPUS == 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"NUM_GPUS {cfg.NUM_GPUS} asks for GPUs, but CUDA is not available on this machine; "
            "set NUM_GPUS 0 to run on the CPU"
        )
    if cfg.NUM_GPUS > torch.cuda.device_count():
        raise ConfigError(f"NUM_GPUS {cfg.NUM_GPUS}, but this machine has {torch.cuda.device_count()} GPUs")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(cfg) -> DistContext:
    """Join the process group named by the environment, if any; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=cfg.DIST.TIMEOUT))
    return DistContext(rank, world, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    fn(*args)


def launch(cfg, fn: Callable, *args):
    """Run `fn(*args)` in this process, or in NUM_GPUS spawned processes when the config asks
    for several GPUs and torchrun did not start us. Returns what rank 0's call returned when
    run here; spawned runs return None (their results are in the output folder)."""
    if cfg.NUM_GPUS > 1 and "WORLD_SIZE" not in os.environ:
        if not torch.cuda.is_available() or torch.cuda.device_count() < cfg.NUM_GPUS:
            _device(cfg, 0)  # raises the clear error
        # One failing process makes spawn terminate the others and raise here.
        mp.spawn(_spawned, args=(cfg.NUM_GPUS, _free_port(), fn, args), nprocs=cfg.NUM_GPUS, join=True)
        return None
    return fn(*args)


def all_gather_objects(obj, ctx: DistContext) -> list:
    """Every rank's `obj`, in rank order (just `[obj]` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if `flag` is true on any (e.g. a stop request seen by one rank)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
