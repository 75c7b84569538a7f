"""The authors' f_theta: one trunk over every (t, y, x) position of SNet's feature map, and four
bias-free heads (AUTHORS-S2DNET.md section 5).

The trunk reads `[SNet's features (C_e), the some-hot synopsis M broadcast (A)]` over the T_s x h x w
grid: a 1x1x1 conv to THETA_HIDDEN channels, ReLU, BatchNorm3d, then the whole grid flattened in
(C, T, H, W) order into two Linear-BN-ReLU layers (1024, 512). Flattening keeps where each
feature was, which a pooled vector forgets. The temporal heads read the trunk's 512 outputs h;
with SPACE_FOLLOW_TIME the spatial heads read `[h, o_t, l_t]`. Layers start uniform in
`+-sqrt(f / fan_in)` (kaiming-uniform with a = sqrt(6/f - 1)): f = 1 for the trunk, the small
TIME/SPACE_PARAM_INIT_FACTOR for the heads, so the sampling starts near, not at, the identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TRUNK_WIDTHS = (1024, 512)


def init_uniform(layer: nn.Module, factor: float) -> None:
    """The authors' init: weights uniform in +-sqrt(factor / fan_in) (0 for factor 0), biases 0."""
    if factor == 0:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(6 / factor - 1))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class ThetaTrunk(nn.Module):
    """`(B, C_e + A, T_s, h, w)` to `time (B, 2)` = (o_t, l_t) and `space (B, K, 4)` =
    (o_x, o_y, l_x, l_y) per detail frame."""

    def __init__(self, in_channels: int, grid: tuple[int, int, int], hidden: int, num_frames: int, *,
                 time_factor: float, space_factor: float, space_follows_time: bool):
        super().__init__()
        self.num_frames = num_frames
        self.space_follows_time = space_follows_time
        wide, narrow = TRUNK_WIDTHS
        self.trunk = nn.Sequential(
            nn.Conv3d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.BatchNorm3d(hidden), nn.Flatten(),
            nn.Linear(hidden * math.prod(grid), wide), nn.BatchNorm1d(wide), nn.ReLU(inplace=True),
            nn.Linear(wide, narrow), nn.BatchNorm1d(narrow), nn.ReLU(inplace=True),
        )
        space_in = narrow + (2 if space_follows_time else 0)
        self.time_offset = nn.Linear(narrow, 1, bias=False)
        self.time_stride = nn.Linear(narrow, 1, bias=False)
        self.space_offset = nn.Linear(space_in, 2 * num_frames, bias=False)
        self.space_stride = nn.Linear(space_in, 2 * num_frames, bias=False)
        for layer in self.trunk:
            if isinstance(layer, (nn.Conv3d, nn.Linear)):
                init_uniform(layer, 1.0)
        for head in (self.time_offset, self.time_stride):
            init_uniform(head, time_factor)
        for head in (self.space_offset, self.space_stride):
            init_uniform(head, space_factor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        o_t, l_t = self.time_offset(h), self.time_stride(h)
        h_s = torch.cat([h, o_t, l_t], dim=1) if self.space_follows_time else h
        # Detail frame j's (x, y) are the outputs 2j and 2j + 1 of each spatial head.
        offsets = self.space_offset(h_s).view(-1, self.num_frames, 2)
        log_strides = self.space_stride(h_s).view(-1, self.num_frames, 2)
        return torch.cat([o_t, l_t], dim=1).float(), torch.cat([offsets, log_strides], dim=2).float()
