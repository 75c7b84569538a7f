"""Mixup and CutMix of training videos (PySlowFast's `MIXUP` keys): each video of a batch is
mixed with another video of the same batch, and the loss is weighted between their labels.

The candidates stay uint8, as the models take them; mixup rounds the blend to the nearest level.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def mix_batch(frames: torch.Tensor, mix) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """`frames` `(B, T, 3, H, W)` uint8 mixed with `frames[order]` as `mix` (cfg.MIXUP) says.

    Returns the mixed frames, `order` (None when this batch is left as it is) and `lam`, the
    first video's share: mixup's blend weight, or CutMix's share of the pixels it keeps."""
    if not mix.ENABLE or float(torch.rand(())) >= mix.PROB:
        return frames, None, 1.0
    order = torch.randperm(frames.shape[0], device=frames.device)
    other = frames[order]
    cutmix = mix.CUTMIX_ALPHA > 0 and (mix.ALPHA == 0 or float(torch.rand(())) < mix.SWITCH_PROB)
    if not cutmix:
        lam = float(torch.distributions.Beta(mix.ALPHA, mix.ALPHA).sample())
        mixed = frames.float().mul_(lam).add_(other.float(), alpha=1 - lam).round_().to(frames.dtype)
        return mixed, order, lam
    lam = float(torch.distributions.Beta(mix.CUTMIX_ALPHA, mix.CUTMIX_ALPHA).sample())
    h, w = frames.shape[-2:]
    cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    mixed = frames.clone()
    mixed[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
    return mixed, order, 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the box clipped at the edges


def mixed_loss(loss: Callable[[dict, torch.Tensor], dict], out: dict, labels: torch.Tensor,
               order: torch.Tensor | None, lam: float) -> dict[str, torch.Tensor]:
    """`loss(out, labels)` for a batch `mix_batch` mixed: each entry weighted `lam` on the
    videos' own labels and `1 - lam` on their partners'."""
    own = loss(out, labels)
    if order is None:
        return own
    partner = loss(out, labels[order])
    return {key: lam * own[key] + (1 - lam) * partner[key] for key in own}
