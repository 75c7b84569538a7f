"""Optimiser and schedule: SGD with TSM's parameter groups, cosine decay per iteration."""

from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(model, cfg) -> list[dict]:
    """TSM's groups: weights decay; biases train at twice the rate without decay; BN without
    decay; each scaled by the model's own learning-rate ratios (`S2DNet.lr_ratios`)."""
    ratios = model.lr_ratios(cfg)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters(recurse=False)
    }
    base, decay = cfg.TRAIN.BASE_LR, cfg.TRAIN.WEIGHT_DECAY
    groups: dict[tuple[str, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_params:
            kind, lr_mult, wd = "norm", 1.0, 0.0
        elif name.endswith(".bias"):
            kind, lr_mult, wd = "bias", 2.0, 0.0
        else:
            kind, lr_mult, wd = "weight", 1.0, decay
        ratio = ratios[name]
        key = (kind, ratio)
        if key not in groups:
            label = kind if ratio == 1.0 else f"{kind}*{ratio:g}"
            groups[key] = {"params": [], "lr": base * lr_mult * ratio, "weight_decay": wd, "name": label}
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(model, cfg, total_iters: int):
    """SGD over `parameter_groups` and a cosine schedule stepped once per iteration."""
    optimizer = torch.optim.SGD(parameter_groups(model, cfg), lr=cfg.TRAIN.BASE_LR, momentum=cfg.TRAIN.MOMENTUM)
    total = max(1, total_iters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
    )
    return optimizer, scheduler
