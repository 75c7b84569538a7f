import numpy as np
import pytest
import torch
from PIL import Image

from s2d_fast.config import load_config
from s2d_fast.engine.visualize import (
    COLOURS,
    LINE_WIDTH,
    batch_figure,
    display_scale,
    figure_tensor,
    ranked,
    resize,
    sampling_figure,
    sampling_grid_tensor,
    synopsis_ranking,
    window_box,
    window_panel,
)
from s2d_fast.models import build_model

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
T, K, S, SIZE = 16, 4, 56, 128  # the built-in dataset's scale
DETAIL_COLOURS = [(10, 200, 77), (200, 10, 77), (77, 10, 200), (120, 60, 10)]  # none in the palette


def find(big: np.ndarray, small: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners where `small (h, w, 3)` appears exactly in `big`."""
    h, w = small.shape[:2]
    first = small[0].tobytes()
    hits = []
    for y in range(big.shape[0] - h + 1):
        line = big[y].tobytes()
        start = line.find(first)
        while start != -1:
            x = start // 3
            if start % 3 == 0 and x + w <= big.shape[1] and np.array_equal(big[y:y + h, x:x + w], small):
                hits.append((y, x))
            start = line.find(first, start + 1)
    return hits


def fake_output(positions=(1.0, 4.25, 9.5, 14.0)):
    """A sampler placement and detail frames of one solid colour each, as S2DNet's output for one video."""
    detail = torch.tensor(DETAIL_COLOURS, dtype=torch.float32)[:, :, None, None].expand(K, 3, S, S) / 255
    mask = torch.zeros(12)
    mask[[2, 5, 7]] = 1
    z_d = torch.tensor([0.0, 0, 3, 0, 0, 1, 0, 2, 0, 0, 0, 0])
    return {
        "z_s": torch.arange(12, dtype=torch.float32) * 0.1,
        "mask": mask,
        "log_prob": torch.log_softmax(z_d.masked_fill(mask == 0, float("-inf")), 0),
        "detail": (detail - MEAN[:, None, None]) / STD[:, None, None],
        "t_positions": torch.tensor(positions),
        "t_center": torch.tensor(7.5),
        "t_stride": torch.tensor(4.0),
        "centers": torch.tensor([[63.5, 63.5], [30.5, 40.5], [90.5, 100.5], [10.5, 120.5]]),
        "strides": torch.tensor([[SIZE / S] * 2, [0.5, 0.75], [0.25, 0.25], [1.0, 1.0]]),
    }


def candidates():
    # Each candidate its own flat grey, so a panel shows which candidate it was drawn on.
    levels = torch.arange(T, dtype=torch.uint8) * 8 + 40
    return levels[:, None, None, None].expand(T, 3, SIZE, SIZE).contiguous()


def test_window_box_identity_is_the_whole_frame():
    # The sampler's identity: centre (n-1)/2, stride n/S, on each axis.
    center, stride = ((SIZE - 1) / 2, (SIZE - 1) / 2), (SIZE / S, SIZE / S)
    assert window_box(center, stride, S, (SIZE, SIZE), 2) == (0, 0, 2 * SIZE - 1, 2 * SIZE - 1)


def test_window_box_spans_s_strides_and_clips():
    # 32 samples 0.5 px apart around x = 20.5 cover [21 - 8, 21 + 8) px; 0.75 apart around 40.5, [41 - 12, 41 + 12).
    assert window_box((20.5, 40.5), (0.5, 0.75), 32, (64, 64), 3) == (39, 87, 86, 158)
    # A window larger than the frame is cut at its edges.
    assert window_box((5.0, 60.0), (4.0, 4.0), 32, (64, 64), 1) == (0, 0, 63, 63)


def test_window_panel_draws_the_rectangle_where_the_window_is():
    frame = torch.full((3, 64, 64), 100, dtype=torch.uint8)
    colour = COLOURS[1]
    panel = window_panel(frame, (20.5, 40.5), (0.5, 0.75), 32, colour, 3).permute(1, 2, 0).numpy()
    assert panel.shape == (192, 192, 3)
    x0, y0, x1, y1 = 39, 87, 86, 158
    for edge in (panel[y0, x0:x1 + 1], panel[y1, x0:x1 + 1], panel[y0:y1 + 1, x0], panel[y0:y1 + 1, x1]):
        assert (edge == colour).all()
    # The outline is LINE_WIDTH thick, drawn inside the window; the frame shows on both sides of it.
    assert (panel[y0 + LINE_WIDTH - 1, x0 + 10] == colour).all()
    assert (panel[y0 + LINE_WIDTH, x0 + LINE_WIDTH] == 100).all()
    assert (panel[y0 - 1, x0:x1 + 1] == 100).all() and (panel[y1 + 1, x0:x1 + 1] == 100).all()
    assert (panel[y0:y1 + 1, x0 - 1] == 100).all() and (panel[y0:y1 + 1, x1 + 1] == 100).all()


def test_resize_enlarges_with_whole_pixels():
    x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    big = resize(x, (6, 6))
    assert big[0, 0].tolist() == [[0, 0, 0, 1, 1, 1]] * 3 + [[2, 2, 2, 3, 3, 3]] * 3


def test_rankings():
    out = fake_output()
    probs = out["log_prob"].exp()
    top = ranked(probs, 5)
    assert [c for c, _ in top] == [2, 7, 5, 0, 1]  # the zeros after, in class order
    assert [p for _, p in top][3:] == [0.0, 0.0]
    # The synopsis' top-k: the mask's classes by SNet's probability.
    syn = synopsis_ranking(out)
    assert [c for c, _ in syn] == [7, 5, 2]
    assert syn[0][1] == pytest.approx(torch.softmax(out["z_s"], 0)[7].item())
    assert synopsis_ranking({"log_prob": out["log_prob"]}) == []


def test_figure_shows_windows_detail_frames_and_marks():
    frames, out = candidates(), fake_output()
    image = sampling_figure(frames, T, out, uniform_indices=torch.arange(8) * 2 + 1, input_size=32,
                            class_names=[f"c{i}" for i in range(12)], mean=MEAN, std=STD)
    assert image.mode == "RGB"
    fig = np.asarray(image)
    scale = display_scale(SIZE)
    side = SIZE * scale
    assert fig.shape[1] >= 2 * 2 * side  # two pairs of panels side by side
    panel_rows = []
    for j, pos in enumerate(out["t_positions"].tolist()):
        nearest = int(np.floor(pos + 0.5))
        panel = window_panel(frames[nearest], out["centers"][j], out["strides"][j], S, COLOURS[j], scale)
        hits = find(fig, panel.permute(1, 2, 0).numpy())
        assert len(hits) == 1, f"window panel {j} on candidate {nearest}"
        panel_rows.append(hits[0])
        # The detail frame, de-normalised to its exact colour, enlarged to the panel's side.
        assert (fig == DETAIL_COLOURS[j]).all(-1).sum() == side * side
    # Two pairs a row: j = 0, 1 side by side, j = 2, 3 below.
    assert panel_rows[0][0] == panel_rows[1][0] < panel_rows[2][0] == panel_rows[3][0]
    assert panel_rows[0][1] == panel_rows[2][1] < panel_rows[1][1] == panel_rows[3][1]
    # The strip's marks: the topmost pixels of colour j (the strip is above the panels) centre
    # on the detail frame's fractional position, evenly spaced in candidates.
    centres = []
    for j in range(K):
        ys, xs = np.nonzero((fig == COLOURS[j]).all(-1))
        assert ys.min() < panel_rows[0][0]
        band = ys < ys.min() + 4  # the tip of the triangle
        centres.append(xs[band].mean())
    pitch = (centres[-1] - centres[0]) / (out["t_positions"][-1] - out["t_positions"][0]).item()
    for j in range(K):
        expected = centres[0] + pitch * (out["t_positions"][j] - out["t_positions"][0]).item()
        assert centres[j] == pytest.approx(expected, abs=1.0)


def test_figure_of_the_uniform_baseline():
    frames, out = candidates(), fake_output()
    baseline = {"z_d": out["log_prob"], "log_prob": torch.log_softmax(torch.randn(12), 0)}
    image = sampling_figure(frames, T, baseline, uniform_indices=torch.tensor([2, 6, 10, 14]),
                            mean=MEAN, std=STD)
    fig = np.asarray(image)
    full = sampling_figure(frames, T, out, uniform_indices=torch.arange(8) * 2 + 1, mean=MEAN, std=STD)
    assert image.height < full.height
    # No sampler: no window, mark or detail frame in any palette colour.
    assert not any((fig == c).all(-1).any() for c in COLOURS[:K])
    # The uniform frames DNet saw, enlarged (tile = half a detail panel).
    tile = SIZE * display_scale(SIZE) // 2
    for i in (2, 6, 10, 14):
        assert find(fig, resize(frames[i:i + 1], (tile, tile))[0].permute(1, 2, 0).numpy())


@pytest.fixture(scope="module")
def tiny_model():
    cfg = load_config(None, [
        "DATA.NUM_CANDIDATES", "8", "DATA.CROP_SIZE", "48",
        "SNET.ARCH", "mobilenetv2", "SNET.NUM_FRAMES", "4", "SNET.INPUT_SIZE", "32",
        "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "32",
        "S2D.TOPK", "3", "S2D.THETA_CHANNELS", "16", "S2D.EMBED_DIM", "8", "S2D.CONTEXT_DIM", "16",
    ])
    torch.manual_seed(0)
    model = build_model(cfg, 12)
    model.set_stage("sampling")
    with torch.no_grad():
        model.space_head.bias.normal_(0, 0.5)
    return model


def test_batch_figure_tensor_in_training(tiny_model):
    # What the trainer logs: a training forward (grad on, the dense sampler path), second video.
    frames = torch.randint(0, 256, (2, 8, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    n_valid = torch.tensor([8, 6])
    tiny_model.train()
    out = tiny_model(frames, n_valid)
    grid = sampling_grid_tensor(tiny_model, frames, n_valid, out, index=1)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    image = batch_figure(tiny_model, frames, n_valid, out, index=1)
    assert torch.equal(grid, figure_tensor(image))
    assert Image.fromarray(grid.permute(1, 2, 0).numpy()).size == image.size


def test_training_logs_scalars_and_a_sampling_picture_to_tensorboard(tiny_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from s2d_fast.config import load_config
    from s2d_fast.engine.distributed import DistContext
    from s2d_fast.engine.trainer import Trainer

    from helpers import tiny_run

    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.STAGE", "warmup", "TRAIN.VIS_PERIOD", "3"))
    Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu"))).run()
    events = EventAccumulator(str(tmp_path / "tensorboard" / "warmup"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "sampler/t_center", "sampler/zoom", "val/top1"} <= set(tags["scalars"])
    images = events.Images("sampling")
    assert [i.step for i in images] == [1, 4]  # 6 iterations, a picture every 3 from the first
    assert images[0].width > 100 and images[0].height > 100
