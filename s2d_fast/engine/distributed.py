"""Distributed data parallel: torchrun (one or many machines) or `NUM_GPUS N` on one machine.

Under torchrun the usual variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
say who this process is. `NUM_GPUS N > 1` without them spawns N processes here, as the paper's
`NUM_GPUS 2` does (`DIST.DEVICE cpu` spawns them on the CPU). NCCL joins GPUs, gloo joins CPU
processes (so it runs on any machine). Every collective has a timeout (DIST.TIMEOUT): a rank
that dies makes the others fail, not hang.

Every launch path returns an `Outcome`: the main rank's result, and whether this process is
the one that reports it (the single process, torchrun's rank 0, or the parent of spawned
processes), so that a command prints its result once and exits 0 on every rank.
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s2d_fast.config import ConfigError, uses_gpus
from s2d_fast.errors import UserError


@dataclass(frozen=True)
class Outcome:
    """What a launch gives each process: the main rank's `value` where this process `reports`
    (None elsewhere)."""

    value: Any
    reports: bool


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
    if not uses_gpus(cfg):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"NUM_GPUS {cfg.NUM_GPUS} asks for GPUs, but CUDA is not available on this machine; "
            "set NUM_GPUS 0 to run on the CPU (or DIST.DEVICE cpu to run NUM_GPUS processes on it)"
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


def _spawned(local_rank: int, world: int, port: int, results: str, fn: Callable, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    if not torch.cuda.is_available():  # CPU processes share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        outcome = {"value": fn(*args)}
    except UserError as err:  # shown as the user's mistake by the parent, not as a child's traceback
        outcome = {"error": str(err)}
    if local_rank == 0 or "error" in outcome:
        Path(results, f"rank{local_rank}.pkl").write_bytes(pickle.dumps(outcome))
    if "error" in outcome:
        raise SystemExit(1)


def _spawn(cfg, fn: Callable, args: tuple):
    """Rank 0's result of `fn(*args)` in NUM_GPUS spawned processes; a user's mistake in any of
    them is raised here as a UserError with its message."""
    with tempfile.TemporaryDirectory(prefix="s2d-fast-spawn-") as results:
        try:
            mp.spawn(_spawned, args=(cfg.NUM_GPUS, _free_port(), results, fn, args), nprocs=cfg.NUM_GPUS, join=True)
        except mp.ProcessExitedException:
            pass  # a rank that met a user error exits 1 after writing it; read below
        written = sorted(Path(results).glob("rank*.pkl"), key=lambda p: int(p.stem[4:]))
        outcomes = [pickle.loads(path.read_bytes()) for path in written]
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        raise UserError(errors[0])
    if not outcomes:
        raise RuntimeError("the spawned processes ended without a result")
    return outcomes[0]["value"]


def launch(cfg, fn: Callable, *args) -> Outcome:
    """Run `fn(*args)` in this process, or in NUM_GPUS spawned processes when the config asks
    for several and torchrun did not start us."""
    if cfg.NUM_GPUS > 1 and "WORLD_SIZE" not in os.environ:
        if uses_gpus(cfg) and (not torch.cuda.is_available() or torch.cuda.device_count() < cfg.NUM_GPUS):
            _device(cfg, 0)  # raises the clear error
        return Outcome(_spawn(cfg, fn, args), reports=True)
    value = fn(*args)
    reports = int(os.environ.get("RANK", "0")) == 0
    return Outcome(value if reports else None, reports)


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
