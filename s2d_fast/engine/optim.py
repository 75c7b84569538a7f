"""Optimiser and schedule: SGD (or AdamW, TRAIN.OPTIMIZER) with TSM's or the authors' parameter
groups, and a cosine decay per iteration (s2d-fast) or per epoch after a linear ramp (the
authors', AUTHORS-S2DNET.md 12-13).

The authors build two SGDs, one for the sampler; one SGD whose groups carry the same rates,
momentum and decay takes the same steps, and the gradient is clipped over all of them alike.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from s2d_fast.config import learning_rates

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _owners(model: nn.Module) -> dict[int, nn.Module]:
    """Each parameter's module."""
    return {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}


def _tsm_rule(module: nn.Module, name: str, cfg) -> tuple[str, float, float]:
    """TSM's groups: weights decay; biases at twice the rate without decay; BN without decay."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "norm", 1.0, 0.0
    if name.endswith(".bias"):
        return "bias", 2.0, 0.0
    return "weight", 1.0, cfg.TRAIN.WEIGHT_DECAY


def _authors_rule(module: nn.Module, name: str, cfg) -> tuple[str, float, float]:
    """The authors' groups: conv weights x1 and biases x2, Linear weights x NEW_FC_LR_RATIO (5)
    and biases twice that, BN x1; every parameter decays (their decay_mult is never read)."""
    bias = name.endswith(".bias")
    if isinstance(module, nn.Linear):
        return ("linear_bias", 2.0, cfg.TRAIN.WEIGHT_DECAY) if bias else ("linear", 1.0, cfg.TRAIN.WEIGHT_DECAY)
    if isinstance(module, _CONV):
        return ("conv_bias", 2.0, cfg.TRAIN.WEIGHT_DECAY) if bias else ("conv", 1.0, cfg.TRAIN.WEIGHT_DECAY)
    return "norm", 1.0, cfg.TRAIN.WEIGHT_DECAY


def parameter_groups(model, cfg, base_lr: float | None = None) -> list[dict]:
    """The trainable parameters in groups of one rate and decay: TRAIN.PARAM_GROUPS's rule, each
    scaled by the model's own learning-rate ratios (`VideoModel.lr_ratios`). Under the authors'
    rule the x2 / x5 / x10 apply outside the sampler, whose parameters all take the sampler's
    ratio alone."""
    base = cfg.TRAIN.BASE_LR if base_lr is None else base_lr
    ratios = model.lr_ratios(cfg)
    owners = _owners(model)
    sampler = {id(p) for p in model.sampler_parameters()}
    authors = cfg.TRAIN.PARAM_GROUPS == "authors"
    groups: dict[tuple[str, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind, lr_mult, wd = (_authors_rule if authors else _tsm_rule)(owners[id(p)], name, cfg)
        if authors and id(p) in sampler:
            kind, lr_mult = "sampler", 1.0
        elif authors and kind.startswith("linear"):
            lr_mult *= cfg.TRAIN.NEW_FC_LR_RATIO
        ratio = ratios[name]
        key = (kind, lr_mult * ratio)
        if key not in groups:
            label = kind if ratio == 1.0 else f"{kind}*{ratio:g}"  # a kind's own multiplier is in its name
            groups[key] = {"params": [], "lr": base * lr_mult * ratio, "weight_decay": wd, "name": label}
        groups[key]["params"].append(p)
    return list(groups.values())


def lr_factor(cfg, steps_per_epoch: int, base_lr: float, warmup_lr: float):
    """The schedule as a function of the optimiser step, a factor on each group's rate.

    `cosine`: 0.5 (1 + cos(pi step / total)), per step, down to 0. `authors`: constant within
    an epoch e; for e <= WARMUP_EPOCHS a linear ramp from WARMUP_LR (epoch 0) to BASE_LR, then
    LR_FLOOR + (1 - LR_FLOOR) (1 + cos(pi e / EPOCHS)) / 2.
    """
    epochs, ramp, floor = cfg.TRAIN.EPOCHS, cfg.TRAIN.WARMUP_EPOCHS, cfg.TRAIN.LR_FLOOR
    if cfg.TRAIN.LR_SCHEDULE == "cosine":
        total = max(1, epochs * steps_per_epoch)
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    def authors(step: int) -> float:
        e = step // max(1, steps_per_epoch)
        if ramp and e <= ramp:
            return (warmup_lr + e * (base_lr - warmup_lr) / ramp) / base_lr if base_lr else 0.0
        return floor + 0.5 * (1 - floor) * (1 + math.cos(math.pi * e / epochs))

    return authors


def build_optimizer(model, cfg, steps_per_epoch: int, world: int = 1):
    """TRAIN.OPTIMIZER over `parameter_groups` at the run's learning rate
    (`config.learning_rates`) and the TRAIN.LR_SCHEDULE schedule, stepped once per optimiser step."""
    base_lr, warmup_lr, _ = learning_rates(cfg, world)
    groups = parameter_groups(model, cfg, base_lr)
    if cfg.TRAIN.OPTIMIZER == "adamw":
        # MOMENTUM is Adam's first-moment decay, so the key means the same in both optimisers
        optimizer = torch.optim.AdamW(groups, lr=base_lr, betas=(cfg.TRAIN.MOMENTUM, 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=base_lr, momentum=cfg.TRAIN.MOMENTUM)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, base_lr, warmup_lr))
    return optimizer, scheduler
