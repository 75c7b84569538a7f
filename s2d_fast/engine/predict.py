"""Classify video files or frame folders with a checkpoint: the top classes of each, and a figure.

Each video is read exactly as the validation loader reads a list entry (one clip, the centre
crop): T = DATA.NUM_CANDIDATES candidates at the centres of T equal segments of its frames,
short side resized to DATA.SCALE_SIZE, centre crop of DATA.CROP_SIZE. Frames are counted as
`prepare lists` counts them for the list files, so a video gets the very candidates it gets in
evaluation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from s2d_fast.config import num_candidates, uses_gpus
from s2d_fast.data.dataset import VideoDataset
from s2d_fast.data.datasets import class_names, frame_template
from s2d_fast.data.decoders import VideoReadError, count_frames, probe_video
from s2d_fast.data.lists import VideoRecord

from .evaluate import load_for_eval
from .runtime import autocast, inference_settings
from .visualize import batch_figure, ranked, synopsis_ranking

logger = logging.getLogger("s2d_fast")


def read_video(cfg, path: str) -> tuple[torch.Tensor, int]:
    """The candidates of one video file or frame folder, uint8 `(T, 3, c, c)`, and n_valid."""
    template = frame_template(cfg)
    if Path(path).is_dir():
        fmt, num_frames = "frames", count_frames(Path(path), template)
        if num_frames == 0:
            raise VideoReadError(f"{path}: no frames named like {template.format(1)}")
    else:
        fmt, num_frames = "video", probe_video(str(path)).num_frames
    # The validation dataset itself, over a one-video list: the same sampling, decoding and crop.
    dataset = VideoDataset(
        [VideoRecord(str(path), num_frames, 0)], "", fmt=fmt, num_segments=num_candidates(cfg),
        scale_size=cfg.DATA.SCALE_SIZE, crop_size=cfg.DATA.CROP_SIZE, train=False, flip=False, num_classes=1,
        frame_template=template, on_bad="error", every_frame=cfg.DATA.CANDIDATES == "all",
        frame_stride=cfg.DATA.FRAME_STRIDE,
    )
    sample = dataset[0]
    return sample["frames"], int(sample["n_valid"])


def figure_path(save_vis: str | os.PathLike, i: int) -> Path:
    """Video i's PNG: `save_vis` itself for the first, then `OUT-2.png`, `OUT-3.png`, ..."""
    path = Path(save_vis)
    return path if i == 0 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")


def _named(ranking: list[tuple[int, float]], names: list[str] | None) -> list[tuple[int, str, float]]:
    return [(c, names[c] if names else str(c), p) for c, p in ranking]


def predict_videos(cfg, videos: list[str], checkpoint: str | None, **options) -> list[dict]:
    """Per video `{"video", "top": [(class_id, class_name, prob)], "synopsis_topk": [...]}`
    (`iter_predictions`' results as a list). Raises VideoReadError naming a file that is missing
    or cannot be decoded."""
    return list(iter_predictions(cfg, videos, checkpoint, **options))


@torch.no_grad()
def iter_predictions(
    cfg,
    videos: list[str],
    checkpoint: str | None,
    *,
    label_map: str | None = None,
    save_vis: str | None = None,
    top: int = 5,
    keep_going: bool = False,
):
    """Yields, video after video, `{"video", "top": [(class_id, class_name, prob)],
    "synopsis_topk": [...]}`.

    `top` holds the `top` classes of the final distribution, most probable first (classes
    outside the synopsis' top-k have probability 0); `synopsis_topk` the synopsis' top-k with
    SNet's softmax probabilities ([] for the uniform baseline). Class names come from
    `label_map`, else the checkpoint, else the built-in dataset; without names a class's name is
    its id. With `save_vis` each video's figure is written as a PNG, one file per video
    (`figure_path`), its path under "figure". A video that is missing or cannot be decoded
    raises VideoReadError, or with `keep_going` yields `{"video", "error"}` and the rest go on.
    """
    if not keep_going:
        for path in videos:  # a typo fails before the model loads, not after the other videos
            if not os.path.exists(path):
                raise VideoReadError(f"{path}: no such file or frame folder")
    device = torch.device("cuda" if uses_gpus(cfg) and torch.cuda.is_available() else "cpu")
    settings = inference_settings(cfg, device)  # never compiled: a video at a time, each of its own length
    logger.info("%s", settings.describe())
    model, source = load_for_eval(cfg, checkpoint, device, settings)
    names = class_names(cfg, model.num_classes, label_map) if label_map or not source["class_names"] \
        else source["class_names"]
    for i, path in enumerate(videos):
        try:
            if not os.path.exists(path):
                raise VideoReadError(f"{path}: no such file or frame folder")
            frames, n_valid = read_video(cfg, path)
        except VideoReadError as err:
            if not keep_going:
                raise
            yield {"video": path, "error": str(err)}
            continue
        frames, n_valid = frames[None], torch.tensor([n_valid])
        with autocast(device, settings.amp):
            out = model(frames.to(device), n_valid.to(device))
        out_b = {key: value[0].float().cpu() for key, value in out.items()}
        result = {
            "video": path,
            "top": _named(ranked(out_b["log_prob"].exp(), top), names),
            "synopsis_topk": _named(synopsis_ranking(out_b), names),
        }
        if save_vis:
            target = figure_path(save_vis, i)
            target.parent.mkdir(parents=True, exist_ok=True)
            figure = batch_figure(model, frames, n_valid, out, class_names=names, title=path, top=top)
            figure.save(target, format="PNG")
            result["figure"] = str(target)
        yield result
