"""The authors' S2DNet (configs/mini_kinetics): every stage against the spec's formulas
(`authors_reference.py`, written from AUTHORS-S2DNET.md alone), their checkpoint layout, their
learning rates, schedule and parameter groups, and the paper's commands.

The numbers against the authors' real code (their repository run on a CPU, two videos of 150
and 97 frames) are in the README's "Differences from the authors' code" section; their code
never enters this repository."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import authors_reference as spec
import tsm_reference as ref
from s2d_fast.checkpoint import CheckpointError
from s2d_fast.config import ConfigError, learning_rates, load_config
from s2d_fast.data.frame_indices import all_frame_indices
from s2d_fast.engine.optim import lr_factor, parameter_groups
from s2d_fast.engine.trainer import describe_batch_and_lr
from s2d_fast.models import build_model, load_authors_checkpoint
from s2d_fast.models.sampler import linspace_indices

REPO = Path(__file__).resolve().parents[1]
WARMUP, SAMPLING = REPO / "configs/mini_kinetics/train_warmup.yaml", REPO / "configs/mini_kinetics/train_sampling.yaml"
PAPER = ["NUM_GPUS", "2", "TRAIN.BATCH_SIZE", "32", "SNET.ARCH", "mobilenetv2"]
# The authors' model, small: the same components at sizes a test runs in a second.
SMALL = ["SNET.INPUT_SIZE", "64", "SNET.NUM_FRAMES", "4", "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4",
         "DNET.INPUT_SIZE", "32", "DATA.SCALE_SIZE", "48", "DATA.CROP_SIZE", "48", "DATA.MAX_FRAMES", "20",
         "S2D.THETA_HIDDEN", "8", "S2D.CONTEXT_DIM", "16", "S2D.TOPK", "3", "SNET.PRETRAINED", "none",
         "DNET.PRETRAINED", "none", "DATA.MEAN", "[0.0, 0.0, 0.0]", "DATA.STD", "[1.0, 1.0, 1.0]", "NUM_GPUS", "0"]
CLASSES = 10


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics everywhere, f_theta's heads large enough to move the
    detail frames well away from the identity (some off the video's start)."""
    ref.randomise(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm3d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
        for head, scale in ((model.theta.time_offset, 0.3), (model.theta.time_stride, 0.1),
                            (model.theta.space_offset, 0.3), (model.theta.space_stride, 0.1)):
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * scale / head.weight.shape[1] ** 0.5)
    return model


@pytest.fixture(scope="module")
def small():
    cfg = load_config(SAMPLING, SMALL)
    torch.manual_seed(0)
    model = _randomised(build_model(cfg, CLASSES, pretrained=False))
    model.set_stage("sampling")
    return cfg, model.eval()


def _video(n: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised float video of n frames, padded (its last frame repeated) to 20 candidates."""
    video = torch.randn(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed)) * 0.7
    padded = torch.cat([video, video[-1:].expand(20 - n, -1, -1, -1)])
    return video, padded[None]


def _close(ours, theirs, tol=1e-5):
    """Ours runs in float32, the spec in float64; large heads amplify float32 rounding a little
    on the way to the detail frames, hence 5e-5 there and after."""
    ours, theirs = torch.as_tensor(ours).detach().double(), torch.as_tensor(theirs).detach().double()
    err = float((ours - theirs).abs().max() / theirs.abs().max().clamp(min=1e-12))
    assert err < tol, f"relative error {err:.2e}"


@pytest.mark.parametrize("n", [13, 20])
def test_every_stage_follows_the_authors_formulas(small, n):
    cfg, model = small
    video, frames = _video(n)
    captured = {}
    model.sampler.register_forward_hook(lambda m, a, out: captured.update(sampler=out))
    model.context.register_forward_hook(lambda m, a, out: captured.update(ctx=out))
    with torch.no_grad():
        out = model(frames, torch.tensor([n]))
        # SNet: 4 frames at floor((n-1) i / 3), nearest-resized 48 -> 64.
        x_s = model.uniform_frames(frames, torch.tensor([n]), 4, 64, "linspace", "nearest")
        _close(x_s, spec.nearest(video[spec.snet_frames(n, 4)], 64), 1e-7)
        e = model.snet.forward_features(x_s)
        somehot = torch.zeros(CLASSES).scatter_(0, out["z_s"][0].topk(3).indices, 1.0)
        assert torch.equal(out["mask"][0], somehot)
        trunk = spec.trunk(e.double(), somehot.double(), model.theta)
    detail, placement = captured["sampler"]
    t_center, t_stride, mu, t_weights = spec.temporal(float(trunk["o_t"]), float(trunk["l_t"]), n, 4)
    _close(placement["t_center"], t_center)
    _close(placement["t_stride"], t_stride)
    _close(placement["t_positions"][0], mu)
    assert min(mu) < 0 or max(mu) > n - 1 or n == 20  # the heads move frames off the video's ends
    params = [(float(trunk["offsets"][2 * j]), float(trunk["offsets"][2 * j + 1]),
               float(trunk["log_strides"][2 * j]), float(trunk["log_strides"][2 * j + 1])) for j in range(4)]
    for j, (o_x, o_y, l_x, l_y) in enumerate(params):
        c_x, d_x, _ = spec.spatial_bank(o_x, l_x, 48, 32)
        c_y, d_y, _ = spec.spatial_bank(o_y, l_y, 48, 32)
        _close(placement["centers"][0, j], [c_x, c_y])
        _close(placement["strides"][0, j], [d_x, d_y])
    _close(detail[0], spec.detail_frames(video, t_weights, params, 32), 5e-5)
    # Context, fusion after layer2 and layer3, the classifier per frame averaged, raw logits.
    g = e.mean(dim=(2, 3)).mean(0)
    ctx = torch.relu(model.context[0].weight.double() @ torch.cat([somehot.double(), g.double()])
                     + model.context[0].bias.double())
    _close(captured["ctx"][0], ctx, 5e-5)
    with torch.no_grad():
        feat = model.dnet.stem(detail[0].float())
        for i, stage in enumerate(model.dnet.stages, start=1):
            feat = stage(feat)
            if str(i) in model.fusion:
                feat = spec.fuse(feat, ctx, model.fusion[str(i)]).float()
    logits = spec.classifier(feat.mean(dim=(2, 3)), ctx, somehot, model.classifier)
    _close(out["z_d"][0], logits, 5e-5)
    _close(out["log_prob"][0], torch.log_softmax(logits, 0), 5e-5)  # all classes, no top-k mask
    _close(model.loss(out, torch.tensor([2]))["loss"], spec.loss(out["z_d"][0], out["z_s"][0], 2), 1e-6)


def test_the_warmup_looks_at_the_central_window_at_stride_one(small):
    cfg, model = small
    video, frames = _video(13)
    model.set_stage("warmup")
    try:
        with torch.no_grad():
            detail, placement = model._details(frames, torch.tensor([13]), model.snet.forward_features(
                model.uniform_frames(frames, torch.tensor([13]), 4, 64, "linspace", "nearest")), torch.zeros(1, CLASSES), 1)
    finally:
        model.set_stage("sampling")
    _, _, _, t_weights = spec.temporal(0.0, 0.0, 13, 4)
    _close(detail[0], spec.detail_frames(video, t_weights, None, 32, fixed=True))
    assert torch.equal(placement["strides"], torch.ones(1, 4, 2))


def test_the_fast_path_sums_what_the_dense_sampler_sums(small):
    cfg, model = small
    _, frames = _video(13)
    with torch.no_grad():
        fast = model(frames, torch.tensor([13]))["detail"]
        model.sampler.fast_path = False
        try:
            dense = model(frames, torch.tensor([13]))["detail"]
        finally:
            model.sampler.fast_path = True
    _close(fast, dense, 1e-6)


def test_snet_frames_are_the_truncated_linspace():
    for n in range(1, 301):
        assert linspace_indices(torch.tensor([n]), 16)[0].tolist() == spec.snet_frames(n, 16)
        assert linspace_indices(torch.tensor([n]), 16)[0].tolist() == torch.linspace(0, n - 1, 16).long().tolist()


def test_every_frame_up_to_150_and_the_training_trim():
    indices, n_valid = all_frame_indices(200, 150, train=False)
    assert indices.tolist() == list(range(150)) and n_valid == 150
    indices, n_valid = all_frame_indices(97, 150, train=False)
    assert indices[:97].tolist() == list(range(97)) and set(indices[97:].tolist()) == {96} and n_valid == 97
    import numpy as np

    starts, ends = set(), set()
    for seed in range(200):
        indices, n_valid = all_frame_indices(97, 150, train=True, rng=np.random.default_rng(seed), trim_div=16)
        frames = indices[:n_valid]
        assert (np.diff(frames) == 1).all()
        starts.add(int(frames[0]))
        ends.add(97 - int(frames[-1]) - 1)
    assert starts == set(range(7)) and ends == set(range(7))  # 97 // 16 = 6 frames off either end, at most
    # Their folders hold every second frame: a 30 fps, 10 s clip gives 150 of them.
    indices, n_valid = all_frame_indices(300, 150, train=False, stride=2)
    assert indices.tolist() == list(range(0, 300, 2)) and n_valid == 150
    indices, n_valid = all_frame_indices(97, 150, train=False, stride=2)
    assert indices[:49].tolist() == list(range(0, 97, 2)) and set(indices[49:].tolist()) == {96} and n_valid == 49
    with pytest.raises(ConfigError, match="DATA.FRAME_STRIDE"):
        load_config(WARMUP, ["DATA.CANDIDATES", "segments"])


def test_authors_checkpoint_layout_loads_strictly(tmp_path):
    """A state dict in the authors' `S2DNetwork` layout (TSM's TSN backbones, fusion convs,
    ctx layer, sampler) fills every weight, and fails naming keys when it does not fit."""
    cfg = load_config(SAMPLING, SMALL)
    model = build_model(cfg, CLASSES, pretrained=False)
    snet = ref.randomise(ref.TSN("mobilenetv2", 4, CLASSES), 1)
    dnet = ref.randomise(ref.TSN("resnet18", 4, CLASSES), 2)
    theirs = {f"SNet.model.{k}": v for k, v in snet.state_dict().items()}
    theirs.update({f"DNet.model.{k}": v for k, v in dnet.state_dict().items() if not k.startswith("new_fc.")})
    g = torch.Generator().manual_seed(5)
    for i, channels in enumerate((128, 256)):
        theirs[f"DNet.model.fusion_layers.{i}.0.weight"] = torch.randn(channels, channels + 16, 1, 1, 1, generator=g)
    theirs["DNet.model.new_fc.weight"] = torch.randn(CLASSES, 512 + 16 + CLASSES, generator=g)
    theirs["DNet.model.new_fc.bias"] = torch.randn(CLASSES, generator=g)
    theirs["DNet.ctx_feature_layer.0.weight"] = torch.randn(16, CLASSES + 1280, generator=g)
    theirs["DNet.ctx_feature_layer.0.bias"] = torch.randn(16, generator=g)
    names = {"space_time_convs.0.0": "trunk.0", "space_time_convs.1": "trunk.2", "space_time_convs.3.0": "trunk.4",
             "space_time_convs.4": "trunk.5", "space_time_convs.6.0": "trunk.7", "space_time_convs.7": "trunk.8",
             "fc_temporal_offset.0.0": "time_offset", "fc_temporal_stride.0.0": "time_stride",
             "fc_spatial_offset.0.0": "space_offset", "fc_spatial_stride.0.0": "space_stride"}
    own = model.theta.state_dict()
    for theirs_name, ours in names.items():
        for key, value in own.items():
            if key.startswith(ours + "."):
                theirs[f"DNet.sampler.{theirs_name}{key[len(ours):]}"] = torch.randn(value.shape, generator=g) \
                    if value.is_floating_point() else value
    report = load_authors_checkpoint(model, {"state_dict": {f"module.{k}": v for k, v in theirs.items()}})
    assert report["count"] == len(theirs)
    assert torch.equal(model.fusion["2"].context.weight[:, :, 0, 0], theirs["DNet.model.fusion_layers.0.0.weight"][:, 128:, 0, 0, 0])
    assert torch.equal(model.theta.trunk[4].weight, theirs["DNet.sampler.space_time_convs.3.0.weight"])
    model.eval()
    clip = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():  # the backbone mapping: our SNet gives their TSN's logits
        _close(model.snet(clip), snet.eval()(clip), 1e-4)
    torch.save(theirs, tmp_path / "theirs.pt")
    assert load_authors_checkpoint(build_model(cfg, CLASSES, pretrained=False), tmp_path / "theirs.pt")["count"] == len(theirs)
    del theirs["DNet.ctx_feature_layer.0.bias"]
    theirs["DNet.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 of its keys unused \(DNet.extra.weight\).*1 of the model's keys not given \(context.0.bias\)"):
        load_authors_checkpoint(build_model(cfg, CLASSES, pretrained=False), theirs)


def test_the_papers_commands_get_the_authors_batch_and_rates():
    """One 2-GPU machine: 32 per process x 2 = 64 videos; BASE_LR per video x 64."""
    warm = load_config(WARMUP, PAPER + ["TRAIN.BASE_LR", "1e-5"])
    base, ramp_start, batch = learning_rates(warm, 2)
    assert batch == 64 and base == pytest.approx(6.4e-4) and ramp_start == pytest.approx(3.2e-7)
    assert "global batch 64 (32 per process x 2 processes), learning rate 0.00064" in describe_batch_and_lr(warm, 2)
    samp = load_config(SAMPLING, PAPER + ["TRAIN.BASE_LR", "1e-6"])
    base, _, _ = learning_rates(samp, 2)
    assert base == pytest.approx(6.4e-5)
    # The schedule, per epoch: WARMUP_LR at epoch 0, BASE_LR at 5, then cosine to 1%.
    factor = lr_factor(samp, 10, base, 3.2e-7)
    assert factor(0) * base == pytest.approx(3.2e-7) and factor(5 * 10 + 9) == pytest.approx(1.0)
    assert factor(6 * 10) == pytest.approx(0.01 + 0.495 * (1 + math.cos(math.pi * 6 / 80)))
    assert factor(79 * 10) * base == pytest.approx(6.4e-5 * (0.01 + 0.495 * (1 + math.cos(math.pi * 79 / 80))))


def test_the_authors_parameter_groups():
    """Conv weights x1, Linear weights x5 and biases x10, BN x1, the sampler at 0.1 in the
    sampling stage; every parameter decays at 1e-3."""
    cfg = load_config(SAMPLING, SMALL + ["TRAIN.BASE_LR", "1.0", "TRAIN.BASE_LR_SCOPE", "batch"])
    model = build_model(cfg, CLASSES, pretrained=False)
    model.set_stage("sampling")
    lr = {id(p): group["lr"] for group in parameter_groups(model, cfg) for p in group["params"]}
    decay = {group["weight_decay"] for group in parameter_groups(model, cfg)}
    assert decay == {1e-3}
    assert lr[id(model.snet.stem[0][0].weight)] == 1.0 and lr[id(model.dnet.stages[0][0].bn1.weight)] == 1.0
    assert lr[id(model.classifier.weight)] == 5.0 and lr[id(model.classifier.bias)] == 10.0
    assert lr[id(model.context[0].weight)] == 5.0 and lr[id(model.snet.fc.bias)] == 10.0
    assert lr[id(model.fusion["2"].context.weight)] == 1.0  # a conv in their model
    assert lr[id(model.theta.trunk[4].weight)] == pytest.approx(0.1) and lr[id(model.theta.trunk[0].bias)] == pytest.approx(0.1)
    model.set_stage("warmup")
    assert id(model.theta.trunk[4].weight) not in {id(p) for g in parameter_groups(model, cfg) for p in g["params"]}


def test_the_sampling_stage_takes_the_whole_warmup_f_theta_included():
    cfg = load_config(SAMPLING, SMALL)
    warm = build_model(load_config(WARMUP, SMALL), CLASSES, pretrained=False)
    model = build_model(cfg, CLASSES, pretrained=False)
    model.load_warmup(warm.state_dict())
    assert torch.equal(model.theta.time_offset.weight, warm.theta.time_offset.weight)
    bound = math.sqrt(0.05 / model.theta.space_offset.weight.shape[1])  # the warmup's init factor
    assert warm.theta.space_offset.weight.abs().max() <= bound


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A stand-in for Mini-Kinetics big enough for the paper's batch: 64 training videos (one
    step of 32 per process x 2), 8 validation videos, 12 classes."""
    from s2d_fast.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("mini") / "data"
    return generate_synthetic(root, 64, 8, seed=5, fmt="webm", progress=False, workers=1, frame_size=48, num_frames=16)


def test_the_papers_three_commands_in_sequence(stand_in, tmp_path, capfd):
    """The README's warmup, sampling and test commands as typed (2 processes, here gloo on the
    CPU), shrunk to a seconds-long model: the batch and rates they print, stage 2 from the
    warmup checkpoint, and the evaluation's DNet and SNet accuracies."""
    from click.testing import CliRunner

    from s2d_fast.cli import main

    shrink = [*SMALL[:-2], "DIST.DEVICE", "cpu", "DATA.ROOT", str(stand_in), "DATA.NUM_CLASS", "12",
              "DATA.TRAIN_LIST", str(stand_in / "train.txt"), "DATA.VAL_LIST", str(stand_in / "val.txt"),
              "DATA.INPUT_FORMAT", "video", "DATA.NUM_WORKERS", "0", "DATA.MAX_FRAMES", "8",
              "DATA.MEAN", "[0.485, 0.456, 0.406]", "DATA.STD", "[0.229, 0.224, 0.225]",
              "TRAIN.EPOCHS", "1", "TRAIN.AMP", "none", "TEST.AMP", "none", "TEST.BATCH_SIZE", "4",
              "OUTPUT_DIR", str(tmp_path / "run")]

    def s2d(config, *args):
        result = CliRunner().invoke(main, ["train", "mini-kinetics", str(config), *map(str, args), *shrink])
        assert result.exit_code == 0, result.output
        return result.output + capfd.readouterr().err  # the log: rank 0's stderr

    out = s2d(WARMUP, "NUM_GPUS", "2", "TRAIN.BASE_LR", "1e-5", "TRAIN.BATCH_SIZE", "32", "SNET.ARCH", "mobilenetv2")
    assert "global batch 64 (32 per process x 2 processes), learning rate 0.00064" in out
    warmup_ckpt = tmp_path / "run" / "checkpoints" / "warmup-last.pt"
    out = s2d(SAMPLING, "NUM_GPUS", "2", "TRAIN.RESUME", warmup_ckpt, "TRAIN.BASE_LR", "1e-6",
              "TRAIN.BATCH_SIZE", "32", "SNET.ARCH", "mobilenetv2")
    assert "global batch 64 (32 per process x 2 processes), learning rate 6.4e-05" in out
    test_ckpt = tmp_path / "run" / "checkpoints" / "sampling-last.pt"
    sampled = torch.load(test_ckpt, weights_only=True)
    warmed = torch.load(warmup_ckpt, weights_only=True)
    assert sampled["stage"] == "sampling" and sampled["epoch"] == 1
    assert not torch.equal(sampled["model"]["theta.trunk.0.weight"], warmed["model"]["theta.trunk.0.weight"])
    out = s2d(SAMPLING, "NUM_GPUS", "2", "TRAIN.RESUME", test_ckpt, "TRAIN.BATCH_SIZE", "32",
              "SNET.ARCH", "mobilenetv2", "EVALUATE", "True")
    assert out.count("top1 ") == 1 and "(8 videos)" in out
    assert "the synopsis network alone: top-1" in out and "Traceback" not in out
