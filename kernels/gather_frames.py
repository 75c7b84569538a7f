"""Weighted gathers of frames from a clip, scaled and normalised in the same pass.

Bytes moved (forward): each output frame reads its P taps once and is written once,
`B*K*P*C*H*W * frames.itemsize + B*K*C*H*W * out.itemsize` (the index, weights and per-channel
statistics are negligible); see `gather_frames_bytes`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from ._backend import device_guard, resolve_backend

BLOCK = 1024
FRAME_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32)

Stats = torch.Tensor | Sequence[float] | None


def _scale(dtype: torch.dtype) -> float:
    """uint8 pixels are brought to [0, 1]; float frames are taken as they are."""
    return 1.0 / 255.0 if dtype == torch.uint8 else 1.0


def gather_frames_reference(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    mean: Stats = None,
    std: Stats = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Plain torch: gather the `(B, K, P, C, H, W)` taps, scale, weight, sum over P, normalise."""
    if index.dim() == 2:
        index = index.unsqueeze(-1)
        weight = None if weight is None else weight.unsqueeze(-1)
    batch = torch.arange(frames.shape[0], device=frames.device)[:, None, None]
    taps = frames[batch, index].float()
    if frames.dtype == torch.uint8:
        taps = taps / 255
    if weight is not None:
        taps = taps * weight.float()[..., None, None, None]
    out = taps.sum(2)
    if mean is not None:
        mean = torch.as_tensor(mean, dtype=torch.float32, device=frames.device).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32, device=frames.device).view(-1, 1, 1)
        out = (out - mean) / std
    return out.to(out_dtype or torch.float32)


def gather_frames_bytes(
    frames_shape: tuple[int, ...], index_shape: tuple[int, ...], frames_itemsize: int, out_itemsize: int
) -> int:
    """Bytes one gather must move: read every tap once, write every output once."""
    b, _, c, h, w = frames_shape
    k = index_shape[1]
    p = index_shape[2] if len(index_shape) == 3 else 1
    plane = c * h * w
    return b * k * p * plane * frames_itemsize + b * k * plane * out_itemsize


def topk_frame_index(scores: torch.Tensor, k: int, *, sort_by_time: bool = True) -> torch.Tensor:
    """`(B, T)` scores to the `(B, k)` int64 indices of each row's k largest.

    Ties go to the earlier frame (a stable sort, where `torch.topk` promises no order), and the
    indices come ascending in time when `sort_by_time`, else by descending score.
    """
    if scores.dim() != 2:
        raise ValueError(f"topk_frame_index expects scores of shape (B, T), got shape {tuple(scores.shape)}")
    if not 0 <= k <= scores.shape[1]:
        raise ValueError(f"topk_frame_index: k = {k} must be in [0, T = {scores.shape[1]}]")
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return order.sort(dim=1).values if sort_by_time else order


@torch.library.custom_op("s2d_fast::checked_index", mutates_args=())
def checked_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """`index` as contiguous int64, or IndexError if any entry lies outside `[0, size)`.

    An opaque op, so that `torch.compile(fullgraph=True)` keeps the data-dependent check
    without a graph break; on CUDA the check synchronises with the device.
    """
    bad = (index < 0) | (index >= size)
    if bool(bad.any()):
        raise IndexError(
            f"frame index out of range [0, {size}): got values from {int(index.min())} to {int(index.max())}"
        )
    return index.to(torch.int64, memory_format=torch.contiguous_format, copy=True)


@checked_index.register_fake
def _(index, size):
    return torch.empty(index.shape, dtype=torch.int64, device=index.device)


def _index_in_range(index: torch.Tensor, size: int) -> torch.Tensor:
    """`checked_index` for CPU tensors in eager; on a GPU, and under torch.compile, an
    asynchronous assert (a device-side assert on CUDA, a RuntimeError naming the range on the
    CPU) that neither waits for the device nor breaks CUDA graph capture, and that Inductor
    keeps in its generated code."""
    if torch.compiler.is_compiling() or index.device.type != "cpu":
        return assert_in_range(index, size)
    return checked_index(index, size)


def assert_in_range(index: torch.Tensor, size: int) -> torch.Tensor:
    """`index` as contiguous int64, asserting `0 <= index < size` on the device, asynchronously."""
    torch._assert_async(((index >= 0) & (index < size)).all(), f"frame index out of range [0, {size})")
    return index.to(torch.int64).contiguous()


def _gather_frames_torch(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """The torch path: as the reference for sparse taps; for dense ones (K*P >= T, such as the
    sampler's weights over every candidate) one `(B, K, T)` mixing matrix times the clip, which
    reads each frame once instead of materialising the `(B, K, P, C, H, W)` float taps."""
    b, t, c, h, w = frames.shape
    k, p = index.shape[1:]
    if k * p < t:
        return gather_frames_reference(frames, index, weight, mean=mean, std=std, out_dtype=out_dtype)
    taps = torch.ones(index.shape, device=frames.device) if weight is None else weight.float()
    mix = torch.zeros(b, k, t, device=frames.device).scatter_add(2, index, taps)
    out = torch.bmm(mix, frames.reshape(b, t, c * h * w).float()).view(b, k, c, h, w)
    if frames.dtype == torch.uint8:
        out = out / 255
    if mean is not None:
        out = (out - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    return out.to(out_dtype)


@functools.cache
def _gather_kernel():
    """The Triton kernel, defined (and Triton imported) at its first launch."""
    import triton
    import triton.language as tl

    @triton.jit
    def gather_frames_kernel(
        frames_ptr, index_ptr, weight_ptr, mean_ptr, std_ptr, out_ptr,
        T, K, P, frame_numel, plane, scale, stride_b, stride_t,
        HAS_WEIGHT: tl.constexpr, HAS_NORM: tl.constexpr, BLOCK: tl.constexpr,
    ):
        # Axis 0 is one output frame (b, k), axis 1 a block of its C*H*W values. Frames are read
        # where they are: each frame contiguous, the clip and batch at any stride (a view).
        bk = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < frame_numel
        b = bk // K
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for p in range(P):
            idx = tl.load(index_ptr + bk * P + p)
            # The index is checked before the launch; masking here as well means a bad index can
            # never read memory outside the clip.
            ok = (idx >= 0) & (idx < T)
            src = frames_ptr + b.to(tl.int64) * stride_b + idx.to(tl.int64) * stride_t
            v = tl.load(src + offs, mask=mask & ok, other=0).to(tl.float32)
            if HAS_WEIGHT:
                v *= tl.load(weight_ptr + bk * P + p).to(tl.float32)
            acc += v
        acc *= scale
        if HAS_NORM:
            c = offs // plane
            acc = (acc - tl.load(mean_ptr + c, mask=mask, other=0.0)) / tl.load(std_ptr + c, mask=mask, other=1.0)
        tl.store(out_ptr + bk.to(tl.int64) * frame_numel + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)

    return gather_frames_kernel, triton.cdiv


def block_for(frames: torch.Tensor) -> int:
    """Values per program: 16 bytes per thread's load at 4 warps (2048 uint8, 1024 wider)."""
    return 2048 if frames.element_size() == 1 else BLOCK


def frames_in_place(frames: torch.Tensor) -> torch.Tensor:
    """`frames` itself when each `(C, H, W)` frame is contiguous (a view that slices or steps
    over the clip or the batch is read where it is), else a contiguous copy."""
    if frames.numel() and frames[0, 0].is_contiguous():
        return frames
    return frames.contiguous()


def _gather_frames_triton(frames, index, weight, mean, std, out_dtype) -> torch.Tensor:
    kernel, cdiv = _gather_kernel()
    frames = frames_in_place(frames)
    b, t, c, h, w = frames.shape
    k, p = index.shape[1:]
    out = torch.empty((b, k, c, h, w), dtype=out_dtype, device=frames.device)
    block = block_for(frames)
    with device_guard(frames, index, weight, mean, std):
        kernel[(b * k, cdiv(c * h * w, block))](
            frames, index, weight, mean, std, out,
            t, k, p, c * h * w, h * w, _scale(frames.dtype), frames.stride(0), frames.stride(1),
            HAS_WEIGHT=weight is not None, HAS_NORM=mean is not None, BLOCK=block,
        )
    return out


@torch.library.custom_op("s2d_fast::gather_frames", mutates_args=())
def _gather_frames_op(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out_dtype: torch.dtype,
    use_triton: bool,
) -> torch.Tensor:
    return (_gather_frames_triton if use_triton else _gather_frames_torch)(frames, index, weight, mean, std, out_dtype)


@_gather_frames_op.register_fake
def _(frames, index, weight, mean, std, out_dtype, use_triton):
    b, _, c, h, w = frames.shape
    return frames.new_empty((b, index.shape[1], c, h, w), dtype=out_dtype)


def _gather_frames_setup(ctx, inputs, output):
    frames, index, weight, _, std, _, _ = inputs
    ctx.save_for_backward(frames, index, weight, std)


def _gather_frames_backward(ctx, grad):
    """Both gradients are batched matmuls through the `(B, K, T)` mixing matrix, which avoids
    both scatter atomics and a `(B, K, P, C, H, W)` temporary."""
    frames, index, weight, std = ctx.saved_tensors
    b, t, c, h, w = frames.shape
    k = index.shape[1]
    g = grad.float() * _scale(frames.dtype)
    if std is not None:
        g = g / std.view(-1, 1, 1)
    g = g.reshape(b, k, c * h * w)
    grad_frames = grad_weight = None
    if ctx.needs_input_grad[0]:
        taps = torch.ones(index.shape, device=g.device) if weight is None else weight.float()
        mix = torch.zeros(b, k, t, device=g.device).scatter_add(2, index, taps)
        grad_frames = torch.bmm(mix.transpose(1, 2), g).view(frames.shape).to(frames.dtype)
    if weight is not None and ctx.needs_input_grad[2]:
        # d out[b, k] / d weight[b, k, p] is the scaled tap, so dot the gradient with every frame
        # of the clip once and pick each tap's entry.
        dots = torch.bmm(g, frames.reshape(b, t, c * h * w).float().transpose(1, 2))
        grad_weight = dots.gather(2, index).to(weight.dtype)
    return grad_frames, None, grad_weight, None, None, None, None


_gather_frames_op.register_autograd(_gather_frames_backward, setup_context=_gather_frames_setup)


def _check_gather_args(
    op: str, frames: torch.Tensor, index: torch.Tensor, weight: torch.Tensor | None,
    mean: Stats, std: Stats, out_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.dtype]:
    """Validate the arguments shared with `sample_details`; return `(index, weight)` as
    `(B, K, P)` (index checked, int64, contiguous), mean and std as float32 `(C,)`, and out_dtype."""
    if frames.dim() != 5:
        raise ValueError(f"{op} expects frames of shape (B, T, C, H, W), got shape {tuple(frames.shape)}")
    if frames.dtype not in FRAME_DTYPES:
        raise TypeError(f"{op}: frames must be uint8, float16, bfloat16 or float32, got {frames.dtype}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"{op}: index must be an integer tensor, got {index.dtype}")
    if index.dim() not in (2, 3) or index.shape[0] != frames.shape[0]:
        raise ValueError(
            f"{op} expects index of shape (B, K) or (B, K, P) with B = {frames.shape[0]}, got shape {tuple(index.shape)}"
        )
    if weight is not None:
        if weight.shape != index.shape:
            raise ValueError(
                f"{op}: weight must have the shape of index {tuple(index.shape)}, got {tuple(weight.shape)}"
            )
        if not weight.is_floating_point():
            raise TypeError(f"{op}: weight must be a float tensor, got {weight.dtype}")
    if (mean is None) != (std is None):
        raise ValueError(f"{op}: mean and std must be given together")
    out_dtype = out_dtype or torch.float32
    if not out_dtype.is_floating_point:
        raise TypeError(f"{op}: out_dtype must be a float dtype, got {out_dtype}")
    for name, tensor in (("index", index), ("weight", weight)):
        if tensor is not None and tensor.device != frames.device:
            raise ValueError(f"{op}: {name} is on {tensor.device} but frames are on {frames.device}")
    c = frames.shape[2]
    if mean is not None:
        mean = torch.as_tensor(mean, dtype=torch.float32, device=frames.device).reshape(-1).contiguous()
        std = torch.as_tensor(std, dtype=torch.float32, device=frames.device).reshape(-1).contiguous()
        if mean.numel() != c or std.numel() != c:
            raise ValueError(f"{op}: mean and std need one value per channel ({c}), got {mean.numel()} and {std.numel()}")
    if index.dim() == 2:
        index = index.unsqueeze(-1)
        weight = None if weight is None else weight.unsqueeze(-1)
    index = _index_in_range(index, frames.shape[1])
    weight = None if weight is None else weight.contiguous()
    return index, weight, mean, std, out_dtype


def gather_frames(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    mean: Stats = None,
    std: Stats = None,
    out_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """`out[b, k] = sum_p weight[b, k, p] * frames[b, index[b, k, p]]`, accumulated in float32.

    `frames (B, T, C, H, W)` uint8 (scaled by 1/255 first), float16, bfloat16 or float32;
    `index (B, K)` or `(B, K, P)` integer, each in `[0, T)` (else IndexError); `weight` of the
    shape of `index`, or None for all ones. With per-channel `mean` and `std` the result is
    `(out - mean) / std`. Returns `(B, K, C, H, W)` in `out_dtype` (float32 by default).
    Differentiable with respect to float `frames` and to `weight`. `backend`: None/"auto"
    (Triton for CUDA tensors, torch otherwise), "triton" or "torch". Eager calls go through the
    custom op `s2d_fast::gather_frames` (what tracers record); it is plain torch ops under
    torch.compile (any device, unless `backend="triton"`) and when autograd differentiates the
    torch path.
    """
    index, weight, mean, std, out_dtype = _check_gather_args(
        "gather_frames", frames, index, weight, mean, std, out_dtype
    )
    use_triton = resolve_backend(backend, frames.device) == "triton"
    # Under torch.compile plain torch, for Inductor to fuse on any device, unless Triton is named.
    if (torch.compiler.is_compiling() and backend != "triton") or (not use_triton and _needs_grad(frames, weight)):
        return _gather_frames_torch(frames, index, weight, mean, std, out_dtype)
    return _gather_frames_op(frames, index, weight, mean, std, out_dtype, use_triton)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will differentiate through these inputs: the torch path is then left to
    torch's own autograd, whose sums are in the order its matmuls take (the op's backward adds
    them up otherwise, to the last bits)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
