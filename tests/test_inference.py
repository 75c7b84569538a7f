"""Inference as eval and predict run it: BatchNorm folded (the same function), TEST's speed
switches resolved per machine, and the compiled model (shift and gather included) against eager."""

from pathlib import Path

import pytest
import torch
from torch import nn

from s2d_fast.config import load_config
from s2d_fast.engine import runtime
from s2d_fast.engine.evaluate import evaluate
from s2d_fast.engine.runtime import AUTO_COMPILE_MIN_GMACS, compile_model, inference_settings
from s2d_fast.models import build_model, fold_batchnorm, tsm_backbone

from test_model import batch, small_cfg

REPO = Path(__file__).resolve().parents[1]


def _random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters away from the identity, so that folding them shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenetv2"])
def test_folding_every_backbone_bn_keeps_the_function(arch):
    net = _random_statistics(tsm_backbone(arch, num_segments=4, num_classes=7)).eval()
    x = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)
        bns = _count(net, nn.BatchNorm2d)
        assert fold_batchnorm(net) == bns  # every one of them: each follows a conv
        assert _count(net, nn.BatchNorm2d) == 0
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)


def test_folding_the_authors_model_keeps_its_outputs():
    """f_theta's Linear + BatchNorm1d pairs fold too; its BatchNorm3d follows a ReLU and stays."""
    cfg = load_config(REPO / "configs/mini_kinetics/train_sampling.yaml", [
        "SNET.INPUT_SIZE", "64", "SNET.NUM_FRAMES", "4", "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4",
        "DNET.INPUT_SIZE", "32", "DATA.SCALE_SIZE", "48", "DATA.CROP_SIZE", "48", "DATA.MAX_FRAMES", "12",
        "S2D.THETA_HIDDEN", "8", "S2D.CONTEXT_DIM", "16", "S2D.TOPK", "3", "SNET.PRETRAINED", "none",
        "DNET.PRETRAINED", "none", "NUM_GPUS", "0"])
    model = _random_statistics(build_model(cfg, 10, pretrained=False))
    model.set_stage("sampling")
    model.eval()
    frames, n_valid, _ = batch(t=12)
    with torch.no_grad():
        expected = model(frames, n_valid)
        fold_batchnorm(model)
        got = model(frames, n_valid)
    assert _count(model, nn.BatchNorm1d) == 0 and _count(model, nn.BatchNorm3d) == 1
    torch.testing.assert_close(got["z_d"], expected["z_d"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["detail"], expected["detail"], rtol=1e-4, atol=1e-4)


def test_folding_needs_eval_mode():
    with pytest.raises(RuntimeError, match="eval mode"):
        fold_batchnorm(tsm_backbone("resnet18", num_segments=2, num_classes=3))


@pytest.mark.parametrize("native", [True, False])
def test_auto_switches_follow_the_cpu(monkeypatch, native):
    monkeypatch.setattr(runtime, "native_bf16", lambda: native)
    cfg = load_config(None, [])
    cpu = torch.device("cpu")
    small, large = inference_settings(cfg, cpu, 200 * 2.2), inference_settings(cfg, cpu, AUTO_COMPILE_MIN_GMACS)
    assert (small.amp, small.channels_last, small.compile) == (("bf16", True, False) if native else ("none", False, False))
    assert large.compile == native and large.fold_bn
    assert "TEST.COMPILE" in small.describe() and ("native bf16" in small.describe())
    cuda = inference_settings(cfg, torch.device("cuda"), 10**9)  # not measured on GPUs: float32, eager
    assert (cuda.amp, cuda.channels_last, cuda.compile) == ("none", False, False)


def test_switches_set_by_hand_win(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    cfg = load_config(None, ["TEST.AMP", "none", "TEST.CHANNELS_LAST", "False", "TEST.COMPILE", "True",
                             "TEST.FOLD_BN", "False"])
    assert (cfg.TEST.CHANNELS_LAST, cfg.TEST.COMPILE) == ("off", "on")  # True / False read as on / off
    settings = inference_settings(cfg, torch.device("cpu"), 1)
    assert (settings.amp, settings.channels_last, settings.compile, settings.fold_bn) == ("none", False, True, False)
    assert settings.chosen == () and "auto" not in settings.describe()


def test_compiled_inference_matches_eager_and_calls_no_opaque_op():
    """The S2DNet eval graph holds no s2d_fast custom op on the CPU path (the shift and the
    gather are plain torch, which Inductor fuses), and Inductor's bf16 code with weight
    freezing and folded BN gives eager float32's outputs to bf16 accuracy."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(small_cfg("SNET.ARCH", "resnet18"), 10)
    model.set_stage("sampling")
    model.eval()
    frames, n_valid, labels = batch()
    with torch.no_grad():
        model.snet.fc.weight.normal_(0, 1)  # synopsis logits far apart: bf16 keeps their top-k
        expected = model(frames, n_valid)
    ranked = expected["z_s"].sort(dim=1, descending=True).values
    assert (ranked[:, 2] - ranked[:, 3]).min() > 0.1
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.no_grad():
        torch.compile(model, backend=record, fullgraph=True)(frames, n_valid)
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    assert targets and not [t for t in targets if "s2d_fast" in t]

    torch._dynamo.reset()
    fold_batchnorm(model)
    runtime.to_device(model, torch.device("cpu"), channels_last=True)
    compiled = compile_model(model, True, "default", training=False)
    with torch.no_grad(), runtime.autocast(torch.device("cpu"), "bf16"):
        got = compiled(frames, n_valid)
    assert torch.equal(got["mask"], expected["mask"])  # the same synopsis top-k
    torch.testing.assert_close(got["log_prob"].float(), expected["log_prob"], rtol=0.05, atol=0.05)
    torch.testing.assert_close(got["detail"].float(), expected["detail"], rtol=0.02, atol=0.02)
    # `eval` with TEST.COMPILE on scores the videos through that compiled graph, in list order.
    videos = [{"frames": frames[i], "n_valid": n_valid[i], "label": label, "index": i, "valid": True}
              for i, label in enumerate(labels.tolist())]
    metrics, (indices, scores, _) = evaluate(compiled, torch.utils.data.DataLoader(videos, batch_size=2),
                                             torch.device("cpu"), amp_dtype="bf16")
    assert metrics["num_videos"] == 2 and indices.tolist() == [0, 1]
    torch.testing.assert_close(torch.from_numpy(scores), got["log_prob"].float().exp(), rtol=1e-3, atol=1e-3)
