"""The detail sampler: where (in time and space) and at which scale the detail network looks.

Given per-video temporal parameters `(dt, lt)` and per-detail-frame spatial parameters
`(dx, dy, lx, ly)`, all zero at the identity, it builds differentiable Gaussian sampling
weights over the candidate frames and Gaussian filter banks over rows and columns
(DESIGN.md section 1, step 5), and applies them to the uint8 candidates.
"""

from __future__ import annotations

import torch
from torch import nn

from s2d_fast.kernels import gather_frames


def uniform_positions(n_valid: torch.Tensor, k: int) -> torch.Tensor:
    """`(B,)` valid frame counts to `(B, k)` continuous positions of the k segment centres."""
    j = torch.arange(k, device=n_valid.device, dtype=torch.float32)
    n = n_valid.to(torch.float32).unsqueeze(1)
    return (j + 0.5) * n / k - 0.5


def uniform_indices(n_valid: torch.Tensor, k: int) -> torch.Tensor:
    """TSN's evaluation frames: the integer centre of each of k equal segments, `(B, k)` int64."""
    j = torch.arange(k, device=n_valid.device, dtype=torch.float64)
    n = n_valid.to(torch.float64).unsqueeze(1)
    index = torch.floor((j + 0.5) * n / k).to(torch.int64)
    return torch.minimum(index, (n_valid.unsqueeze(1) - 1).clamp(min=0))


# Zooms beyond e^4 either way are degenerate (a window of a pixel, or mostly outside the frame);
# bounding the log-strides there also keeps one large step from overflowing the sampler.
MAX_LOG_STRIDE = 4.0


def _axis_positions(center: torch.Tensor, stride: torch.Tensor, count: int) -> torch.Tensor:
    """Sample positions `center + (u - (count-1)/2) * stride` for u in [0, count)."""
    u = torch.arange(count, device=center.device, dtype=center.dtype) - (count - 1) / 2
    return center.unsqueeze(-1) + u * stride.unsqueeze(-1)


def temporal_weights(
    dt: torch.Tensor,
    lt: torch.Tensor,
    n_valid: torch.Tensor,
    num_candidates: int,
    k: int,
    sigma: float,
    stride_ratio: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian weights `(B, k, T)` of each detail frame over the candidates.

    Centre `c = a + tanh(dt) (n-1)/2` around the middle `a = (n-1)/2` of the n valid candidates;
    stride `d = r_t n/k exp(lt)`. With n/k (not the paper's n/(k-1)) the identity puts the k
    frames exactly at the segment centres that TSN evaluation and the uniform baseline use.
    Positions are clamped into the video, as no frame exists beyond it. Returns the weights,
    the centres `(B,)` and strides `(B,)` (for logging and drawing).
    """
    n = n_valid.to(dt.dtype).clamp(min=1)
    half = (n - 1) / 2
    center = half + torch.tanh(dt) * half
    stride = stride_ratio * n / k * torch.exp(lt.clamp(-MAX_LOG_STRIDE, MAX_LOG_STRIDE))
    mu = _axis_positions(center, stride, k)
    mu = torch.minimum(mu.clamp(min=0), (n - 1).unsqueeze(1))
    i = torch.arange(num_candidates, device=dt.device, dtype=dt.dtype)
    logits = -((i - mu.unsqueeze(-1)) ** 2) / (2 * sigma**2)
    valid = i < n_valid.unsqueeze(1).unsqueeze(2)
    weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    return weights, center, stride


def filter_bank(
    d: torch.Tensor, l: torch.Tensor, size: int, out_size: int, sigma_scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian filters `(..., out_size, size)` sampling one image axis of `size` pixels.

    Centre `size/2 - 1/2 + tanh(d) (size-1)/2`; stride `size/out_size exp(l)`, so that the
    identity resamples the whole axis with pixel centres aligned (as `align_corners=False`).
    The blur is what a stride-s resample needs against aliasing, sigma_scale * sqrt(s^2 - 1),
    so a stride of one or less copies pixels. Also returns the centres and strides.
    """
    half = (size - 1) / 2
    center = half + torch.tanh(d) * half
    stride = size / out_size * torch.exp(l.clamp(-MAX_LOG_STRIDE, MAX_LOG_STRIDE))
    mu = _axis_positions(center, stride, out_size)
    sigma = sigma_scale * torch.sqrt(torch.relu(stride**2 - 1) + 0.04)
    p = torch.arange(size, device=d.device, dtype=d.dtype)
    f = torch.exp(-((p - mu.unsqueeze(-1)) ** 2) / (2 * sigma.unsqueeze(-1).unsqueeze(-1) ** 2))
    # Normalised over the image's pixels, as DRAW does, so that a frame resampled whole keeps its
    # edges; the small constant makes a filter that lies wholly outside read zeros.
    return f / (f.sum(-1, keepdim=True) + 1e-6), center, stride


class DetailSampler(nn.Module):
    """Candidates `(B, T, 3, H, W)` uint8 to detail frames `(B, K, 3, S, S)`, normalised float."""

    def __init__(
        self,
        num_frames: int,
        out_size: int,
        mean: list[float],
        std: list[float],
        temporal_sigma: float,
        spatial_sigma: float,
        temporal_stride_ratio: float,
        kernel_backend: str | None = None,
    ):
        super().__init__()
        self.num_frames = num_frames
        self.out_size = out_size
        self.temporal_sigma = temporal_sigma
        self.spatial_sigma = spatial_sigma
        self.temporal_stride_ratio = temporal_stride_ratio
        self.kernel_backend = kernel_backend
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(
        self,
        frames: torch.Tensor,
        n_valid: torch.Tensor,
        time_params: torch.Tensor,
        space_params: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`time_params (B, 2)` = (dt, lt); `space_params (B, K, 4)` = (dx, dy, lx, ly)."""
        b, t, _, h, w = frames.shape
        k, s = self.num_frames, self.out_size
        weights, t_center, t_stride = temporal_weights(
            time_params[:, 0], time_params[:, 1], n_valid, t, k,
            self.temporal_sigma, self.temporal_stride_ratio,
        )
        index = torch.arange(t, device=frames.device).expand(b, k, t)
        # One pass over the uint8 candidates: every detail frame mixes its taps, scaled and
        # normalised on the way, so the float copy of all T candidates is never made.
        mixed = gather_frames(frames, index, weights, mean=self.mean, std=self.std, backend=self.kernel_backend)
        fy, cy, sy = filter_bank(space_params[..., 1], space_params[..., 3], h, s, self.spatial_sigma)
        fx, cx, sx = filter_bank(space_params[..., 0], space_params[..., 2], w, s, self.spatial_sigma)
        rows = torch.einsum("bksh,bkchw->bkcsw", fy, mixed)
        detail = torch.einsum("bkcsw,bkuw->bkcsu", rows, fx)
        stats = {
            "t_center": t_center,
            "t_stride": t_stride,
            "x_center": cx,
            "y_center": cy,
            "x_stride": sx,
            "y_stride": sy,
            "t_weights": weights,
        }
        return detail, stats
