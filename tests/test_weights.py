"""Loading TSM reference checkpoints, ImageNet weights and s2d-fast backbones into our backbones."""

from pathlib import Path

import pytest
import torch
import torchvision

import tsm_reference as ref
from s2d_fast.checkpoint import CheckpointError, save_checkpoint
from s2d_fast.models import tsm_backbone
from s2d_fast.models.weights import (
    IncompatibleCheckpointError,
    imagenet_file,
    load_pretrained,
    load_tsm_checkpoint,
)

SEGMENTS = 4


def _video(size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, SEGMENTS, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_same_logits(ours: torch.nn.Module, theirs: torch.nn.Module, size: int = 64) -> None:
    video = _video(size)
    with torch.no_grad():
        expected = theirs.eval()(video)
        got = ours.eval()(video)
    assert got.shape == expected.shape
    err = (got - expected).abs().max() / expected.abs().max()
    assert err < 1e-4, f"relative error {err:.2e}"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101", "mobilenetv2"])
def test_reference_checkpoint_gives_reference_logits(arch, tmp_path):
    theirs = ref.randomise(ref.TSN(arch, SEGMENTS, 7))
    path = tmp_path / "tsm.pth.tar"
    torch.save(ref.checkpoint(theirs, epoch=12, arch=arch), path)
    ours = tsm_backbone(arch, SEGMENTS, 7)
    report = load_tsm_checkpoint(ours, path)
    assert report == {"missing": [], "unexpected": [], "skipped": [], "epoch": 12, "source": str(path)}
    _assert_same_logits(ours, theirs, size=32 if arch == "resnet101" else 64)


def test_bare_state_dict_without_module_prefix():
    theirs = ref.randomise(ref.TSN("resnet18", SEGMENTS, 5), seed=3)
    ours = tsm_backbone("resnet18", SEGMENTS, 5)
    report = load_tsm_checkpoint(ours, theirs.state_dict())
    assert report["epoch"] is None and report["source"] == "state dict"
    _assert_same_logits(ours, theirs)


def test_missing_and_unexpected_keys_are_named():
    state = ref.TSN("resnet18", SEGMENTS, 5).state_dict()
    state.pop("base_model.layer2.1.bn2.running_var")
    state["base_model.extra.weight"] = torch.zeros(3)
    ours = tsm_backbone("resnet18", SEGMENTS, 5)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError) as err:
        load_tsm_checkpoint(ours, state)
    assert "1 missing keys: stages.1.1.bn2.running_var" in str(err.value)
    assert "1 unexpected keys: base_model.extra.weight" in str(err.value)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in before.items()), "strict failure must load nothing"

    report = load_tsm_checkpoint(ours, state, strict=False)
    assert report["missing"] == ["stages.1.1.bn2.running_var"]
    assert report["unexpected"] == ["base_model.extra.weight"]
    assert torch.equal(ours.stages[1][1].bn2.running_mean, state["base_model.layer2.1.bn2.running_mean"])


def test_class_count_mismatch_is_explained_and_skipped_when_not_strict():
    theirs = ref.randomise(ref.TSN("mobilenetv2", SEGMENTS, 400))
    ours = tsm_backbone("mobilenetv2", SEGMENTS, 10)
    message = r"classifier module.new_fc has 400 classes, the model's 10 .*strict=False"
    with pytest.raises(IncompatibleCheckpointError, match=message):
        load_tsm_checkpoint(ours, ref.checkpoint(theirs))
    fc = ours.fc.weight.clone()
    report = load_tsm_checkpoint(ours, ref.checkpoint(theirs), strict=False)
    assert report["skipped"] == ["module.new_fc.weight", "module.new_fc.bias"]
    assert report["missing"] == ["fc.weight", "fc.bias"] and report["unexpected"] == []
    assert torch.equal(ours.fc.weight, fc)
    last = ours.stages[-1][-1][0].weight  # features.18: conv_1x1_bn
    assert torch.equal(last, theirs.base_model.features[18][0].weight)


def test_wrong_architecture_names_the_tensor():
    state = ref.TSN("resnet18", SEGMENTS, 5).state_dict()
    state_1ch = {**state, "base_model.conv1.weight": torch.zeros(64, 1, 7, 7)}
    message = r"conv1.weight has shape \(64, 1, 7, 7\), the model's stem.0.weight \(64, 3, 7, 7\)"
    with pytest.raises(IncompatibleCheckpointError, match=message):
        load_tsm_checkpoint(tsm_backbone("resnet18", SEGMENTS, 5), state_1ch)
    with pytest.raises(IncompatibleCheckpointError, match="missing keys: .*unexpected keys: "):
        load_tsm_checkpoint(tsm_backbone("mobilenetv2", SEGMENTS, 5), state)


class _Payload:
    """Unpickling this would run `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_file_needing_code_to_unpickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "epoch": _Payload(marker)}, path)
    ours = tsm_backbone("resnet18", SEGMENTS, 5)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_tsm_checkpoint(ours, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_pretrained(ours, str(path))
    assert not marker.exists()


def test_s2d_fast_checkpoint_backbone_by_prefix(tmp_path):
    snet = tsm_backbone("mobilenetv2", SEGMENTS, 5)
    dnet = tsm_backbone("resnet18", SEGMENTS, 0)
    ref.randomise(snet, seed=4), ref.randomise(dnet, seed=5)
    model = {f"{name}.{k}": v for name, net in (("snet", snet), ("dnet", dnet)) for k, v in net.state_dict().items()}
    path = save_checkpoint({"model": model, "stage": "warmup", "epoch": 3}, tmp_path / "warmup_last.pth")

    fresh = tsm_backbone("mobilenetv2", SEGMENTS, 5)
    line = load_pretrained(fresh, str(path), prefix="snet.")
    assert line.startswith("snet of s2d-fast checkpoint") and "epoch 3" in line and "classifier loaded" in line
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in snet.state_dict().items())

    # DNet has no classifier; a fine-tuning SNet with another class count keeps its own.
    assert "no classifier" in load_pretrained(tsm_backbone("resnet18", SEGMENTS, 0), str(path), prefix="dnet.")
    other_classes = tsm_backbone("mobilenetv2", SEGMENTS, 9)
    assert "5 classes, the model's 9" in load_pretrained(other_classes, str(path), prefix="snet.")
    with pytest.raises(CheckpointError, match=r"no weights under 'theta.' .*dnet\., snet\."):
        load_pretrained(fresh, str(path), prefix="theta.")
    with pytest.raises(CheckpointError, match="say which network"):
        load_pretrained(fresh, str(path))
    with pytest.raises(IncompatibleCheckpointError, match="unexpected keys"):
        load_pretrained(tsm_backbone("resnet18", SEGMENTS, 5), str(path), prefix="snet.")


def test_uniform_baseline_checkpoint_starts_the_synopsis_network(tmp_path):
    tsm = ref.randomise(tsm_backbone("resnet18", SEGMENTS, 5), seed=6)
    model = {f"dnet.{k}": v for k, v in tsm.state_dict().items()}  # S2D.DETAIL_SAMPLING False
    path = save_checkpoint({"model": model, "stage": "warmup", "epoch": 8}, tmp_path / "uniform.pt")
    snet = tsm_backbone("resnet18", SEGMENTS, 5)
    line = load_pretrained(snet, str(path), prefix="snet.")
    assert line.startswith("the plain TSM of s2d-fast checkpoint") and "classifier loaded" in line
    assert all(torch.equal(v, snet.state_dict()[k]) for k, v in tsm.state_dict().items())
    with pytest.raises(IncompatibleCheckpointError):  # still every body weight must fit
        load_pretrained(tsm_backbone("mobilenetv2", SEGMENTS, 5), str(path), prefix="snet.")


def test_pretrained_tsm_path_and_none(tmp_path):
    theirs = ref.randomise(ref.TSN("resnet18", SEGMENTS, 400))
    path = tmp_path / "TSM_kinetics_RGB_resnet18.pth"
    torch.save(ref.checkpoint(theirs, epoch=50, arch="resnet18"), path)
    dnet = tsm_backbone("resnet18", SEGMENTS, 0)
    assert load_pretrained(dnet, str(path)) == f"TSM checkpoint {path} (resnet18, epoch 50); no classifier"
    assert torch.equal(dnet.stages[3][1].conv2.weight, theirs.base_model.layer4[1].conv2.weight)
    assert load_pretrained(dnet, "none") == "random initialisation"
    with pytest.raises(CheckpointError, match="no_such.pth: no such file"):
        load_pretrained(dnet, str(tmp_path / "no_such.pth"))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_imagenet_weights_match_loading_before_the_shift(arch, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    net = getattr(torchvision.models, "mobilenet_v2" if arch == "mobilenetv2" else arch)()
    imagenet = ref.randomise(net, seed=6).state_dict()
    path = imagenet_file(arch)[0]
    path.parent.mkdir(parents=True)
    torch.save(imagenet, path)
    expected = tsm_backbone(arch, SEGMENTS, 10, pretrained=True)  # torchvision loads, then we shift
    ours = tsm_backbone(arch, SEGMENTS, 10)
    assert load_pretrained(ours, "imagenet") == f"ImageNet weights of torchvision {arch} from {path}"
    for key, value in expected.state_dict().items():
        assert key.startswith("fc.") or torch.equal(ours.state_dict()[key], value), key


def test_imagenet_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_pretrained(tsm_backbone("resnet18", SEGMENTS, 0), "imagenet")
    path, url = imagenet_file("resnet18")
    assert str(tmp_path) in str(path)
    assert f"download {url} and place it at {path}" in str(err.value)


def test_checkpoint_loads_without_the_pretrained_files_it_started_from(tmp_path):
    """A model about to take its backbones from a checkpoint neither reads nor needs
    SNET.PRETRAINED / DNET.PRETRAINED: evaluating a run elsewhere must not need its start files."""
    from s2d_fast.config import load_config
    from s2d_fast.engine.evaluate import load_for_eval
    from s2d_fast.models import build_model

    gone = str(tmp_path / "synopsis-that-was-deleted.pt")
    cfg = load_config(None, [
        "DATA.NUM_CANDIDATES", "8", "DATA.CROP_SIZE", "32", "SNET.ARCH", "resnet18", "SNET.NUM_FRAMES", "4",
        "SNET.INPUT_SIZE", "32", "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "32",
        "SNET.PRETRAINED", gone,
    ])
    with pytest.raises(CheckpointError, match="synopsis-that-was-deleted.pt: no such file"):
        build_model(cfg, 5)
    model = build_model(cfg, 5, pretrained=False)
    path = save_checkpoint({"model": model.state_dict(), "stage": "warmup", "epoch": 1, "num_classes": 5},
                           tmp_path / "warmup-last.pt")
    loaded, info = load_for_eval(cfg, path, torch.device("cpu"))
    assert info["stage"] == "warmup"
    frames = torch.randint(0, 256, (1, 8, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():  # the checkpoint's weights, BatchNorm folded: the same outputs
        torch.testing.assert_close(loaded(frames, torch.tensor([8]))["log_prob"],
                                   model.eval()(frames, torch.tensor([8]))["log_prob"], rtol=1e-4, atol=1e-4)
