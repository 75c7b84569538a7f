"""Choosing between the Triton kernel and the plain torch path of an op."""

from __future__ import annotations

import importlib.util
import os
from contextlib import nullcontext

import torch

BACKENDS = (None, "auto", "triton", "torch")


def triton_interpreted() -> bool:
    """Whether Triton runs its kernels in its interpreter on CPU tensors (TRITON_INTERPRET=1).
    Triton reads the variable when a kernel is defined, i.e. at the first launch of each op."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _find_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


# Whether Triton is installed (a Linux-only dependency); found without importing it, once.
TRITON_AVAILABLE = _find_triton()


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """`"triton"` or `"torch"`: None/"auto" picks Triton for CUDA tensors where Triton is
    installed, and torch otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in (None, "auto"):
        return "triton" if device.type == "cuda" and TRITON_AVAILABLE else "torch"
    if backend == "triton" and not TRITON_AVAILABLE:
        raise RuntimeError("backend='triton' needs Triton, which is not installed (it exists for Linux only); "
                           "use backend='torch' or 'auto'")
    if backend == "triton" and device.type != "cuda" and not triton_interpreted():
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 "
            "before the first call of a kernel to run the Triton kernels on CPU"
        )
    return backend


def device_guard(*tensors: torch.Tensor | None):
    """The context to launch a kernel on these tensors in: their CUDA device made current (a
    launch goes to the current device, which need not be theirs); ValueError if they are on
    different devices. CPU tensors (Triton's interpreter) need no guard."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise ValueError(f"the tensors of one kernel call must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()
