"""Cue-free videos of the built-in dataset (SYNTHETIC.NUM_BLANK) and training on them with a
uniform target (SYNTHETIC.TRAIN_BLANK)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2d_fast.config import ConfigError, load_config
from s2d_fast.data import build_loader, read_list_file
from s2d_fast.data import synthetic as S
from s2d_fast.data.loader import build_dataset
from s2d_fast.models.base import classification_loss

SMALL = {"frame_size": 64, "num_frames": 16}
TINY = ["SYNTHETIC.NUM_TRAIN", "4", "SYNTHETIC.NUM_VAL", "2", "SYNTHETIC.FORMAT", "frames",
        "SYNTHETIC.FRAME_SIZE", "64", "SYNTHETIC.NUM_FRAMES", "12"]
SYNOPSIS = ["S2D.DETAIL_SAMPLING", "False", "DNET.ARCH", "resnet18", "DNET.INPUT_SIZE", "32", "DNET.NUM_FRAMES", "2",
            "DNET.PRETRAINED", "none", "SNET.NUM_FRAMES", "2", "DATA.NUM_CANDIDATES", "4", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "56",
            "DATA.NUM_WORKERS", "0", "TRAIN.BATCH_SIZE", "3"]


@pytest.mark.parametrize("task", ["tiles", "balls"])
def test_a_blank_video_is_its_video_without_the_cue(task):
    """Each blank video is what its rng draws with the cue left out: equal outside the cue's
    boxes in its frames, different inside them, and nothing vivid anywhere."""
    for index in range(3):
        blank, label, info = S.render_video(5, "blank", index, task=task, **SMALL)
        assert not info["shown"] and label == S.label_of(index)
        assert S.render_video(5, "train", index, task=task, **SMALL)[2]["shown"]
        rng = S._video_rng(5, "blank", index)
        group, detail = S.TASKS[task][label].split("-")
        with_cue, cue = S._RENDERERS[task](rng, group, detail, SMALL["frame_size"], SMALL["num_frames"])
        assert cue["boxes"] == info["boxes"] and cue["start"] == info["start"]
        outside = np.ones(blank.shape[:3], bool)
        for i, (y, x, side) in enumerate(info["boxes"]):
            outside[info["start"] + i, y:y + side, x:x + side] = False
        assert np.array_equal(blank[outside], with_cue[outside])
        assert not np.array_equal(blank[~outside], with_cue[~outside])
        rgb = blank.astype(float) / 255
        top, bottom = rgb.max(-1), rgb.min(-1)
        assert not ((top >= 0.7) & (top - bottom >= 0.6 * top)).any()  # no group colour in sight


def test_generated_with_the_dataset_in_their_own_list(tmp_path):
    cfg = load_config(None, ["DATA.CACHE_DIR", str(tmp_path), *TINY, "SYNTHETIC.NUM_BLANK", "3"])
    root = S.ensure_synthetic(cfg)
    assert "+3blank" in root.name
    rows = read_list_file(root / "blank.txt", 12)
    assert [r.label for r in rows] == [S.label_of(i) for i in range(3)]
    assert all((root / r.path).is_dir() for r in rows)
    assert S.read_meta(root)["num_blank"] == 3
    # Without them the folder, its name and its meta are what they were before the key existed.
    plain = S.ensure_synthetic(load_config(None, ["DATA.CACHE_DIR", str(tmp_path), *TINY]))
    assert plain != root and "blank" not in plain.name and not (plain / "blank.txt").exists()
    assert "num_blank" not in S.read_meta(plain)


def test_training_takes_them_with_the_blank_label_and_evaluation_does_not(tmp_path):
    pairs = ["DATA.CACHE_DIR", str(tmp_path), *TINY, *SYNOPSIS, "SYNTHETIC.NUM_BLANK", "2"]
    train = build_dataset(load_config(None, pairs + ["SYNTHETIC.TRAIN_BLANK", "True"]), "train")
    assert [r.label for r in train.records] == [S.label_of(i) for i in range(4)] + [S.BLANK_LABEL] * 2
    assert train[5]["label"] == S.BLANK_LABEL
    assert len(build_dataset(load_config(None, pairs), "train")) == 4
    assert len(build_dataset(load_config(None, pairs + ["SYNTHETIC.TRAIN_BLANK", "True"]), "val")) == 2


def test_a_synopsis_network_trains_on_them(tmp_path):
    from s2d_fast.engine.trainer import train

    cfg = load_config(None, ["DATA.CACHE_DIR", str(tmp_path / "cache"), *TINY, *SYNOPSIS, "SYNTHETIC.NUM_BLANK", "2",
                             "SYNTHETIC.TRAIN_BLANK", "True", "TRAIN.EPOCHS", "1", "TRAIN.EVAL_PERIOD", "0",
                             "OUTPUT_DIR", str(tmp_path / "run")])
    assert len(build_loader(cfg, "train").dataset) == 6
    result = train(cfg).value
    assert result["epoch"] == 1 and not result["stopped"]
    assert (tmp_path / "run" / "checkpoints" / "warmup-last.pt").is_file()


def test_the_loss_gives_a_blank_video_a_uniform_target():
    logits = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3, S.BLANK_LABEL, 0, S.BLANK_LABEL, 11])
    uniform = torch.full((12,), 1 / 12)
    per_video = [F.cross_entropy(z[None], uniform[None] if y < 0 else y[None]) for z, y in zip(logits, labels)]
    assert float(classification_loss(logits, labels)) == pytest.approx(float(torch.stack(per_video).mean()), rel=1e-6)
    known = labels >= 0
    assert float(classification_loss(logits[known], labels[known])) == pytest.approx(
        float(F.cross_entropy(logits[known], labels[known])), rel=1e-6)
    # Its gradient pushes every class toward the same probability: none is favoured for want of cues.
    z = logits[1:2].clone().requires_grad_()
    classification_loss(z, labels[1:2]).backward()
    assert torch.allclose(z.grad[0], torch.softmax(logits[1], 0) - 1 / 12, atol=1e-6)


@pytest.mark.parametrize("pairs, message", [
    (["SYNTHETIC.TRAIN_BLANK", "True"], "SYNTHETIC.TRAIN_BLANK True with SYNTHETIC.NUM_BLANK 0"),
    (["SYNTHETIC.TRAIN_BLANK", "True", "SYNTHETIC.NUM_BLANK", "2", "S2D.DETAIL_SAMPLING", "True"],
     "SYNTHETIC.TRAIN_BLANK is for the plain TSM"),
    (["SYNTHETIC.TRAIN_BLANK", "True", "SYNTHETIC.NUM_BLANK", "2", "DATA.DATASET", "kinetics400"],
     "it needs DATA.DATASET synthetic, not 'kinetics400'"),
    (["SYNTHETIC.NUM_BLANK", "-1"], "SYNTHETIC.NUM_BLANK must be at least 0"),
])
def test_bad_blank_settings_are_named(pairs, message):
    base = ["S2D.DETAIL_SAMPLING", "False"] if "S2D.DETAIL_SAMPLING" not in pairs else []
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, base + pairs)


def test_a_dataset_without_them_is_named(tmp_path):
    root = S.generate_synthetic(tmp_path / "d", 2, 1, fmt="frames", progress=False, workers=1, **SMALL)
    with pytest.raises(ConfigError, match=f"{root / 'blank.txt'}: no cue-free videos"):
        S.blank_records(root)
