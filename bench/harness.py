"""What the benchmarks share: the device to time on, clock synchronisation, medians."""

from __future__ import annotations

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


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
