"""TSM's temporal shift: a fold of channels looks one frame ahead, the next fold one frame back.

Bytes moved (forward, and the backward alike): every output element is written once and every
element that is not shifted in from beyond the clip is read once,
`(2 * numel - 2 * N * fold * H * W) * itemsize`; see `temporal_shift_bytes`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._backend import device_guard, resolve_backend

BLOCK = 1024


def temporal_shift_reference(x: torch.Tensor, n_segment: int, fold_div: int = 8) -> torch.Tensor:
    """TSM's reference shift (Lin et al., `ops/temporal_shift.py`): zeros, then three slice copies."""
    nt, c, h, w = x.size()
    n_batch = nt // n_segment
    x = x.view(n_batch, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]  # shift right
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]  # not shift
    return out.view(nt, c, h, w)


def temporal_shift_bytes(shape: tuple[int, int, int, int], n_segment: int, fold_div: int, itemsize: int) -> int:
    """Bytes one shift (or its backward) must move: read the kept values, write every output."""
    nt, c, h, w = shape
    fold = c // fold_div
    numel = nt * c * h * w
    # Each clip's boundary frame has `fold` channels per direction that nothing is read for.
    zeroed = (nt // n_segment) * 2 * fold * h * w
    return (2 * numel - zeroed) * itemsize


def _dense(x: torch.Tensor) -> torch.Tensor:
    """`x` if it is contiguous or channels_last (the layouts the shift preserves), else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _shift_torch(x: torch.Tensor, n_segment: int, fold: int, reverse: bool) -> torch.Tensor:
    """One pass: every output element is written exactly once (the reference writes the zeros first).

    `reverse` swaps the two directions, which is the backward of the forward shift. Plain torch
    ops (slice copies autograd can differentiate), so that torch.compile sees through it.
    """
    x = _dense(x)
    nt, c, h, w = x.shape
    out = torch.empty_like(x)  # preserves contiguous / channels_last strides
    xv = x.view(nt // n_segment, n_segment, c, h, w)
    ov = out.view(nt // n_segment, n_segment, c, h, w)
    ahead, back = slice(0, fold), slice(fold, 2 * fold)
    if reverse:
        ahead, back = back, ahead
    ov[:, :-1, ahead] = xv[:, 1:, ahead]
    ov[:, -1, ahead] = 0
    ov[:, 1:, back] = xv[:, :-1, back]
    ov[:, 0, back] = 0
    ov[:, :, 2 * fold :] = xv[:, :, 2 * fold :]
    return out


def _shift_traceable(x: torch.Tensor, n_segment: int, fold: int) -> torch.Tensor:
    """The form torch.compile is given: the two shifted folds padded with a zero frame and
    concatenated with the kept channels, along the innermost dimension of x's layout. Inductor
    turns it into one fused pass that writes every output once and keeps x's memory format; its
    autograd derives the backward. (The slice assignments of `_shift_torch` compile to several
    passes over the output: TSM-ResNet-50 8x224 bf16 channels_last ran 1.5x slower with them,
    1.08x the unshifted network with this form; `bench/shift_compiled.py`.)"""
    x = _dense(x)
    nt, c, h, w = x.shape
    # Channels_last memory is (N*T, H, W, C): cut and join C where it is contiguous.
    channels_last = not x.is_contiguous()
    xv = x.permute(0, 2, 3, 1) if channels_last else x
    xv = xv.reshape(nt // n_segment, n_segment, *xv.shape[1:])
    dim = -1 if channels_last else 2
    time_pad = [0, 0] * (xv.dim() - 2)  # F.pad counts from the last dimension; time is dim 1

    def fold_slice(start: int, stop: int) -> tuple:
        return (slice(None),) * dim + (slice(start, stop),) if dim >= 0 else (..., slice(start, stop))

    ahead = F.pad(xv[:, 1:][fold_slice(0, fold)], time_pad + [0, 1])
    back = F.pad(xv[:, :-1][fold_slice(fold, 2 * fold)], time_pad + [1, 0])
    out = torch.cat([ahead, back, xv[fold_slice(2 * fold, None)]], dim=dim).reshape(nt, *xv.shape[2:])
    return out.permute(0, 3, 1, 2) if channels_last else out


@functools.cache
def _shift_kernel():
    """The Triton kernel, defined (and Triton imported) at its first launch: the torch path
    needs no Triton, which exists on Linux only."""
    import triton
    import triton.language as tl

    @triton.jit
    def temporal_shift_kernel(
        x_ptr, out_ptr, n_segment, frame_numel, fold_numel,
        C: tl.constexpr, FOLD: tl.constexpr, CHANNELS_LAST: tl.constexpr, REVERSE: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # Axis 0 walks frames (n * n_segment + t), axis 1 blocks within a frame, so the per-element
        # index arithmetic stays in 32 bits. Which frame an element comes from must be provably
        # constant over a vector for the loads to be 16 bytes wide: contiguous frames compare the
        # flat offset with the folds' extent (fold * H * W, which Triton sees divisible by 16 at
        # every TSM shape); channels_last ones take C and the fold as constants.
        frame = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < frame_numel
        if CHANNELS_LAST:
            c = offs % C
            dt = tl.where(c < FOLD, 1, tl.where(c < 2 * FOLD, -1, 0))
        else:
            dt = tl.where(offs < fold_numel, 1, tl.where(offs < 2 * fold_numel, -1, 0))
        if REVERSE:
            dt = -dt
        src_t = frame % n_segment + dt
        # What would come from beyond either end of the clip reads nothing and stores zero.
        valid = mask & (src_t >= 0) & (src_t < n_segment)
        base = frame.to(tl.int64) * frame_numel
        v = tl.load(x_ptr + base + dt * frame_numel + offs, mask=valid, other=0)
        tl.store(out_ptr + base + offs, v, mask=mask)

    return temporal_shift_kernel, triton.cdiv


def _shift_triton(x: torch.Tensor, n_segment: int, fold: int, reverse: bool) -> torch.Tensor:
    kernel, cdiv = _shift_kernel()
    x = _dense(x)
    nt, c, h, w = x.shape
    out = torch.empty_like(x)
    frame_numel = c * h * w
    # 1x1 planes are both layouts at once; the contiguous form needs no constants.
    channels_last = not x.is_contiguous()
    with device_guard(x):
        kernel[(nt, cdiv(frame_numel, BLOCK))](
            x, out, n_segment, frame_numel, fold * h * w,
            C=c if channels_last else 1, FOLD=fold if channels_last else 0, CHANNELS_LAST=channels_last,
            REVERSE=reverse, BLOCK=BLOCK,
        )
    return out


def temporal_shift_impl(x: torch.Tensor, n_segment: int, fold: int, reverse: bool, use_triton: bool) -> torch.Tensor:
    """What the custom op runs: the Triton kernel or the one-pass torch path."""
    return (_shift_triton if use_triton else _shift_torch)(x, n_segment, fold, reverse)


_temporal_shift_op = torch.library.custom_op("s2d_fast::temporal_shift", temporal_shift_impl, mutates_args=())


@_temporal_shift_op.register_fake
def _(x, n_segment, fold, reverse, use_triton):
    return torch.empty_like(_dense(x))


def _temporal_shift_setup(ctx, inputs, output):
    _, ctx.n_segment, ctx.fold, ctx.reverse, ctx.use_triton = inputs


def _temporal_shift_backward(ctx, grad):
    return _temporal_shift_op(grad, ctx.n_segment, ctx.fold, not ctx.reverse, ctx.use_triton), None, None, None, None


_temporal_shift_op.register_autograd(_temporal_shift_backward, setup_context=_temporal_shift_setup)


def temporal_shift(
    x: torch.Tensor, n_segment: int, fold_div: int = 8, *, backend: str | None = None
) -> torch.Tensor:
    """TSM's temporal shift of `x (N*T, C, H, W)`, frames grouped in clips of `n_segment`.

    With `fold = C // fold_div`, channels `[0, fold)` take frame t+1's values, `[fold, 2*fold)`
    frame t-1's, the rest are kept; what would come from beyond the clip is zero. Same result
    as `temporal_shift_reference`, with the shape, dtype and memory format (contiguous or
    channels_last; any other layout comes back contiguous) of `x`. Differentiable: the backward
    is the opposite shift. `backend`: None/"auto" (Triton for CUDA tensors, torch otherwise),
    "triton" or "torch". Eager calls go through the custom op `s2d_fast::temporal_shift` (one
    pass, forward and backward; what fvcore's and torch's tracers record); under torch.compile
    (on any device, unless `backend="triton"` asks for the Triton kernel itself) it is plain
    torch ops for Inductor to fuse and to generate code for.
    """
    if x.dim() != 4:
        raise ValueError(f"temporal_shift expects x of shape (N*T, C, H, W), got shape {tuple(x.shape)}")
    if n_segment < 1 or fold_div < 1:
        raise ValueError(f"temporal_shift needs n_segment >= 1 and fold_div >= 1, got {n_segment} and {fold_div}")
    if x.shape[0] % n_segment != 0:
        raise ValueError(f"temporal_shift: N*T = {x.shape[0]} is not divisible by n_segment = {n_segment}")
    fold = x.shape[1] // fold_div
    if torch.compiler.is_compiling() and backend != "triton":
        return _shift_traceable(x, n_segment, fold)
    return _temporal_shift_op(x, n_segment, fold, False, resolve_backend(backend, x.device) == "triton")
