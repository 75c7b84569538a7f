"""S2D.EVIDENCE_LOSS_WEIGHT: f_theta pulled toward where SNet's class activation map shows its top class."""

import pytest
import torch

from s2d_fast.config import ConfigError, load_config
from s2d_fast.models import build_model
from s2d_fast.models.sampler import uniform_indices

from test_model import SMALL, batch


def _model(*extra):
    torch.manual_seed(0)
    model = build_model(load_config(None, SMALL + list(extra)), 6)
    model.set_stage("sampling")
    return model


def _feature_map(b, t, c, h, w, hot):
    """SNet features that are zero but for channel 0 at each video's (frame, y, x) in `hot`."""
    e = torch.zeros(b * t, c, h, w)
    for i, (frame, y, x) in enumerate(hot):
        e[i * t + frame, 0, y, x] = 50.0
    return e


def test_evidence_finds_the_frame_and_place_of_the_top_class():
    model = _model("S2D.EVIDENCE_LOSS_WEIGHT", "1", "S2D.EVIDENCE_TEMPERATURE", "0.01")
    c = model.snet.num_features
    with torch.no_grad():
        model.snet.fc.weight.zero_()
        model.snet.fc.bias.zero_()
        model.snet.fc.weight[2, 0] = 1.0  # class 2 reads channel 0
    e = _feature_map(2, 4, c, 2, 2, [(1, 0, 1), (3, 1, 0)])
    z_s = torch.zeros(2, 6)
    z_s[:, 2] = 1.0
    n_valid = torch.tensor([12, 7])
    center, stride, xy = model.evidence(e, z_s, n_valid, (48, 40))
    # A sharp map: the centre is the candidate SNet read as that frame, the spread nil.
    index = uniform_indices(n_valid, 4)
    torch.testing.assert_close(center, torch.stack([index[0, 1], index[1, 3]]).float())
    torch.testing.assert_close(stride, torch.zeros(2), atol=1e-4, rtol=0)
    # Cells of a 2x2 map over 40 x 48 px (W x H) are centred at x 9.5 / 29.5, y 11.5 / 35.5.
    torch.testing.assert_close(xy, torch.tensor([[29.5, 11.5], [9.5, 35.5]]))


def test_evidence_spread_sets_the_comb_stride():
    model = _model("S2D.EVIDENCE_LOSS_WEIGHT", "1", "S2D.EVIDENCE_TEMPERATURE", "1000")
    c = model.snet.num_features
    e = _feature_map(1, 4, c, 2, 2, [(0, 0, 0)])
    center, stride, _ = model.evidence(e, torch.zeros(1, 6), torch.tensor([12]), (48, 48))
    # A flat map weights SNet's four frames (candidates 1, 4, 7, 10) alike: centre 5.5, spread
    # sqrt(11.25), and the comb of 4 detail frames spans two spreads.
    index = uniform_indices(torch.tensor([12]), 4)[0].float()
    assert center.item() == pytest.approx(index.mean().item(), abs=0.01)
    assert stride.item() == pytest.approx(2 * index.std(unbiased=False).item() / 3, abs=0.01)


def test_evidence_loss_trains_only_the_sampler_and_only_in_the_sampling_stage():
    model = _model("S2D.EVIDENCE_LOSS_WEIGHT", "2")
    frames, n_valid, labels = batch()
    out = model(frames, n_valid)
    losses = model.loss(out, labels)
    assert losses["loss_evidence"] > 0
    plain = _model()(frames, n_valid)
    assert "loss_evidence" not in plain
    still = _model("S2D.EVIDENCE_LOSS_WEIGHT", "2", "S2D.TEMPORAL_SAMPLING", "False", "S2D.SPATIAL_SAMPLING", "False")
    assert "loss_evidence" not in still(frames, n_valid)  # nothing to pull
    # The total is the plain loss plus the weighted term.
    without = {k: v for k, v in out.items() if k != "loss_evidence"}
    torch.testing.assert_close(losses["loss"], model.loss(without, labels)["loss"] + 2 * out["loss_evidence"])
    model.zero_grad()
    out["loss_evidence"].backward()
    moved = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved and all(n.startswith(("theta_", "time_head", "space_head", "embed", "snet.")) for n in moved)
    assert any(n.startswith(("time_head", "space_head")) for n in moved)
    model.set_stage("warmup")
    assert "loss_evidence" not in model(frames, n_valid)
    model.eval()
    model.set_stage("sampling")
    with torch.no_grad():
        assert "loss_evidence" not in model(frames, n_valid)  # evaluation computes nothing extra


@pytest.mark.parametrize("pairs,message", [
    (("S2D.EVIDENCE_LOSS_WEIGHT", "-1"), "S2D.EVIDENCE_LOSS_WEIGHT must be >= 0"),
    (("S2D.EVIDENCE_TEMPERATURE", "0"), "S2D.EVIDENCE_TEMPERATURE must be positive"),
    (("S2D.EVIDENCE_ZOOM", "-1"), "S2D.EVIDENCE_ZOOM must be >= 0"),
    (("S2D.EVIDENCE_LOSS_WEIGHT", "1", "SNET.ARCH", "resnet18", "SNET.TEMPORAL_POOL", "True"),
     "set SNET.TEMPORAL_POOL False"),
    (("S2D.EVIDENCE_FRAME", "saliency-logit"), "S2D.EVIDENCE_FRAME saliency-logit weighs the saliency's frames: "
     "set S2D.EVIDENCE_MAP saliency"),
])
def test_bad_evidence_settings_are_refused(pairs, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, SMALL + list(pairs))


def test_a_sampling_run_with_the_evidence_loss_logs_it(tiny_dataset, tmp_path):
    """Through the trainer: the term is logged, and the step's picture leaves it out."""
    from helpers import tiny_run
    from s2d_fast.engine.trainer import train

    warmup = load_config(None, tiny_run(tiny_dataset, tmp_path))
    train(warmup)
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.STAGE", "sampling", "S2D.EVIDENCE_LOSS_WEIGHT", "5",
                                     "TRAIN.VIS_PERIOD", "1"))
    result = train(cfg).value
    assert result["checkpoint"]
    assert "loss_evidence=" in (tmp_path / "log_sampling.txt").read_text()


@pytest.mark.parametrize("parameterisation", ["s2d-fast", "authors"])
def test_the_zoom_target_is_zero_at_that_zoom(parameterisation):
    """S2D.EVIDENCE_ZOOM z: the stride term vanishes where every window is 1/z of the identity's."""
    model = _model("S2D.EVIDENCE_LOSS_WEIGHT", "1", "S2D.EVIDENCE_ZOOM", "2", "S2D.TEMPORAL_SAMPLING", "False",
                   "S2D.PARAMETERISATION", parameterisation)
    c = model.snet.num_features
    e = _feature_map(1, 4, c, 2, 2, [(0, 0, 0)])
    z_s = torch.zeros(1, 6)
    evidence = model.evidence(e, z_s, torch.tensor([12]), (48, 48))
    xy = evidence[2]
    s = model.dnet_size
    identity = 48 / (s - 1 if parameterisation == "authors" else s)
    placement = {"centers": xy[:, None, :].expand(1, 4, 2), "strides": torch.full((1, 4, 2), identity / 2)}
    assert model._evidence_loss(evidence, torch.tensor([12]), (48, 48), placement).item() == pytest.approx(0, abs=1e-6)
    placement["strides"] = torch.full((1, 4, 2), identity)  # the identity: log 2 away
    loss = model._evidence_loss(evidence, torch.tensor([12]), (48, 48), placement).item()
    assert loss == pytest.approx(torch.log(torch.tensor(2.0)).item() - 0.025, abs=1e-5)


def test_a_warmup_with_another_f_theta_starts_the_trunk_sampling_stage():
    """The warmup never trains f_theta, so a warmup built with the conv3d f_theta starts a
    sampling stage with the trunk: the trunk keeps its init, every other weight comes from the
    warmup; a backbone that does not fit is still refused."""
    warmup = _model()
    warmup.set_stage("warmup")
    state = {k: v + 1 if v.is_floating_point() else v for k, v in warmup.state_dict().items()}
    trunk = _model("S2D.THETA", "trunk")
    built = {k: v.clone() for k, v in trunk.state_dict().items()}
    trunk.load_warmup(state)
    after = trunk.state_dict()
    for k, v in after.items():
        expected = built[k] if k.startswith("theta.") else state[k]
        torch.testing.assert_close(v, expected, msg=k)
    broken = {k: v for k, v in state.items() if not k.startswith("dnet.stem.")}
    with pytest.raises(ConfigError, match="missing dnet.stem"):
        _model("S2D.THETA", "trunk").load_warmup(broken)


@pytest.mark.parametrize("scope", ["all", "sampler-apart"])
def test_the_sampler_gradient_is_clipped_apart_from_the_networks(scope):
    """TRAIN.CLIP_GRAD_SCOPE sampler-apart: a large f_theta gradient (the evidence loss') is
    bounded on its own and leaves DNet's step as it was; clipped with it, DNet's shrinks."""
    from s2d_fast.engine.trainer import clip_groups
    from torch import nn

    model = _model("S2D.EVIDENCE_LOSS_WEIGHT", "10")
    sampler = {id(p) for p in model.sampler_parameters()}
    assert sampler
    for p in model.parameters():
        p.grad = torch.full_like(p, 1.0 if id(p) in sampler else 1e-4)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    groups = clip_groups(model, scope)
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in model.parameters())
    for group in groups:
        nn.utils.clip_grad_norm_(group, 20.0)
    theta = torch.cat([p.grad.flatten() for p in model.parameters() if id(p) in sampler])
    networks = [(n, p) for n, p in model.named_parameters() if id(p) not in sampler]
    if scope == "sampler-apart":
        assert len(groups) == 2 and theta.norm() == pytest.approx(20.0, rel=1e-4)
        assert all(torch.equal(p.grad, before[n]) for n, p in networks)
    else:
        assert len(groups) == 1
        assert all(torch.all(p.grad < before[n]) for n, p in networks)


@pytest.mark.parametrize("param", ["exp", "bounded"])
def test_the_anchor_parameters_map_back_to_the_anchor(param):
    from s2d_fast.models.sampler import spatial_parameters, spatial_positions, temporal_parameters, temporal_positions

    n_valid = torch.tensor([16, 11, 16])
    center, stride = torch.tensor([6.5, 2.0, 12.5]), torch.tensor([1.0, 0.5, 1.5])
    dt_lt = temporal_parameters(center, stride, n_valid, 4, 1.0, param)
    _, c, d = temporal_positions(dt_lt[:, 0], dt_lt[:, 1], n_valid, 4, 1.0, param)
    assert torch.allclose(c, center, atol=1e-4) and torch.allclose(d, stride, atol=1e-4)
    x = torch.tensor([3.0, 55.5, 100.0])
    d_, l_ = spatial_parameters(x, 1.5, 112, param)
    cx, sx = spatial_positions(d_, l_, 112, 96, param)
    assert torch.allclose(cx, x, atol=1e-3) and torch.allclose(sx, torch.full_like(x, 112 / 96 / 1.5), atol=1e-5)


def test_saliency_evidence_finds_the_most_salient_frame_and_point():
    model = _model("S2D.EVIDENCE_MAP", "saliency", "S2D.SAMPLER_ANCHOR", "evidence")
    saliency = torch.zeros(2, 4, 32, 32)  # SNet's 4 frames of 32 px
    saliency[0, 2, 8, 24] = 5.0  # video 0: frame 2, its next neighbour more salient than the one before
    saliency[0, 3, 0, 0], saliency[0, 1, 0, 0] = 2.0, 1.0
    saliency[1, 0, 31, 0] = 5.0  # video 1: the first frame, so the comb leans on the second
    n_valid = torch.tensor([12, 8])
    center, stride, xy = model._saliency_evidence(saliency, n_valid, (48, 48))
    index = uniform_indices(n_valid, 4).float()
    assert center.tolist() == [index[0, 2].item() + 0.5, index[1, 0].item() + 0.5]
    assert stride.tolist() == [1.0, 1.0]
    assert xy.tolist() == [[24.5 * 1.5 - 0.5, 8.5 * 1.5 - 0.5], [0.5 * 1.5 - 0.5, 31.5 * 1.5 - 0.5]]


@pytest.mark.parametrize("frame", ["saliency", "saliency-logit"])
def test_saliency_logit_evidence_takes_the_frame_the_top_class_is_read_in(frame):
    """S2D.EVIDENCE_FRAME saliency-logit: each frame's saliency peak weighed by the softmax over
    frames of the top class's logit on that frame alone; the window at that frame's salient point."""
    model = _model("S2D.EVIDENCE_MAP", "saliency", "S2D.SAMPLER_ANCHOR", "evidence", "S2D.EVIDENCE_FRAME", frame)
    with torch.no_grad():
        model.snet.fc.weight.zero_()
        model.snet.fc.bias.zero_()
        model.snet.fc.weight[2, 0] = 1.0  # class 2 reads channel 0
    e = _feature_map(2, 4, model.snet.num_features, 2, 2, [(1, 0, 1), (3, 1, 0)])  # class 2 on frames 1 and 3
    z_s = torch.zeros(2, 6)
    z_s[:, 2] = 1.0
    saliency = torch.zeros(2, 4, 32, 32)
    saliency[0, 2, 0, 0], saliency[0, 1, 8, 24] = 5.0, 2.0  # video 0: the most salient frame is not class 2's
    saliency[1, 0, 0, 0], saliency[1, 3, 31, 0] = 5.0, 1.0
    n_valid = torch.tensor([12, 8])
    center, stride, xy = model.evidence(e, z_s, n_valid, (48, 48), saliency)
    index = uniform_indices(n_valid, 4).float()
    if frame == "saliency":
        assert center.tolist() == [index[0, 2].item() - 0.5, index[1, 0].item() + 0.5]
        assert xy.tolist() == [[0.5 * 1.5 - 0.5] * 2] * 2
    else:  # the comb leans toward the neighbour of the larger weighed peak: video 0's frame 2, video 1's none after
        assert center.tolist() == [index[0, 1].item() + 0.5, index[1, 3].item() - 0.5]
        assert xy.tolist() == [[24.5 * 1.5 - 0.5, 8.5 * 1.5 - 0.5], [0.5 * 1.5 - 0.5, 31.5 * 1.5 - 0.5]]
    assert stride.tolist() == [1.0, 1.0]


def test_an_anchored_sampler_starts_where_the_evidence_is(monkeypatch):
    """S2D.SAMPLER_ANCHOR evidence: with f_theta's zero heads, the comb's centre and stride and
    every window are SNet's evidence, at S2D.EVIDENCE_ZOOM; the saliency works in evaluation."""
    model = _model("S2D.EVIDENCE_MAP", "saliency", "S2D.SAMPLER_ANCHOR", "evidence", "S2D.EVIDENCE_ZOOM", "2")
    frames, n_valid, _ = batch()
    seen = {}

    def evidence(e, z_s, n, hw, saliency):
        assert saliency is not None and saliency.shape == (2, 4, 32, 32) and saliency.abs().sum() > 0
        seen["evidence"] = (torch.tensor([5.5, 3.5]), torch.tensor([1.0, 1.0]), torch.tensor([[10.0, 30.0], [40.0, 6.0]]))
        return seen["evidence"]

    monkeypatch.setattr(model, "evidence", evidence)
    model.eval()
    with torch.no_grad():
        out = model(frames, n_valid)
    assert torch.allclose(out["t_center"], torch.tensor([5.5, 3.5]), atol=1e-4)
    assert torch.allclose(out["t_stride"], torch.tensor([1.0, 1.0]), atol=1e-4)
    assert torch.allclose(out["centers"], seen["evidence"][2][:, None, :].expand(2, 4, 2), atol=1e-3)
    assert torch.allclose(out["strides"], torch.full((2, 4, 2), 48 / 32 / 2), atol=1e-5)
    model.train()
    out = model(frames, n_valid)  # training: SNet's graph kept for the loss after the saliency's backward
    model.loss(out, torch.tensor([1, 4]))["loss"].backward()
    assert model.snet.fc.weight.grad is not None


def test_the_anchor_needs_the_s2d_fast_parameterisation():
    with pytest.raises(ConfigError, match="S2D.SAMPLER_ANCHOR evidence moves the s2d-fast sampler's parameters"):
        load_config(None, SMALL + ["S2D.SAMPLER_ANCHOR", "evidence", "S2D.PARAMETERISATION", "authors"])


def test_a_warmup_at_the_evidence_trains_dnet_on_the_windows_the_sampler_will_start_from(monkeypatch):
    """S2D.WARMUP_WINDOW evidence: the warmup's sampling (f_theta untrained) is SNet's evidence
    placement, the same one S2D.SAMPLER_ANCHOR evidence starts the sampling stage from."""
    fixed = (torch.tensor([4.5, 2.5]), torch.tensor([1.0, 1.0]), torch.tensor([[12.0, 20.0], [30.0, 8.0]]))
    outs = {}
    for stage, window, anchor in (("warmup", "evidence", "identity"), ("sampling", "whole", "evidence")):
        model = _model("S2D.EVIDENCE_MAP", "saliency", "S2D.WARMUP_WINDOW", window, "S2D.SAMPLER_ANCHOR", anchor,
                       "S2D.EVIDENCE_ZOOM", "1.5")
        model.set_stage(stage)
        monkeypatch.setattr(model, "evidence", lambda *args: fixed)
        outs[stage] = model(*batch()[:2])
    for key in ("t_positions", "centers", "strides"):
        assert torch.allclose(outs["warmup"][key], outs["sampling"][key], atol=1e-4)
    assert torch.allclose(outs["warmup"]["strides"], torch.full((2, 4, 2), 48 / 32 / 1.5), atol=1e-5)
    with pytest.raises(ConfigError, match="S2D.WARMUP_WINDOW evidence moves the s2d-fast sampler's parameters"):
        load_config(None, SMALL + ["S2D.WARMUP_WINDOW", "evidence", "S2D.PARAMETERISATION", "authors"])


@pytest.mark.parametrize("learns", ["time", "space"])
def test_an_ablation_keeps_the_axis_it_does_not_learn_at_the_anchor(monkeypatch, learns):
    """temporal-only / spatial-only from an anchored warmup: f_theta learns one axis; the other
    stays where the warmup sampled (the evidence), not at the uniform whole frames."""
    fixed = (torch.tensor([4.5, 2.5]), torch.tensor([1.0, 1.0]), torch.tensor([[12.0, 20.0], [30.0, 8.0]]))
    flags = ["S2D.TEMPORAL_SAMPLING", str(learns == "time"), "S2D.SPATIAL_SAMPLING", str(learns == "space")]
    model = _model("S2D.EVIDENCE_MAP", "saliency", "S2D.SAMPLER_ANCHOR", "evidence", "S2D.EVIDENCE_ZOOM", "1.5", *flags)
    monkeypatch.setattr(model, "evidence", lambda *args: fixed)
    with torch.no_grad():
        for p in model.sampler_parameters():  # f_theta has moved away from zero on the axis it learns
            p.normal_(0, 0.5)
    out = model(*batch()[:2])
    if learns == "time":
        assert torch.allclose(out["centers"], fixed[2][:, None, :].expand(2, 4, 2), atol=1e-3)
        assert torch.allclose(out["strides"], torch.full((2, 4, 2), 48 / 32 / 1.5), atol=1e-5)
        assert not torch.allclose(out["t_center"], fixed[0], atol=1e-2)
    else:
        assert torch.allclose(out["t_center"], fixed[0], atol=1e-4)
        assert torch.allclose(out["t_stride"], fixed[1], atol=1e-4)
        assert not torch.allclose(out["strides"], torch.full((2, 4, 2), 48 / 32 / 1.5), atol=1e-3)
