"""Choosing between the Triton kernel and the plain torch path of an op."""

from __future__ import annotations

import os

import torch

BACKENDS = (None, "auto", "triton", "torch")

# Triton decides at `triton.jit` time (i.e. when the kernel modules are imported) whether a
# kernel is compiled for the GPU or run by its interpreter on CPU tensors, so read the switch once,
# at the same moment.
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """`"triton"` or `"torch"`: None/"auto" picks Triton for CUDA tensors and torch otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in (None, "auto"):
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton" and device.type != "cuda" and not TRITON_INTERPRET:
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 "
            "before importing s2d_fast.kernels to run the Triton kernels on CPU"
        )
    return backend
