import pytest
import torch

from s2d_fast.config.checks import ConfigError
from s2d_fast.engine.optim import build_optimizer, parameter_groups
from s2d_fast.models import build_model, s2d_loss

from test_model import batch, small_cfg


def _steps(stage, n=6):
    torch.manual_seed(0)
    cfg = small_cfg("TRAIN.BASE_LR", "0.05")
    model = build_model(cfg, num_classes=10)
    model.set_stage(stage)
    model.train()
    opt = torch.optim.SGD(parameter_groups(model, cfg), lr=0.05, momentum=0.9)
    frames, n_valid, labels = batch()
    losses = []
    for _ in range(n):
        loss = s2d_loss(model(frames, n_valid), labels, 1.0)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.TRAIN.CLIP_GRAD_NORM)
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    for stage in ("warmup", "sampling"):
        losses = _steps(stage)
        assert losses[-1] < 0.7 * losses[0], (stage, losses)


def test_parameter_groups_follow_tsm():
    cfg = small_cfg("TRAIN.BASE_LR", "0.1", "TRAIN.WEIGHT_DECAY", "0.001", "S2D.SAMPLER_LR_RATIO", "3")
    model = build_model(cfg, num_classes=10)
    model.set_stage("sampling")
    groups = {g["name"]: g for g in parameter_groups(model, cfg)}
    assert groups["weight"]["lr"] == 0.1 and groups["weight"]["weight_decay"] == 0.001
    assert groups["bias"]["lr"] == 0.2 and groups["bias"]["weight_decay"] == 0.0
    assert groups["norm"]["weight_decay"] == 0.0
    assert abs(groups["weight*3"]["lr"] - 0.3) < 1e-12
    n_params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_params
    model.set_stage("warmup")
    assert {g["name"] for g in parameter_groups(model, cfg)} == {"weight", "norm", "bias"}


def test_momentum_is_adamw_beta1_and_must_lie_in_zero_to_one():
    cfg = small_cfg("TRAIN.OPTIMIZER", "adamw", "TRAIN.MOMENTUM", "0.8")
    optimizer, _ = build_optimizer(build_model(cfg, num_classes=10), cfg, steps_per_epoch=1)
    assert {g["betas"] for g in optimizer.param_groups} == {(0.8, 0.999)}
    with pytest.raises(ConfigError, match=r"TRAIN.MOMENTUM must be in \[0, 1\).*got 1.0"):
        small_cfg("TRAIN.MOMENTUM", "1.0")


def test_optimizer_is_sgd_by_default_and_adamw_decays_apart_from_the_gradient():
    cfg = small_cfg()
    model = build_model(cfg, num_classes=10)
    optimizer, _ = build_optimizer(model, cfg, steps_per_epoch=1)
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9

    torch.manual_seed(0)
    cfg = small_cfg("TRAIN.OPTIMIZER", "adamw", "TRAIN.BASE_LR", "0.001", "TRAIN.WEIGHT_DECAY", "0.05")
    model = build_model(cfg, num_classes=10)
    model.set_stage("warmup")
    model.train()
    optimizer, _ = build_optimizer(model, cfg, steps_per_epoch=1)
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["betas"] == (0.9, 0.999)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert (groups["weight"]["lr"], groups["weight"]["weight_decay"]) == (0.001, 0.05)
    assert (groups["bias"]["lr"], groups["bias"]["weight_decay"]) == (0.002, 0.0)
    frames, n_valid, labels = batch()
    s2d_loss(model(frames, n_valid), labels, 1.0)["loss"].backward()
    before = {id(p): p.detach().clone() for g in optimizer.param_groups for p in g["params"]}
    optimizer.step()
    # Adam's first step moves each element by lr * g / (|g| + eps); the decay scales the weight
    # by (1 - lr * decay) on its own, whatever the gradient.
    for group in optimizer.param_groups:
        lr, decay = group["lr"], group["weight_decay"]
        for p in group["params"]:
            g = p.grad
            expected = before[id(p)] * (1 - lr * decay) - lr * g / (g.abs() + 1e-8)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
