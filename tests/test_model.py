import pytest
import torch

from s2d_fast.config import load_config
from s2d_fast.models import build_model, s2d_loss, synopsis, tsm_backbone
from s2d_fast.models.sampler import (
    filter_bank,
    spatial_positions,
    temporal_positions,
    temporal_weights,
    uniform_indices,
)

SMALL = [
    "DATA.NUM_CANDIDATES", "12", "DATA.CROP_SIZE", "48",
    "SNET.ARCH", "mobilenetv2", "SNET.NUM_FRAMES", "4", "SNET.INPUT_SIZE", "32",
    "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "32",
    "S2D.TOPK", "3", "S2D.THETA_CHANNELS", "16", "S2D.EMBED_DIM", "8", "S2D.CONTEXT_DIM", "16",
]


def small_cfg(*extra):
    return load_config(None, SMALL + list(extra))


def batch(b=2, t=12, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)
    return frames, torch.tensor([t, t - 5][:b]), torch.tensor([1, 4][:b])


@pytest.mark.parametrize("arch,channels", [("resnet18", 512), ("resnet50", 2048), ("mobilenetv2", 1280)])
def test_backbone_shapes(arch, channels):
    net = tsm_backbone(arch, num_segments=4, num_classes=7).eval()
    x = torch.randn(2, 4, 3, 64, 64)
    assert net(x).shape == (2, 7)
    feat = net.forward_features(x.flatten(0, 1))
    assert feat.shape == (8, channels, 2, 2)
    assert net.pool(feat).shape == (2, channels)


def test_backbone_rejects_wrong_frame_count():
    net = tsm_backbone("resnet18", num_segments=4, num_classes=3)
    with pytest.raises(ValueError, match="built for 4 frames, got 3"):
        net(torch.randn(1, 3, 3, 32, 32))


def test_unknown_backbone_lists_the_available():
    with pytest.raises(ValueError, match="unknown backbone 'resnet5'.*resnet50"):
        tsm_backbone("resnet5", 8, 10)


def test_shift_placement_follows_tsm():
    from s2d_fast.models import TemporalShift

    r50 = tsm_backbone("resnet50", 8, 10)
    assert all(isinstance(block.conv1, TemporalShift) for layer in r50.stages for block in layer)
    r101 = tsm_backbone("resnet101", 8, 10)
    layer3 = r101.stages[2]
    assert [isinstance(b.conv1, TemporalShift) for b in layer3][:4] == [True, False, True, False]
    mb = tsm_backbone("mobilenetv2", 8, 10)
    shifted = [m for m in mb.modules() if isinstance(m, TemporalShift)]
    assert len(shifted) == 10  # the inverted-residual blocks with a shortcut


def test_s2dnet_forward_shapes_and_prediction_restricted_to_topk():
    cfg = small_cfg()
    model = build_model(cfg, num_classes=10).eval()
    frames, n_valid, _ = batch()
    out = model(frames, n_valid)
    assert out["z_s"].shape == out["z_d"].shape == (2, 10)
    assert out["detail"].shape == (2, 4, 3, 32, 32)
    probs = out["log_prob"].exp()
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    assert ((probs > 0) == (out["mask"] > 0)).all()
    assert (out["mask"].sum(1) == 3).all()
    # P(a) is softmax(z_d) times M, renormalised
    expected = torch.softmax(out["z_d"], 1) * out["mask"]
    assert torch.allclose(probs, expected / expected.sum(1, keepdim=True), atol=1e-6)


def test_synopsis_target():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    mask, s = synopsis(z, 2, "prob")
    assert mask.tolist() == [[1, 0, 1, 0]]
    e = torch.exp(torch.tensor([3.0, 2.0]))
    assert torch.allclose(s, torch.tensor([[e[0] / e.sum(), 0, e[1] / e.sum(), 0]]))
    mask2, s2 = synopsis(z, 2, "mask")
    assert torch.equal(s2, mask2)


def test_uniform_baseline_is_plain_tsm():
    cfg = small_cfg("S2D.DETAIL_SAMPLING", "False")
    model = build_model(cfg, num_classes=10)
    assert not hasattr(model, "snet")
    out = model(*batch()[:2])
    assert set(out) == {"z_d", "log_prob"}
    assert torch.allclose(out["log_prob"], torch.log_softmax(out["z_d"], 1))


def test_uniform_indices_are_tsn_segment_centres():
    idx = uniform_indices(torch.tensor([16, 3, 1]), 4)
    assert idx.tolist() == [[2, 6, 10, 14], [0, 1, 1, 2], [0, 0, 0, 0]]


def test_identity_at_start_is_uniform_frames_of_the_whole_image():
    # temporal: with n/k whole (odd or even, as the paper's 32/8), the identity's positions are
    # the uniform baseline's candidates themselves, so each detail frame is one clean candidate
    n = torch.tensor([12, 16, 32, 8])
    zeros = torch.zeros(4)
    mu, center, stride = temporal_positions(zeros, zeros, n, 4)
    assert torch.equal(mu, uniform_indices(n, 4).float())
    w = temporal_weights(mu, n, 32, "gaussian", 0.5)
    assert torch.equal(w.argmax(-1), uniform_indices(n, 4))
    assert (w.max(-1).values > 0.75).all()  # not a 50/50 blend of two candidates
    assert torch.allclose(w[0, :, 12:], torch.zeros(4, 20))  # never past the valid frames
    # spatial: at the detail size the filter bank is the identity; smaller, it spans the image
    c, s = spatial_positions(torch.zeros(1), torch.zeros(1), 32, 32)
    assert torch.allclose(filter_bank(c, s, 32, 32, 0.5)[0], torch.eye(32), atol=1e-6)
    c, s = spatial_positions(torch.zeros(1), torch.zeros(1), 64, 16)
    assert c.item() == pytest.approx(31.5) and s.item() == pytest.approx(4.0)
    f = filter_bank(c, s, 64, 16, 0.5)
    assert torch.allclose(f.sum(-1), torch.ones(1, 16), atol=1e-3)  # a constant image stays constant

    # end to end: with the heads at zero, detail frame j is candidate uniform_indices[j], whole
    for method in ("gaussian", "bilinear"):
        cfg = small_cfg("DNET.INPUT_SIZE", "48", "S2D.TEMPORAL_METHOD", "linear", "S2D.SPATIAL_METHOD", method)
        model = build_model(cfg, num_classes=10).eval()
        model.set_stage("sampling")  # the zero heads, not the warmup switch, make the identity
        frames, _, _ = batch()
        n_valid = torch.tensor([12, 8])  # n/k odd and even
        for grad in (True, False):  # the dense (training) path and the inference fast path
            with torch.set_grad_enabled(grad):
                detail = model(frames, n_valid)["detail"]
            idx = uniform_indices(n_valid, 4)
            picked = frames[torch.arange(2)[:, None], idx].float() / 255
            mean = torch.tensor(cfg.DATA.MEAN).view(1, 1, 3, 1, 1)
            std = torch.tensor(cfg.DATA.STD).view(1, 1, 3, 1, 1)
            assert torch.allclose(detail, (picked - mean) / std, atol=1e-4), (method, grad)


def test_window_outside_the_frame_reads_zeros():
    c, s = spatial_positions(torch.tensor([10.0]), torch.zeros(1), 32, 8)  # tanh -> centre at the edge
    f = filter_bank(c, s, 32, 8, 0.5)
    assert f[0, -1].sum() < 1e-3


def test_gradient_reaches_sampler_only_in_sampling_stage():
    cfg = small_cfg()
    frames, n_valid, labels = batch()
    for stage, expect in (("warmup", False), ("sampling", True)):
        model = build_model(cfg, num_classes=10)
        model.set_stage(stage)
        s2d_loss(model(frames, n_valid), labels, 1.0)["loss"].backward()
        grads = [p.grad for p in model.sampler_parameters()]
        has = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has == expect, stage
        assert all(p.requires_grad == expect for p in model.sampler_parameters())
        # SNet and DNet train in both stages
        assert model.snet.fc.weight.grad.abs().sum() > 0
        assert model.dnet.stem[0].weight.grad.abs().sum() > 0


def test_loss_includes_ground_truth_outside_topk():
    out = {
        "z_s": torch.tensor([[5.0, 4.0, -5.0]]),
        "z_d": torch.tensor([[0.0, 0.0, 1.0]]),
        "mask": torch.tensor([[1.0, 1.0, 0.0]]),
    }
    losses = s2d_loss(out, torch.tensor([2]), snet_weight=0.0)
    assert torch.isfinite(losses["loss"])
    assert losses["loss_detail"].item() == pytest.approx(-torch.log_softmax(torch.tensor([0.0, 0.0, 1.0]), 0)[2].item())
