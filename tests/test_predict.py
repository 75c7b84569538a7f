import av
import pytest
import torch
from PIL import Image

from s2d_fast.config import ConfigError, load_config
from s2d_fast.data import VideoReadError, build_dataset
from s2d_fast.data.synthetic import CLASSES, FRAME_TEMPLATE, render_video
from s2d_fast.checkpoint import save_checkpoint
from s2d_fast.data import class_names
from s2d_fast.engine.predict import figure_path, predict_videos, read_video
from s2d_fast.models import build_model

TINY = [
    "DATA.NUM_CANDIDATES", "8", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "64",
    "SNET.ARCH", "mobilenetv2", "SNET.NUM_FRAMES", "4", "SNET.INPUT_SIZE", "32",
    "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "32",
    "S2D.TOPK", "3", "S2D.THETA_CHANNELS", "16", "S2D.EMBED_DIM", "8", "S2D.CONTEXT_DIM", "16",
]


def write_mp4(path, video):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12, options={"preset": "ultrafast", "crf": "18"})
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random-weights sampling checkpoint with a sampler off the identity, two 64-px videos
    (an mp4 of 20 frames at 80x64, so the centre crop matters, and a JPEG frame folder of 16),
    and a label map."""
    tmp = tmp_path_factory.mktemp("predict")
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model(cfg, 12)
    model.set_stage("sampling")
    with torch.no_grad():
        model.time_head.bias.copy_(torch.tensor([0.2, -0.5]))
        model.space_head.bias.normal_(0, 0.5)
    checkpoint = save_checkpoint({"model": model.state_dict(), "stage": "sampling", "epoch": 1, "num_classes": 12},
                                 tmp / "random.pt")
    video, _, _ = render_video(0, "val", 0, frame_size=80, num_frames=20)
    mp4 = tmp / "a.mp4"
    write_mp4(mp4, video[:, 8:72])
    folder = tmp / "b"
    folder.mkdir()
    for i, frame in enumerate(render_video(0, "val", 1, frame_size=64, num_frames=16)[0]):
        Image.fromarray(frame).save(folder / FRAME_TEMPLATE.format(i + 1), quality=95)
    label_map = tmp / "names.txt"
    label_map.write_text("".join(f"action {i}\n" for i in range(12)) + "\n")
    return {"tmp": tmp, "cfg": cfg, "checkpoint": str(checkpoint), "videos": [str(mp4), str(folder)],
            "label_map": str(label_map)}


def test_predict_top5_names_and_figures(setup):
    out = setup["tmp"] / "vis" / "pred.png"
    results = predict_videos(setup["cfg"], setup["videos"], setup["checkpoint"], label_map=setup["label_map"],
                             save_vis=str(out))
    assert [r["video"] for r in results] == setup["videos"]
    for i, r in enumerate(results):
        probs = [p for _, _, p in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)  # all the mass is in the top-3 ...
        synopsis = {c for c, _, _ in r["synopsis_topk"]}
        assert len(synopsis) == 3
        assert {c for c, _, p in r["top"] if p > 0} <= synopsis  # ... of the synopsis
        assert all(name == f"action {c}" for c, name, _ in r["top"] + r["synopsis_topk"])
        assert r["figure"] == str(figure_path(out, i))
        with Image.open(r["figure"]) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.width > 400
    assert results[1]["figure"].endswith("pred-2.png")


def test_reads_as_the_validation_loader(setup, tmp_path):
    # The same file through a list: identical candidates (frame count, segment centres, crop).
    (tmp_path / "val.txt").write_text(f"{setup['videos'][0]} 20 0\n")
    cfg = load_config(None, TINY + ["DATA.ROOT", str(tmp_path)])
    frames, n_valid = read_video(cfg, setup["videos"][0])
    sample = build_dataset(cfg, "val")[0]
    assert frames.shape == (8, 3, 64, 64) and n_valid == 8
    assert torch.equal(frames, sample["frames"]) and n_valid == sample["n_valid"]


def test_class_names(setup, tmp_path):
    cfg = setup["cfg"]
    assert class_names(cfg, 12) == list(CLASSES)  # the built-in dataset, without generating it
    (tmp_path / "classes.txt").write_text("".join(f"n{i}\n" for i in range(12)))
    assert class_names(load_config(None, TINY + ["DATA.ROOT", str(tmp_path)]), 12)[3] == "n3"
    assert class_names(load_config(None, TINY + ["DATA.DATASET", "kinetics400"]), 400) is None
    with pytest.raises(ConfigError, match="12 class names, but the checkpoint has 400"):
        class_names(cfg, 400, setup["label_map"])


def test_missing_and_undecodable_videos_are_named(setup, tmp_path):
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoReadError, match=f"{missing}: no such file"):
        predict_videos(setup["cfg"], [setup["videos"][0], missing], setup["checkpoint"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match=f"{broken}: cannot decode"):
        predict_videos(setup["cfg"], [str(broken)], setup["checkpoint"])
