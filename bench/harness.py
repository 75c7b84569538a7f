"""What the benchmarks share: the device to time on, clock synchronisation, medians."""

from __future__ import annotations

import re
import time

import torch

from s2d_fast.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu` or `cuda`; asking for CUDA without it is the user's
    mistake, said in one line."""
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine; use --device cpu (or auto)")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for the device, so that the clock reads what it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_seconds(runners: dict, repeats: int, device: torch.device, warmup_rounds: int = 0,
                        after_round=None) -> dict:
    """Seconds of each call of each runner over `repeats` rounds (after `warmup_rounds` untimed
    ones), the order rotated every round so that no runner always follows the same one and the
    machine's drift spreads over all; `after_round(r)` is called after each timed round."""
    keys = list(runners)
    times = {key: [] for key in keys}
    for r in range(warmup_rounds + repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            sync(device)
            start = time.perf_counter()
            runners[key]()
            sync(device)
            if r >= warmup_rounds:
                times[key].append(time.perf_counter() - start)
        if after_round is not None and r >= warmup_rounds:
            after_round(r - warmup_rounds)
    return times


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


_MODE = re.compile(r"^(eager|compiled)-(fp32|bf16|fp16)(-cl)?$")


def parse_mode(mode: str) -> dict:
    """`compiled-bf16-cl` -> `{"compiled": True, "amp": "bf16", "channels_last": True}`."""
    match = _MODE.match(mode)
    if match is None:
        raise ValueError(f"unknown mode {mode!r}: modes are {{eager|compiled}}-{{fp32|bf16|fp16}}[-cl]")
    kind, precision, cl = match.groups()
    return {"compiled": kind == "compiled", "amp": "none" if precision == "fp32" else precision, "channels_last": bool(cl)}


def matmul_gmacs(device: torch.device, dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    """The machine's roofline for dense work: multiply-adds per second (x 1e9) of a `size`^2
    matmul in `dtype`, median of `repeats` after one warm-up."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return size**3 / median(times) / 1e9
