"""The detail sampler's inference fast path: temporal taps, bilinear zoom window and
normalisation of every detail frame in one pass over the uint8 clip.

Bytes moved: every output is written once, and each detail frame reads, per tap, the pixels
its window touches (at most two per sample and axis, within the frame):
`B*K*C*S*S * out.itemsize + sum_{b,k} P * C * rows(b,k) * cols(b,k) * frames.itemsize`;
see `sample_details_bytes`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._backend import device_guard, resolve_backend
from .gather_frames import Stats, _check_gather_args, _needs_grad, _scale, frames_in_place, gather_frames_reference

# Outputs per program: its bilinear arithmetic holds about 100 registers a thread, so 512 (4
# per thread at 4 warps) keeps more programs resident than 1024.
BLOCK = 512


def _positions(centers: torch.Tensor, strides: torch.Tensor, out_size: int) -> torch.Tensor:
    """`(B, K, out_size, 2)` sample positions `center + (i - (out_size-1)/2) * stride` in pixels."""
    i = torch.arange(out_size, device=centers.device, dtype=torch.float64) - (out_size - 1) / 2
    return centers.double().unsqueeze(2) + i[:, None] * strides.double().unsqueeze(2)


def sample_details_reference(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None,
    centers: torch.Tensor,
    strides: torch.Tensor,
    out_size: int,
    *,
    mean: Stats = None,
    std: Stats = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`gather_frames_reference`, then `grid_sample` (bilinear, zero padding, align_corners=True).

    The zoom runs in float64 so that the reference's own rounding (pixel to normalised
    coordinates and back) stays far below the kernel's.
    """
    mixed = gather_frames_reference(frames, index, weight, mean=mean, std=std)
    b, k, c, h, w = mixed.shape
    pos = _positions(centers, strides, out_size)
    # align_corners=True puts pixel 0 at -1 and pixel size-1 at +1.
    gx = pos[..., 0] * (2 / (w - 1)) - 1
    gy = pos[..., 1] * (2 / (h - 1)) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)
    out = F.grid_sample(
        mixed.double().flatten(0, 1), grid.flatten(0, 1), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.view(b, k, c, out_size, out_size).to(out_dtype or torch.float32)


def sample_details_bytes(
    frames_shape: tuple[int, ...],
    index_shape: tuple[int, ...],
    centers: torch.Tensor,
    strides: torch.Tensor,
    out_size: int,
    frames_itemsize: int,
    out_itemsize: int,
) -> int:
    """Bytes one call must move: its outputs once, and per tap the window's footprint in the frame."""
    b, _, c, h, w = frames_shape
    p = index_shape[2] if len(index_shape) == 3 else 1
    pos = _positions(centers, strides, out_size)
    footprint = torch.ones(centers.shape[:2], dtype=torch.float64, device=centers.device)
    for axis, size in ((0, w), (1, h)):
        first = pos[..., 0, axis].floor().clamp(0, size - 1)
        last = (pos[..., -1, axis].floor() + 1).clamp(0, size - 1)
        span = (last - first).abs() + 1
        footprint = footprint * torch.minimum(span, torch.full_like(span, 2 * out_size))
    reads = int(footprint.sum().item()) * p * c * frames_itemsize
    return reads + b * index_shape[1] * c * out_size * out_size * out_itemsize


@functools.cache
def _sample_kernel():
    """The Triton kernel, defined (and Triton imported) at its first launch."""
    import triton
    import triton.language as tl

    @triton.jit
    def sample_details_kernel(
        frames_ptr, index_ptr, weight_ptr, centers_ptr, strides_ptr, mean_ptr, std_ptr, out_ptr,
        T, K, P, C, H, W, S, scale, stride_b, stride_t,
        HAS_WEIGHT: tl.constexpr, HAS_NORM: tl.constexpr, BLOCK: tl.constexpr,
    ):
        # Axis 0 is one detail frame (b, k), axis 1 a block of its C*S*S outputs.
        bk = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < C * S * S
        c = offs // (S * S)
        i = (offs // S) % S
        j = offs % S
        half = (S - 1) * 0.5
        x = tl.load(centers_ptr + bk * 2).to(tl.float32) + (j - half) * tl.load(strides_ptr + bk * 2).to(tl.float32)
        y = tl.load(centers_ptr + bk * 2 + 1).to(tl.float32) + (i - half) * tl.load(strides_ptr + bk * 2 + 1).to(tl.float32)
        # A NaN centre or stride gives NaN, as grid_sample does (the clamps below would drop it).
        lost = (x != x) | (y != y)
        # Beyond one pixel outside the frame every corner is padding, so clamping there changes no
        # weight and keeps the integer conversion in range.
        x = tl.minimum(tl.maximum(x, -2.0), W + 1.0)
        y = tl.minimum(tl.maximum(y, -2.0), H + 1.0)
        x0f = tl.floor(x)
        y0f = tl.floor(y)
        wx1 = x - x0f
        wy1 = y - y0f
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        in_x0 = (x0 >= 0) & (x0 < W)
        in_x1 = (x0 + 1 >= 0) & (x0 + 1 < W)
        in_y0 = (y0 >= 0) & (y0 < H)
        in_y1 = (y0 + 1 >= 0) & (y0 + 1 < H)
        w00 = tl.where(in_y0 & in_x0, (1 - wy1) * (1 - wx1), 0.0)
        w01 = tl.where(in_y0 & in_x1, (1 - wy1) * wx1, 0.0)
        w10 = tl.where(in_y1 & in_x0, wy1 * (1 - wx1), 0.0)
        w11 = tl.where(in_y1 & in_x1, wy1 * wx1, 0.0)
        pix = (c * H + y0) * W + x0
        b = bk // K
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for p in range(P):
            idx = tl.load(index_ptr + bk * P + p)
            ok = mask & (idx >= 0) & (idx < T)
            src = frames_ptr + b.to(tl.int64) * stride_b + idx.to(tl.int64) * stride_t + pix
            v = w00 * tl.load(src, mask=ok & in_y0 & in_x0, other=0).to(tl.float32)
            v += w01 * tl.load(src + 1, mask=ok & in_y0 & in_x1, other=0).to(tl.float32)
            v += w10 * tl.load(src + W, mask=ok & in_y1 & in_x0, other=0).to(tl.float32)
            v += w11 * tl.load(src + W + 1, mask=ok & in_y1 & in_x1, other=0).to(tl.float32)
            if HAS_WEIGHT:
                v *= tl.load(weight_ptr + bk * P + p).to(tl.float32)
            acc += v
        acc *= scale
        if HAS_NORM:
            # Padding is zero after normalisation (as grid_sample on the normalised frames), so only
            # the corners inside the frame carry the mean.
            inside = w00 + w01 + w10 + w11
            m = tl.load(mean_ptr + c, mask=mask, other=0.0)
            acc = (acc - m * inside) / tl.load(std_ptr + c, mask=mask, other=1.0)
        acc = tl.where(lost, float("nan"), acc)
        tl.store(out_ptr + bk.to(tl.int64) * C * S * S + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)

    return sample_details_kernel, triton.cdiv


def _sample_details_triton(frames, index, weight, centers, strides, out_size, mean, std, out_dtype) -> torch.Tensor:
    kernel, cdiv = _sample_kernel()
    frames = frames_in_place(frames)
    b, t, c, h, w = frames.shape
    k, p = index.shape[1:]
    out = torch.empty((b, k, c, out_size, out_size), dtype=out_dtype, device=frames.device)
    with device_guard(frames, index, weight, centers, strides, mean, std):
        kernel[(b * k, cdiv(c * out_size * out_size, BLOCK))](
            frames, index, weight, centers.contiguous(), strides.contiguous(), mean, std, out,
            t, k, p, c, h, w, out_size, _scale(frames.dtype), frames.stride(0), frames.stride(1),
            HAS_WEIGHT=weight is not None, HAS_NORM=mean is not None, BLOCK=BLOCK,
        )
    return out


def _sample_details_torch(frames, index, weight, centers, strides, out_size, mean, std, out_dtype) -> torch.Tensor:
    return sample_details_reference(frames, index, weight, centers, strides, out_size, mean=mean, std=std,
                                    out_dtype=out_dtype)


@torch.library.custom_op("s2d_fast::sample_details", mutates_args=())
def _sample_details_op(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None,
    centers: torch.Tensor,
    strides: torch.Tensor,
    out_size: int,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out_dtype: torch.dtype,
    use_triton: bool,
) -> torch.Tensor:
    impl = _sample_details_triton if use_triton else _sample_details_torch
    return impl(frames, index, weight, centers, strides, out_size, mean, std, out_dtype)


@_sample_details_op.register_fake
def _(frames, index, weight, centers, strides, out_size, mean, std, out_dtype, use_triton):
    b, _, c, _, _ = frames.shape
    return frames.new_empty((b, index.shape[1], c, out_size, out_size), dtype=out_dtype)


def sample_details(
    frames: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor | None,
    centers: torch.Tensor,
    strides: torch.Tensor,
    out_size: int,
    *,
    mean: Stats = None,
    std: Stats = None,
    out_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Detail frames `(B, K, C, out_size, out_size)` from a clip, in one pass (forward only).

    Temporal taps exactly as `gather_frames(frames, index, weight, mean=mean, std=std)`, then
    per detail frame (b, k) a bilinear window: output row i, column j samples the mixed frame at
    `x = centers[b,k,0] + (j - (out_size-1)/2) * strides[b,k,0]`,
    `y = centers[b,k,1] + (i - (out_size-1)/2) * strides[b,k,1]`,
    in pixel coordinates where pixel p's centre is at p (`grid_sample` with align_corners=True
    after normalising by size-1). Corners outside the frame read zero *after* normalisation,
    as `grid_sample`'s zero padding on the normalised frames. H and W must be at least 2.
    Equal to `sample_details_reference`. `backend`: None/"auto", "triton" or "torch".
    """
    index, weight, mean, std, out_dtype = _check_gather_args(
        "sample_details", frames, index, weight, mean, std, out_dtype
    )
    b, k = index.shape[:2]
    if frames.shape[3] < 2 or frames.shape[4] < 2:
        raise ValueError(f"sample_details needs frames of at least 2x2 pixels, got {tuple(frames.shape[3:])}")
    for name, v in (("centers", centers), ("strides", strides)):
        if v.shape != (b, k, 2) or not v.is_floating_point():
            raise ValueError(f"sample_details: {name} must be float of shape ({b}, {k}, 2), got {v.dtype} {tuple(v.shape)}")
        if v.device != frames.device:
            raise ValueError(f"sample_details: {name} is on {v.device} but frames are on {frames.device}")
    if out_size < 1:
        raise ValueError(f"sample_details: out_size must be positive, got {out_size}")
    use_triton = resolve_backend(backend, frames.device) == "triton"
    if not use_triton and (torch.compiler.is_compiling() or _needs_grad(frames, weight, centers, strides)):
        return _sample_details_torch(frames, index, weight, centers, strides, out_size, mean, std, out_dtype)
    return _sample_details_op(frames, index, weight, centers, strides, out_size, mean, std, out_dtype, use_triton)
