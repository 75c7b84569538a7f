"""Optimiser and schedule: SGD with TSM's parameter groups, cosine decay per iteration."""

from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(model, cfg) -> list[dict]:
    """TSM's groups: weights decay; biases train at twice the rate without decay; BN without
    decay. In the sampling stage f_theta's groups run at S2D.SAMPLER_LR_RATIO of the rate."""
    sampler_ids = {id(p) for p in model.sampler_parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for module in model.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            kind = "norm" if is_norm else ("bias" if name == "bias" else "weight")
            groups.setdefault((kind, id(p) in sampler_ids), []).append(p)
    base, decay = cfg.TRAIN.BASE_LR, cfg.TRAIN.WEIGHT_DECAY
    settings = {"weight": (1.0, decay), "bias": (2.0, 0.0), "norm": (1.0, 0.0)}
    out = []
    for (kind, is_sampler), params in groups.items():
        lr_mult, wd = settings[kind]
        if is_sampler:
            lr_mult *= cfg.S2D.SAMPLER_LR_RATIO
        out.append({"params": params, "lr": base * lr_mult, "weight_decay": wd, "name": f"{kind}{'/sampler' if is_sampler else ''}"})
    return out


def build_optimizer(model, cfg, total_iters: int):
    """SGD over `parameter_groups` and a cosine schedule stepped once per iteration."""
    optimizer = torch.optim.SGD(parameter_groups(model, cfg), lr=cfg.TRAIN.BASE_LR, momentum=cfg.TRAIN.MOMENTUM)
    total = max(1, total_iters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
    )
    return optimizer, scheduler
