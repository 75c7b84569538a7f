"""Every switch the paper ablates builds, trains a step, and does what it says."""

import pytest
import torch
import torch.nn.functional as F

from s2d_fast.config import ConfigError
from s2d_fast.engine.optim import parameter_groups
from s2d_fast.kernels import sample_details_reference
from s2d_fast.models import build_model, tsm_backbone

from test_model import batch, small_cfg

SWITCHES = [
    ("S2D.TOPK", "1"),
    ("S2D.SYNOPSIS_TARGET", "mask"),
    ("S2D.TEMPORAL_SAMPLING", "False"),
    ("S2D.SPATIAL_SAMPLING", "False"),
    ("S2D.SHARED_THETA", "True"),
    ("S2D.THETA_POOL", "attention"),
    ("S2D.TEMPORAL_METHOD", "linear"),
    ("S2D.SPATIAL_METHOD", "bilinear"),
    ("S2D.PREDICT_SIGMA", "True"),
    ("S2D.STRIDE_PARAM", "bounded"),
    ("S2D.FUSION_STAGES", "[]"),
    ("S2D.FUSION_STAGES", "[1, 2, 3, 4]"),
    ("S2D.DNET_LOSS", "ce"),
    ("S2D.SNET_LOSS_WEIGHT", "0.0"),
    ("S2D.DETAIL_SAMPLING", "False"),
    ("DNET.SHIFT", "False"),
    ("DNET.TEMPORAL_POOL", "True"),
    ("DNET.PARTIAL_BN", "True"),
]


@pytest.mark.parametrize("key,value", SWITCHES, ids=[f"{k}={v}" for k, v in SWITCHES])
def test_switch_builds_and_trains_one_step(key, value):
    torch.manual_seed(0)
    cfg = small_cfg(key, value, "S2D.SAMPLER_LR_RATIO", "10")
    model = build_model(cfg, num_classes=10)
    model.set_stage("sampling")
    model.train()
    opt = torch.optim.SGD(parameter_groups(model, cfg), lr=0.01, momentum=0.9)
    frames, n_valid, labels = batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss = model.loss(model(frames, n_valid), labels)["loss"]
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith("dnet.") for n in moved)
    if cfg.S2D.DETAIL_SAMPLING and (cfg.S2D.TEMPORAL_SAMPLING or cfg.S2D.SPATIAL_SAMPLING):
        assert any(n.startswith(("time_head.", "space_head.")) for n in moved)
    model.eval()
    with torch.no_grad():
        out = model(frames, n_valid)
    assert torch.allclose(out["log_prob"].exp().sum(1), torch.ones(2), atol=1e-5)


def test_switched_off_axes_have_no_heads():
    model = build_model(small_cfg("S2D.TEMPORAL_SAMPLING", "False"), 10)
    assert not hasattr(model, "time_head") and hasattr(model, "space_head")
    model = build_model(small_cfg("S2D.SHARED_THETA", "True"), 10)
    assert hasattr(model, "theta_shared") and not hasattr(model, "theta_time")


def test_topk_masks_prediction():
    model = build_model(small_cfg("S2D.TOPK", "1"), 10).eval()
    out = model(*batch()[:2])
    probs = out["log_prob"].exp()
    assert torch.equal(probs.argmax(1), out["z_s"].argmax(1))  # top-1 synopsis decides alone
    assert torch.allclose(probs.max(1).values, torch.ones(2))


def _moved_params(cfg):
    frames, n_valid, _ = batch()
    model = build_model(cfg, 10)
    with torch.no_grad():
        model.space_head.bias.normal_(0, 0.5)
        model.time_head.bias.normal_(0, 0.5)
    model.set_stage("sampling")
    return model, frames, n_valid


@pytest.mark.parametrize("spatial", ["gaussian", "bilinear"])
@pytest.mark.parametrize("temporal", ["gaussian", "linear"])
def test_fast_path_matches_dense_path(spatial, temporal):
    cfg = small_cfg("S2D.SPATIAL_METHOD", spatial, "S2D.TEMPORAL_METHOD", temporal, "S2D.FAST_PATH_EPS", "1e-4")
    model, frames, n_valid = _moved_params(cfg)
    model.eval()
    dense = model(frames, n_valid)  # grad enabled: the dense, differentiable path
    with torch.no_grad():
        fast = model(frames, n_valid)
    # Dropping at most eps of the temporal mass moves a normalised pixel (|x| < 2.7) by at
    # most about 2 * 2.7 * eps; float32 sums add a little.
    assert (fast["detail"] - dense["detail"]).abs().max() < 2 * 2.7 * 1e-4 + 1e-4
    assert torch.allclose(fast["log_prob"].exp(), dense["log_prob"].exp(), atol=1e-3)


def test_bilinear_sampler_agrees_with_sample_details_reference():
    cfg = small_cfg("S2D.SPATIAL_METHOD", "bilinear")
    model, frames, n_valid = _moved_params(cfg)
    model.eval()
    out = model(frames, n_valid)  # dense: temporal weights over all candidates, grid_sample
    t = frames.shape[1]
    from s2d_fast.models.sampler import temporal_weights

    weights = temporal_weights(out["t_positions"], n_valid, t, "gaussian", cfg.S2D.TEMPORAL_SIGMA)
    index = torch.arange(t).expand(2, 4, t)
    mean, std = torch.tensor(cfg.DATA.MEAN), torch.tensor(cfg.DATA.STD)
    ref = sample_details_reference(frames, index, weights, out["centers"], out["strides"], 32, mean=mean, std=std)
    assert torch.allclose(out["detail"], ref, atol=1e-4)


@pytest.mark.parametrize("stage", ["warmup", "sampling"])
def test_snet_lr_ratio_zero_freezes_snet_including_bn(stage):
    """In both stages, as the authors' factor on SNet's parameter groups applies to both."""
    cfg = small_cfg("S2D.SNET_LR_RATIO", "0")
    model = build_model(cfg, 10)
    model.set_stage(stage)
    model.train()
    assert not any(p.requires_grad for p in model.snet.parameters())
    assert all(p.requires_grad for p in model.dnet.parameters())
    assert not model.snet.training and model.dnet.training
    stats = model.snet.stem[0][1].running_mean.clone()
    model(*batch()[:2])
    assert torch.equal(stats, model.snet.stem[0][1].running_mean)


def test_frozen_snet_is_not_backpropagated_through():
    """Frozen, SNet's saliency is its only backward pass: the loss's gradient stops at SNet (a
    second pass through it computed a gradient nothing used), and DNet's gradient is the same."""
    frames, n_valid, labels = batch()
    cfg = small_cfg("S2D.SNET_LR_RATIO", "0", "S2D.WARMUP_WINDOW", "evidence", "S2D.EVIDENCE_MAP", "saliency")
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    model.set_stage("warmup")
    model.train()
    torch.manual_seed(1)  # the same dropout in both forwards
    out = model(frames, n_valid)
    assert not out["z_s"].requires_grad
    model.loss(out, labels)["loss"].backward()
    model.snet_lr_ratio = 1.0  # the same weights with SNet's graph kept, as when SNet trains
    for p in model.snet.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    kept = model(frames, n_valid)
    assert kept["z_s"].requires_grad
    grads = {n: p.grad.clone() for n, p in model.dnet.named_parameters()}
    model.zero_grad()
    model.loss(kept, labels)["loss"].backward()
    for n, p in model.dnet.named_parameters():
        assert torch.allclose(p.grad, grads[n], atol=1e-6), n


@pytest.mark.parametrize("theta", ["conv3d", "trunk"])  # the trunk's heads start small and random, not zero
def test_sampler_lr_ratio_zero_holds_f_theta_at_the_warmups_placement(theta):
    cfg = small_cfg("S2D.SAMPLER_LR_RATIO", "0", "S2D.THETA", theta)
    model = build_model(cfg, 10)
    model.set_stage("sampling")
    model.train()
    sampler = {id(p) for p in model.sampler_parameters()}
    assert sampler and not any(p.requires_grad for p in model.sampler_parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) not in sampler)
    frames, n_valid, labels = batch()
    out = model(frames, n_valid)
    model.loss(out, labels)["loss"].backward()
    assert all(p.grad is not None for p in model.dnet.parameters())
    model.set_stage("warmup")
    fixed = model(frames, n_valid)  # the warmup's placement: the sampling stage's, f_theta untrained
    for key in ("t_positions", "centers", "strides"):
        assert torch.allclose(out[key], fixed[key], atol=1e-5)


def test_lr_ratios_of_the_sampling_stage():
    cfg = small_cfg("S2D.SAMPLER_LR_RATIO", "10", "S2D.SPATIAL_LR_RATIO", "0.5", "S2D.TEMPORAL_LR_RATIO", "2",
                    "S2D.SNET_LR_RATIO", "0.1")
    model = build_model(cfg, 10)
    model.set_stage("sampling")
    ratios = model.lr_ratios(cfg)
    assert ratios["time_head.weight"] == 20 and ratios["theta_time.convs.0.weight"] == 20
    assert ratios["space_head.weight"] == 5
    assert ratios["embed.weight"] == 10
    assert ratios["snet.fc.weight"] == pytest.approx(0.1)
    assert ratios["classifier.weight"] == 1
    model.set_stage("warmup")  # SNet's factor holds in the warmup too; f_theta does not train there
    ratios = model.lr_ratios(cfg)
    assert ratios["snet.stem.0.0.weight"] == pytest.approx(0.1) and ratios["classifier.weight"] == 1


def test_new_classifier_learns_faster_on_a_pretrained_backbone():
    cfg = small_cfg("DNET.PRETRAINED", "imagenet")
    model = build_model(small_cfg(), 10)  # weights are not needed to read the ratios
    ratios = model.lr_ratios(cfg)
    assert ratios["classifier.weight"] == 5 and ratios["snet.fc.weight"] == 1
    model.set_stage("sampling")
    assert model.lr_ratios(cfg)["classifier.weight"] == 1  # the sampling stage fine-tunes


def test_train_only_params():
    cfg = small_cfg("S2D.TRAIN_ONLY_PARAMS", "['space_head', 'classifier']")
    model = build_model(cfg, 10)
    model.set_stage("sampling")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"space_head", "classifier"}
    with pytest.raises(ConfigError, match="no parameter name starts with 'thetaa'.*theta_space"):
        build_model(small_cfg("S2D.TRAIN_ONLY_PARAMS", "['thetaa']"), 10).set_stage("sampling")


def test_partial_bn_freezes_all_but_the_first():
    net = tsm_backbone("resnet18", 4, 5, partial_bn=True)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    net.train()
    assert bns[0].training and bns[0].weight.requires_grad
    assert not any(b.training or b.weight.requires_grad for b in bns[1:])
    model = build_model(small_cfg("DNET.PARTIAL_BN", "True"), 10)
    model.set_stage("sampling")
    assert not model.dnet.stages[0][0].bn1.weight.requires_grad  # stage switches keep it frozen


def test_temporal_pool_halves_frames():
    net = tsm_backbone("resnet18", 4, 5, temporal_pool=True).eval()
    feat = net.forward_features(torch.randn(8, 3, 32, 32))
    assert feat.shape[0] == 4
    assert net(torch.randn(2, 4, 3, 32, 32)).shape == (2, 5)
    assert net.stages[1][0].conv1.num_segments == 2
    with pytest.raises(ValueError, match="ResNet backbones only"):
        tsm_backbone("mobilenetv2", 4, 5, temporal_pool=True)


def test_bad_fusion_stage():
    with pytest.raises(ConfigError, match="S2D.FUSION_STAGES: stage 5 does not exist"):
        build_model(small_cfg("S2D.FUSION_STAGES", "[5]"), 10)


def test_attention_pool_reads_where_it_attends():
    """With the attention sharp on one cell, the pooled vector ends with that cell's (t, y, x),
    and tanh of them is the cell centre's position in [-1, 1]: the sampler's centre units."""
    from s2d_fast.models.s2dnet import ThetaBody

    torch.manual_seed(0)
    body = ThetaBody(in_channels=4, channels=8, pool="attention")
    x = torch.rand(2, 4, 4, 2, 3)
    with torch.no_grad():
        y = body.convs(x)
        # Logits 0 everywhere but +50 at (t=3, y=0, x=2) for video 0 and (t=1, y=1, x=0) for video 1.
        body.attend.weight.zero_()
        body.attend.bias.zero_()
        marks = torch.zeros_like(y[:, :1])
        marks[0, 0, 3, 0, 2] = marks[1, 0, 1, 1, 0] = 50.0
        body.attend.register_forward_hook(lambda module, inputs, output: output + marks)
        pooled = body(x)
    assert pooled.shape == (2, 8 + 3)
    where = torch.tanh(pooled[:, -3:])
    expected = torch.tensor([[0.75, -0.5, 2 / 3], [-0.25, 0.5, -2 / 3]])
    assert torch.allclose(where, expected, atol=1e-4)
    assert torch.allclose(pooled[0, :8], F.normalize(y[0, :, 3, 0, 2], dim=0), atol=1e-4)


def test_attention_pool_moves_the_detail_frames_to_the_attended_time():
    """A time head with unit weight on the attended t puts the detail frames' centre at the
    attended SNet frame, whichever frame that is: what global average pooling cannot do."""
    torch.manual_seed(0)
    cfg = small_cfg("S2D.THETA_POOL", "attention")
    model = build_model(cfg, num_classes=10).eval()
    model.set_stage("sampling")
    frames, n_valid, _ = batch()
    t_s = cfg.SNET.NUM_FRAMES
    centres = []
    for frame in (0, t_s - 1):
        def pick(module, inputs, output, frame=frame):
            logits = torch.full_like(output, -50.0)
            logits[:, :, frame] = 50.0
            return logits
        hook = model.theta_time.attend.register_forward_hook(pick)
        with torch.no_grad():
            model.time_head.weight.zero_()
            model.time_head.weight[0, -3] = 1.0  # dt = the attended pre-tanh t
            out = model(frames, n_valid)
        hook.remove()
        n = n_valid.to(out["t_center"].dtype)
        identity = (4 - 1) / 2 * n / 4 + torch.floor(n / 8)  # the centre at the identity, K = 4
        centres.append((out["t_center"] - identity + (n - 1) / 2) / (n - 1))
    # SNet frame j covers the j-th of T_s segments: tanh(dt) = 2 (j + 0.5) / T_s - 1 moves the
    # centre from the identity's by (j + 0.5) / T_s - 1/2 of the video.
    assert torch.allclose(centres[0], torch.full_like(centres[0], 0.5 / t_s), atol=1e-4)
    assert torch.allclose(centres[1], torch.full_like(centres[1], 1 - 0.5 / t_s), atol=1e-4)


def test_one_warmup_serves_every_sampling_variant():
    """The sampling stage takes SNet, DNet and f_m from the warmup checkpoint and starts f_theta
    fresh, so a temporal-only or attention-pooled variant starts from the full model's warmup."""
    torch.manual_seed(0)
    warm = build_model(small_cfg(), num_classes=10)
    state = warm.state_dict()
    variant = build_model(small_cfg("S2D.SPATIAL_SAMPLING", "False", "S2D.THETA_POOL", "attention"), num_classes=10)
    variant.load_warmup(state)
    mine = variant.state_dict()
    for name, value in state.items():
        if name.startswith(("snet.", "dnet.", "context.", "fusion.", "classifier.")):
            assert torch.equal(mine[name], value), name
    assert not hasattr(variant, "space_head")
    assert torch.count_nonzero(variant.time_head.weight) == 0  # fresh: the identity
    other = build_model(small_cfg("S2D.CONTEXT_DIM", "8"), num_classes=10)
    with pytest.raises(ConfigError, match="warmup checkpoint does not fit this model.*context"):
        other.load_warmup(state)
