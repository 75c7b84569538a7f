"""The detail sampler: where (in time and space) and at which scale the detail network looks.

Given per-video temporal parameters `(dt, lt[, log_sigma])` and per-detail-frame spatial
parameters `(dx, dy, lx, ly[, log_sigma])`, all zero at the identity, it places K detail
frames over the candidates and an S x S window in each (the formulas are in
`temporal_positions`, `temporal_weights`, `spatial_positions` and `filter_bank`), and
reads them from the uint8 candidates:

- training (dense, differentiable): Gaussian (or linear) weights over all T candidates, then
  Gaussian filter banks (or bilinear `grid_sample`) over rows and columns;
- evaluation (fast path): the temporal weights cut to the few taps that carry all but
  `fast_path_eps` of their mass, read by `gather_frames` (then the filter bank) or, for the
  bilinear method, by the fused `sample_details` kernel.
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from s2d_fast.kernels import gather_frames, sample_details

# Zooms beyond e^4 either way are degenerate (a window of a pixel, or mostly outside the frame);
# bounding the log-strides there also keeps one large step from overflowing the sampler.
MAX_LOG_STRIDE = 4.0
# Predicted log-sigmas stay in [-2, 1]: a sharper kernel has no gradient, a wider one is a blur.
LOG_SIGMA_RANGE = (-2.0, 1.0)


def uniform_indices(n_valid: torch.Tensor, k: int) -> torch.Tensor:
    """TSN's evaluation frames: the integer centre of each of k equal segments, `(B, k)` int64."""
    j = torch.arange(k, device=n_valid.device, dtype=torch.float64)
    n = n_valid.to(torch.float64).unsqueeze(1)
    index = torch.floor((j + 0.5) * n / k).to(torch.int64)
    return torch.minimum(index, (n_valid.unsqueeze(1) - 1).clamp(min=0))


def linspace_indices(n_valid: torch.Tensor, k: int) -> torch.Tensor:
    """The authors' SNet frames: `floor((n-1) i / (k-1))`, the truncated `linspace(0, n-1, k)`, `(B, k)`."""
    i = torch.arange(k, device=n_valid.device, dtype=torch.int64)
    return (n_valid.unsqueeze(1).clamp(min=1) - 1) * i // max(k - 1, 1)


def stride_scale(log_stride: torch.Tensor, param: str) -> torch.Tensor:
    """The factor on the identity stride: `exp(l)` (clamped), or `2 sigmoid(l)`, bounded in (0, 2)."""
    if param == "bounded":
        return 2 * torch.sigmoid(log_stride)
    return torch.exp(log_stride.clamp(-MAX_LOG_STRIDE, MAX_LOG_STRIDE))


def _sigma_scale(log_sigma: torch.Tensor | None) -> torch.Tensor | float:
    return 1.0 if log_sigma is None else torch.exp(log_sigma.clamp(*LOG_SIGMA_RANGE))


def _axis_positions(center: torch.Tensor, stride: torch.Tensor, count: int) -> torch.Tensor:
    """Sample positions `center + (u - (count-1)/2) * stride` for u in [0, count)."""
    u = torch.arange(count, device=center.device, dtype=center.dtype) - (count - 1) / 2
    return center.unsqueeze(-1) + u * stride.unsqueeze(-1)


def temporal_positions(
    dt: torch.Tensor, lt: torch.Tensor, n_valid: torch.Tensor, k: int, stride_ratio: float = 1.0, param: str = "exp"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions `(B, k)` of the detail frames among the candidates, with centres and strides `(B,)`.

    Centre `c = a + tanh(dt) (n-1)/2` and stride `d = r_t n/k exp(lt)` for n valid candidates.
    At the identity the k frames sit on the candidates TSN evaluation and the uniform baseline
    take, `floor((j + 1/2) n/k)`: with n/k (not the paper's n/(k-1)) as the stride and
    `a = (k-1)/2 n/k + floor(n/2k)` as the centre. (The middle `(n-1)/2` would put them half a
    candidate off whenever n/k is even, as at 16/4 or the paper's 32/8: every detail frame a
    50/50 blend of two candidates, a ghost of one over the other.) Positions are clamped into
    the video, as no frame exists beyond it.
    """
    n = n_valid.to(dt.dtype).clamp(min=1)
    segment = n / k
    center = (k - 1) / 2 * segment + torch.floor(segment / 2) + torch.tanh(dt) * (n - 1) / 2
    stride = stride_ratio * segment * stride_scale(lt, param)
    mu = _axis_positions(center, stride, k)
    mu = torch.minimum(mu.clamp(min=0), (n - 1).unsqueeze(1))
    return mu, center, stride


def temporal_weights(mu: torch.Tensor, n_valid: torch.Tensor, num_candidates: int, method: str, sigma) -> torch.Tensor:
    """Dense weights `(B, k, T)` of each detail frame over the candidates, rows summing to one.

    `gaussian`: `exp(-(i - mu)^2 / 2 sigma^2)` normalised over the valid candidates;
    `linear`: interpolation between the two nearest candidates.
    """
    i = torch.arange(num_candidates, device=mu.device, dtype=mu.dtype)
    dist = i - mu.unsqueeze(-1)
    valid = i < n_valid.view(-1, 1, 1)
    if method == "linear":
        return torch.relu(1 - dist.abs()) * valid
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.unsqueeze(-1)
    logits = -(dist**2) / (2 * sigma**2)
    return torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)


def tap_radius(max_sigma: float, eps: float) -> int:
    """Taps each side of a Gaussian's centre that hold all but `eps` of its mass at `max_sigma`
    (the largest the model can produce): fixed, so the fast path's graph is static."""
    return math.ceil(statistics.NormalDist().inv_cdf(1 - eps / 2) * max_sigma + 0.5)


def temporal_taps(
    mu: torch.Tensor, n_valid: torch.Tensor, method: str, sigma, radius: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast path's few taps: `index, weight (B, k, P)` around each position, P = 2 radius + 1
    for the Gaussian (taps outside the video get weight zero), 2 for linear interpolation."""
    if method == "linear":
        lo = mu.floor()
        frac = mu - lo
        index = torch.stack([lo, lo + 1], dim=-1)
        weight = torch.stack([1 - frac, frac], dim=-1)
    else:
        offsets = torch.arange(-radius, radius + 1, device=mu.device, dtype=mu.dtype)
        index = mu.round().unsqueeze(-1) + offsets
        if isinstance(sigma, torch.Tensor):
            sigma = sigma.unsqueeze(-1)
        weight = torch.exp(-((index - mu.unsqueeze(-1)) ** 2) / (2 * sigma**2))
    inside = (index >= 0) & (index < n_valid.view(-1, 1, 1))
    weight = weight * inside
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    last = (n_valid.view(-1, 1, 1) - 1).to(index.dtype)
    return torch.minimum(index.clamp(min=0), last).to(torch.int64), weight


def inverse_stride_scale(scale: torch.Tensor, param: str) -> torch.Tensor:
    """The `l` with `stride_scale(l, param) == scale`, `scale` clamped into what it can reach."""
    if param == "bounded":
        half = (scale / 2).clamp(1e-4, 1 - 1e-4)
        return torch.log(half / (1 - half))
    return torch.log(scale.clamp(min=1e-12)).clamp(-MAX_LOG_STRIDE, MAX_LOG_STRIDE)


def _inverse_tanh_offset(offset: torch.Tensor) -> torch.Tensor:
    return torch.atanh(offset.clamp(-0.995, 0.995))  # the edges themselves are out of tanh's reach


def temporal_parameters(center: torch.Tensor, stride: torch.Tensor, n_valid: torch.Tensor, k: int,
                        stride_ratio: float = 1.0, param: str = "exp") -> torch.Tensor:
    """`(dt, lt)` `(B, 2)` that `temporal_positions` maps to this centre and stride (candidates)."""
    n = n_valid.to(center.dtype).clamp(min=1)
    segment = n / k
    identity = (k - 1) / 2 * segment + torch.floor(segment / 2)
    dt = _inverse_tanh_offset((center - identity) / ((n - 1) / 2).clamp(min=0.5))
    return torch.stack([dt, inverse_stride_scale(stride / (stride_ratio * segment), param)], dim=-1)


def spatial_parameters(center: torch.Tensor, zoom: float, size: int, param: str = "exp") -> tuple[torch.Tensor, torch.Tensor]:
    """`(d, l)` that `spatial_positions` maps to this window centre (pixels) at `zoom` over the identity."""
    half = (size - 1) / 2
    l = inverse_stride_scale(torch.full_like(center, 1 / zoom), param)
    return _inverse_tanh_offset((center - half) / half), l


def spatial_positions(
    d: torch.Tensor, l: torch.Tensor, size: int, out_size: int, param: str = "exp"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window centre and stride (pixels) on one axis of `size` pixels sampled `out_size` times.

    Centre `(size-1)/2 + tanh(d) (size-1)/2`; stride `size/out_size exp(l)`, so that the identity
    resamples the whole axis with pixel centres aligned (as `align_corners=False`).
    """
    half = (size - 1) / 2
    return half + torch.tanh(d) * half, size / out_size * stride_scale(l, param)


def filter_bank(center: torch.Tensor, stride: torch.Tensor, size: int, out_size: int, sigma_scale) -> torch.Tensor:
    """Gaussian filters `(..., out_size, size)` sampling one image axis of `size` pixels.

    The blur is what a stride-s resample needs against aliasing, sigma_scale * sqrt(s^2 - 1),
    so a stride of one or less copies pixels.
    """
    mu = _axis_positions(center, stride, out_size)
    sigma = sigma_scale * torch.sqrt(torch.relu(stride**2 - 1) + 0.04)
    p = torch.arange(size, device=center.device, dtype=center.dtype)
    f = torch.exp(-((p - mu.unsqueeze(-1)) ** 2) / (2 * sigma.unsqueeze(-1).unsqueeze(-1) ** 2))
    # Normalised over the image's pixels, as DRAW does, so that a frame resampled whole keeps its
    # edges; the small constant makes a filter that lies wholly outside read zeros.
    return f / (f.sum(-1, keepdim=True) + 1e-6)


def bilinear_window(mixed: torch.Tensor, centers: torch.Tensor, strides: torch.Tensor, out_size: int) -> torch.Tensor:
    """`(B, K, C, H, W)` to the bilinear `out_size^2` windows, zeros outside: what `sample_details`
    computes in one pass, here differentiable in the window."""
    b, k, c, h, w = mixed.shape
    gx = _axis_positions(centers[..., 0], strides[..., 0], out_size) * (2 / max(w - 1, 1)) - 1
    gy = _axis_positions(centers[..., 1], strides[..., 1], out_size) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)
    out = F.grid_sample(mixed.flatten(0, 1), grid.flatten(0, 1).to(mixed.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out.view(b, k, c, out_size, out_size)


# --- the authors' parameterisation (AUTHORS-S2DNET.md section 6) -----------------------------
#
# Centres at the middle of the video and of the frame, strides n/(K-1) and W/(S-1) at zero
# parameters, Gaussians of a fixed std over every frame and pixel, normalised with a floor of
# 1e-7: a tap off the video or the frame renormalises onto the valid ones while it is near, and
# fades to zero (the dataset-mean colour) beyond about six units; nothing is clamped.
AUTHORS_FLOOR = 1e-7
# Taps each side of a detail frame's position that carry every non-zero float32 weight of a
# unit-std Gaussian (exp(-104) underflows): the fast path with them is the dense sum.
_FLOAT32_REACH = math.sqrt(2 * 104)


def authors_temporal_positions(offset: torch.Tensor, log_stride: torch.Tensor, n_valid: torch.Tensor, k: int,
                               time_range: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`mu (B, k)`, centre and stride `(B,)`: c = (n-1)/2 + tanh(o) (n-1)/2, d = R n/(k-1) exp(l)."""
    n = n_valid.to(offset.dtype)
    half = (n - 1) / 2
    center = half + torch.tanh(offset) * half
    stride = time_range * n / max(k - 1, 1) * torch.exp(log_stride)
    return _axis_positions(center, stride, k), center, stride


def authors_spatial_positions(offset: torch.Tensor, log_stride: torch.Tensor, size: int, out_size: int,
                              space_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre `(size-1)/2 + tanh(o) (size-1)/2` and stride `R size/(out_size-1) exp(l)`, in pixels."""
    half = (size - 1) / 2
    return half + torch.tanh(offset) * half, space_range * size / max(out_size - 1, 1) * torch.exp(log_stride)


def floored_gaussian(dist: torch.Tensor, sigma: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """`exp(-dist^2 / 2 sigma^2)` over the last axis (zero where not `valid`), divided by the
    larger of its sum and AUTHORS_FLOOR."""
    weight = torch.exp(-dist.square() / (2 * sigma**2))
    if valid is not None:
        weight = weight * valid
    return weight / weight.sum(-1, keepdim=True).clamp(min=AUTHORS_FLOOR)


def authors_temporal_taps(mu: torch.Tensor, n_valid: torch.Tensor, sigma: float, num_candidates: int | None):
    """`index, weight (B, k, P)` of every candidate (`num_candidates`: the dense form) or of the
    taps within float32 reach of each position (the fast path, the same sums)."""
    if num_candidates is not None:
        index = torch.arange(num_candidates, device=mu.device).expand(*mu.shape, num_candidates)
    else:
        radius = math.ceil(sigma * _FLOAT32_REACH) + 1
        index = mu.round().long().unsqueeze(-1) + torch.arange(-radius, radius + 1, device=mu.device)
    inside = (index >= 0) & (index < n_valid.view(-1, 1, 1))
    weight = floored_gaussian(index.to(mu.dtype) - mu.unsqueeze(-1), sigma, inside)
    last = (n_valid.view(-1, 1, 1) - 1).clamp(min=0)
    return torch.minimum(index.clamp(min=0), last), weight


def authors_filter_bank(center: torch.Tensor, stride: torch.Tensor, size: int, out_size: int, sigma: float) -> torch.Tensor:
    """`(..., out_size, size)`: row k is the floored Gaussian over pixels around c + (k - (S-1)/2) d."""
    mu = _axis_positions(center, stride, out_size)
    pixels = torch.arange(size, device=center.device, dtype=center.dtype)
    return floored_gaussian(pixels - mu.unsqueeze(-1), sigma)


class DetailSampler(nn.Module):
    """Candidates `(B, T, 3, H, W)` uint8 to detail frames `(B, K, 3, S, S)`, normalised float."""

    def __init__(self, cfg):
        super().__init__()
        s2d = cfg.S2D
        self.num_frames = cfg.DNET.NUM_FRAMES
        self.out_size = cfg.DNET.INPUT_SIZE
        self.temporal_method = s2d.TEMPORAL_METHOD
        self.spatial_method = s2d.SPATIAL_METHOD
        self.temporal_sigma = s2d.TEMPORAL_SIGMA
        self.spatial_sigma = s2d.SPATIAL_SIGMA
        max_sigma = s2d.TEMPORAL_SIGMA * (math.exp(LOG_SIGMA_RANGE[1]) if s2d.PREDICT_SIGMA else 1.0)
        self.tap_radius = tap_radius(max_sigma, s2d.FAST_PATH_EPS)
        self.temporal_stride_ratio = s2d.TEMPORAL_STRIDE_RATIO
        self.stride_param = s2d.STRIDE_PARAM
        self.fast_path = s2d.FAST_PATH
        self.kernel_backend = cfg.KERNELS.BACKEND
        self.parameterisation = s2d.PARAMETERISATION
        self.center_window = s2d.WARMUP_WINDOW == "center"
        self.register_buffer("mean", torch.tensor(cfg.DATA.MEAN, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.DATA.STD, dtype=torch.float32), persistent=False)

    def forward(
        self,
        frames: torch.Tensor,
        n_valid: torch.Tensor,
        time_params: torch.Tensor,
        space_params: torch.Tensor,
        fixed: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`time_params (B, 2|3)` = (dt, lt[, log_sigma]); `space_params (B, K, 4|5)` = (dx, dy, lx, ly[, log_sigma]).

        `fixed`: the warmup's sampling, the parameters at zero; with S2D.WARMUP_WINDOW center each
        detail frame is then the frame's central S pixels at stride 1."""
        if self.parameterisation == "authors":
            return self._authors(frames, n_valid, time_params, space_params, fixed)
        b, t, _, h, w = frames.shape
        k, s = self.num_frames, self.out_size
        mu, t_center, t_stride = temporal_positions(
            time_params[:, 0], time_params[:, 1], n_valid, k, self.temporal_stride_ratio, self.stride_param
        )
        t_sigma = self.temporal_sigma * _sigma_scale(time_params[:, 2:3] if time_params.shape[1] > 2 else None)
        cx, sx = spatial_positions(space_params[..., 0], space_params[..., 2], w, s, self.stride_param)
        cy, sy = spatial_positions(space_params[..., 1], space_params[..., 3], h, s, self.stride_param)
        s_sigma = self.spatial_sigma * _sigma_scale(space_params[..., 4] if space_params.shape[-1] > 4 else None)
        if fixed and self.center_window:
            sx, sy = torch.ones_like(sx), torch.ones_like(sy)
        centers, strides = torch.stack([cx, cy], -1), torch.stack([sx, sy], -1)
        norm = {"mean": self.mean, "std": self.std, "backend": self.kernel_backend}

        if self.fast_path and not torch.is_grad_enabled():
            index, weight = temporal_taps(mu, n_valid, self.temporal_method, t_sigma, self.tap_radius)
            if self.spatial_method == "bilinear":
                detail = sample_details(frames, index, weight, centers, strides, s, **norm)
            else:
                detail = self._filter(gather_frames(frames, index, weight, **norm), cx, sx, cy, sy, s_sigma)
        else:
            weights = temporal_weights(mu, n_valid, t, self.temporal_method, t_sigma)
            index = torch.arange(t, device=frames.device).expand(b, k, t)
            # One pass over the uint8 candidates: every detail frame mixes its taps, scaled and
            # normalised on the way, so the float copy of all T candidates is never made.
            mixed = gather_frames(frames, index, weights, **norm)
            if self.spatial_method == "bilinear":
                detail = bilinear_window(mixed, centers, strides, s)
            else:
                detail = self._filter(mixed, cx, sx, cy, sy, s_sigma)
        stats = {"t_center": t_center, "t_stride": t_stride, "t_positions": mu, "centers": centers, "strides": strides}
        return detail, stats

    def _authors(self, frames, n_valid, time_params, space_params, fixed: bool):
        """The authors' sampling: the Gaussian mix of the frames, normalised as the authors
        normalise every frame before mixing (so a faded detail frame is the mean colour), then the
        floored filter banks over rows and columns."""
        b, t, _, h, w = frames.shape
        k, s = self.num_frames, self.out_size
        mu, t_center, t_stride = authors_temporal_positions(time_params[:, 0], time_params[:, 1], n_valid, k,
                                                            self.temporal_stride_ratio)
        cx, sx = authors_spatial_positions(space_params[..., 0], space_params[..., 2], w, s, 1.0)
        cy, sy = authors_spatial_positions(space_params[..., 1], space_params[..., 3], h, s, 1.0)
        if fixed and self.center_window:
            sx, sy = torch.ones_like(sx), torch.ones_like(sy)
        dense = not (self.fast_path and not torch.is_grad_enabled())
        index, weight = authors_temporal_taps(mu, n_valid, self.temporal_sigma, t if dense else None)
        mixed = gather_frames(frames, index, weight, backend=self.kernel_backend)
        mean, std = self.mean.view(1, 1, -1, 1, 1), self.std.view(1, 1, -1, 1, 1)
        mixed = (mixed - mean * weight.sum(-1)[..., None, None, None]) / std
        fy = authors_filter_bank(cy, sy, h, s, self.spatial_sigma)
        fx = authors_filter_bank(cx, sx, w, s, self.spatial_sigma)
        detail = torch.einsum("bkcsw,bkuw->bkcsu", torch.einsum("bksh,bkchw->bkcsw", fy, mixed), fx)
        centers, strides = torch.stack([cx, cy], -1), torch.stack([sx, sy], -1)
        return detail, {"t_center": t_center, "t_stride": t_stride, "t_positions": mu, "centers": centers,
                        "strides": strides}

    def _filter(self, mixed, cx, sx, cy, sy, sigma) -> torch.Tensor:
        h, w = mixed.shape[-2:]
        fy = filter_bank(cy, sy, h, self.out_size, sigma)
        fx = filter_bank(cx, sx, w, self.out_size, sigma)
        rows = torch.einsum("bksh,bkchw->bkcsw", fy, mixed)
        return torch.einsum("bkcsw,bkuw->bkcsu", rows, fx)
