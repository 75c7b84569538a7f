"""The built-in datasets: short videos whose class is decided by a detail.

Two generators (`SYNTHETIC.TASK`), each 12 classes = 4 colour groups x 3 fine patterns:

`tiles` (the default). Each video shows cluttered, moving background (a panning colour gradient under two layers of
small drifting blobs and strokes), a few distractor tiles, and one *cue* tile that is visible
for only ~1/6 of the frames, at a random time and place, drifting slightly.

- The cue tile is the only thing in the video with a white border, so it can be found.
- Its fill colour gives its **group** (red, yellow, blue, green). The colours are saturated;
  background and distractors are muted, so the group survives a 4x downscale (the 28-32 px
  tile becomes a 7-8 px saturated blob).
- A fine pattern inside it gives the **detail**: 2-px stripes across (rows), 2-px stripes down
  (columns) or a 2-px checkerboard (checks) in a 20x20 box, each half ink. Near full resolution
  they are plain to see; the synopsis' 2.3x antialiased downscale leaves a faint, aliased
  ripple (a 4-px period past the Nyquist limit), a 4x downscale a flat blend, the same for
  all three. Orientation and texture are what a CNN's first layers pick up: a ResNet-18 trained
  from scratch on single cue frames reads them after a few hundred steps. (Version 1 drew a
  plus, a cross or a dot of 2-px strokes in a 10x10 box on 20-24 px tiles: in 8 epochs neither
  S2DNet's detail network nor the uniform baseline learned to read them, so nothing could show
  whether a sampler finds the details.)

Class = group x detail, 12 classes (`CLASSES`, label = group * 3 + detail). A uniform sample
of a few frames often misses the cue window; a synopsis at 1/4 resolution can tell the group
(and so the top-k) but not the class; a detail network must look at the right frames, close
up. `render_video` is a pure function of (seed, split, index) so tests can check the frames.

`balls`: a task of another kind, so that a recipe is not tuned to one generator. A scrolling
smooth-noise background with one layer of clutter; 4-7 balls bounce through the whole video at
1-2.5 px a frame, all muted. For 1/6 of the frames one of them *lights up*: its fill turns
saturated (the group: orange, lime, cyan, magenta) and a 2-px pattern shows inside it (the
detail: diagonal stripes one way (`slash`) or the other (`backslash`), or concentric `rings`).
No border marks it: the cue is an object seen all along that changes for a moment, moving ~10
px while lit, where a tile appears from nowhere and nearly stands still.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from s2d_fast.config import CHOICES

from .decoders import TSN_FRAME_TEMPLATE

logger = logging.getLogger(__name__)

VERSION = 2  # bump when the rendering changes: cached datasets of another version are rebuilt

# --- geometry: every size is in pixels of the generated frames ---------------------------------
FRAME_SIZE = 128  # default side of the square frames
NUM_FRAMES = 48  # default frames per video: 4 s at FPS
FPS = 12
CUE_FRACTION = 6  # the cue is visible for num_frames // CUE_FRACTION frames (8 of 48)
TILE_SIZE = (28, 32)  # side of the cue and distractor tiles, inclusive range: 7-8 px at 1/4
BORDER = 3  # white border of the cue tile (distractors get a dark one)
MARK_SPAN = 20  # the detail pattern fills a MARK_SPAN x MARK_SPAN box at the tile's centre
MARK_STROKE = 2  # width of the pattern's stripes and squares: under a pixel at synopsis resolution
CUE_DRIFT = 1.0  # the cue moves at most this many pixels per frame along each axis
EDGE_MARGIN = 1 / 8  # the cue stays this fraction of the side away from the edges, so crops keep it
NUM_DISTRACTORS = (3, 6)  # distractor tiles per video, inclusive range
NUM_CLUTTER = 45  # blobs and strokes in each of the two clutter layers
# Background and distractor colours stay at or below this saturation and brightness, so nothing
# but the cue tile is white or vivid. Tuned with the tile size: from scratch, TSM-MobileNetV2 at
# 48 px finds the group within ~6 epochs of 800 videos; at 0.45 / 0.75 with 16-20 px tiles it
# had not started after 6.
MUTED_SATURATION = 0.3
MUTED_VALUE = 0.6

# Group colours: saturated, far apart in hue. Markings are white on dark fills and black on light
# ones, the luma contrast that survives 4:2:0 chroma subsampling and the codec.
GROUPS = {
    "red": ((225, 30, 30), (255, 255, 255)),
    "yellow": ((250, 215, 30), (0, 0, 0)),
    "blue": ((40, 90, 245), (255, 255, 255)),
    "green": ((40, 190, 60), (0, 0, 0)),
}
DETAILS = ("rows", "columns", "checks")
CLASSES = tuple(f"{group}-{detail}" for group in GROUPS for detail in DETAILS)

# --- the balls task ---------------------------------------------------------------------------
BALL_RADIUS = (14, 16)  # inclusive range: the tiles' 28-32 px side
BALL_SPEED = (1.0, 2.5)  # px per frame, each ball's speed
NUM_BALLS = (4, 7)  # balls per video, the one that lights up included
BALL_GROUPS = {
    "orange": ((250, 130, 10), (0, 0, 0)),
    "lime": ((150, 230, 30), (0, 0, 0)),
    "cyan": ((20, 200, 235), (0, 0, 0)),
    "magenta": ((215, 35, 200), (255, 255, 255)),
}
BALL_DETAILS = ("slash", "backslash", "rings")
BALL_CLASSES = tuple(f"{group}-{detail}" for group in BALL_GROUPS for detail in BALL_DETAILS)
SPLITS = {"train": 0, "val": 1}

FORMATS = CHOICES["SYNTHETIC.FORMAT"]
FRAME_TEMPLATE = TSN_FRAME_TEMPLATE
# Constant quality with headroom: a 2-px pattern still matches its template after decoding at
# crf 32 in both codecs (the tests decode and check). One encoder thread: the generator already
# runs one process per core.
_ENCODERS = {
    "webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "24",
                            "b": "0", "lag-in-frames": "0", "threads": "1"}),
    "mp4": ("libx264", {"preset": "veryfast", "crf": "20", "threads": "1"}),
}
_JPEG_QUALITY = 95


def _mark_mask(detail: str) -> np.ndarray:
    """The pattern as a bool MARK_SPAN x MARK_SPAN mask; every detail is half ink."""
    i = np.arange(MARK_SPAN) // MARK_STROKE % 2 == 0
    if detail == "rows":
        return np.repeat(i[:, None], MARK_SPAN, axis=1)
    if detail == "columns":
        return np.repeat(i[None, :], MARK_SPAN, axis=0)
    if detail == "checks":
        return i[:, None] ^ i[None, :]
    raise ValueError(f"unknown detail {detail!r}")


_MARKS = {detail: _mark_mask(detail) for detail in DETAILS}


def _ball_mark_mask(detail: str) -> np.ndarray:
    """The balls' patterns in a MARK_SPAN-wide disc (False outside it): diagonal stripes 3 px
    wide along an axis (2.1 px across, the rows' period within 6%) or 2-px rings."""
    yy, xx = np.mgrid[:MARK_SPAN, :MARK_SPAN]
    r = np.hypot(yy - (MARK_SPAN - 1) / 2, xx - (MARK_SPAN - 1) / 2)
    if detail == "slash":
        ink = (xx + yy) // 3 % 2 == 0
    elif detail == "backslash":
        ink = (xx - yy + MARK_SPAN) // 3 % 2 == 0
    elif detail == "rings":
        ink = r // MARK_STROKE % 2 == 1
    else:
        raise ValueError(f"unknown detail {detail!r}")
    return ink & (r <= MARK_SPAN / 2)


_BALL_MARKS = {detail: _ball_mark_mask(detail) for detail in BALL_DETAILS}
_GROUP_HUES = [colorsys.rgb_to_hsv(*(c / 255 for c in fill))[0] for fill, _ in GROUPS.values()]


def _muted_colour(rng: np.random.Generator, hue: float | None = None) -> tuple[int, int, int]:
    h = rng.random() if hue is None else hue
    s = rng.uniform(0.05, MUTED_SATURATION)
    v = rng.uniform(0.2, MUTED_VALUE)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def _clutter_layer(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Blobs and strokes on a transparent tile, repeated 2x2 so any window pans without wrap."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for _ in range(NUM_CLUTTER):
        colour = _muted_colour(rng) + (255,)
        x, y = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            rx, ry = rng.uniform(1.5, 4.5, 2)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour)
        else:
            length, angle = rng.uniform(4, 14), rng.uniform(0, np.pi)
            dx, dy = length * np.cos(angle), length * np.sin(angle)
            draw.line((x, y, x + dx, y + dy), fill=colour, width=int(rng.integers(1, 3)))
    rgba = np.tile(np.asarray(img), (2, 2, 1))
    return rgba[..., :3].copy(), rgba[..., 3:] > 0


def _cue_tile(rng: np.random.Generator, group: str, detail: str) -> np.ndarray:
    fill, ink = GROUPS[group]
    size = int(rng.integers(TILE_SIZE[0], TILE_SIZE[1] + 1))
    jitter = rng.integers(-12, 13, 3)
    tile = np.empty((size, size, 3), np.uint8)
    tile[:] = 255
    tile[BORDER:-BORDER, BORDER:-BORDER] = np.clip(np.array(fill) + jitter, 0, 255)
    lo = (size - MARK_SPAN) // 2
    tile[lo:lo + MARK_SPAN, lo:lo + MARK_SPAN][_MARKS[detail]] = ink
    return tile


def _distractor(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A muted tile or disc with a dark border: the cue's size and hues, never its pattern."""
    size = int(rng.integers(TILE_SIZE[0], TILE_SIZE[1] + 1))
    hue = _GROUP_HUES[rng.integers(len(_GROUP_HUES))] if rng.random() < 0.7 else None
    tile = np.empty((size, size, 3), np.uint8)
    tile[:] = np.array(_muted_colour(rng, hue)) * rng.uniform(0.15, 0.4)
    tile[BORDER:-BORDER, BORDER:-BORDER] = _muted_colour(rng, hue)
    if rng.random() < 0.5:
        mask = np.ones((size, size, 1), bool)
    else:
        yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
        mask = (yy**2 + xx**2 <= (size / 2) ** 2)[..., None]
    return tile, mask


def _bounce(start: float, velocity: float, steps: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions of a point moving at `velocity` and bouncing inside [low, high]."""
    span = max(high - low, 1e-6)
    p = np.mod(start - low + velocity * steps, 2 * span)
    return low + np.where(p > span, 2 * span - p, p)


def _video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def group_of(labels: np.ndarray, task: str) -> np.ndarray:
    """The colour group of each label of `task` (label = group * details + detail)."""
    return np.asarray(labels) // len(_DETAILS_OF[task])


def group_names(task: str) -> tuple[str, ...]:
    """`task`'s colour groups in label order (the numbers `group_of` gives)."""
    return tuple(_GROUPS_OF[task])


def label_of(index: int) -> int:
    """Labels cycle through the classes: every class gets the same count, to within one."""
    return index % len(CLASSES)


def render_video(
    seed: int, split: str, index: int, *, task: str = "tiles", frame_size: int = FRAME_SIZE,
    num_frames: int = NUM_FRAMES,
) -> tuple[np.ndarray, int, dict]:
    """Frames `uint8 (F, H, W, 3)`, label and where the cue is: a pure function of its arguments.

    `cue_info` holds `start` and `length` (frames), `boxes` (`(y, x, side)` of the cue's square
    box in each of those frames), `group`, `detail` and `class_name`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    rng = _video_rng(seed, split, index)
    label = label_of(index)
    render, classes = _RENDERERS[task], TASKS[task]
    group, detail = classes[label].split("-")
    video, info = render(rng, group, detail, frame_size, num_frames)
    return video, label, {**info, "group": group, "detail": detail, "class_name": classes[label]}


def _render_tiles(rng: np.random.Generator, group: str, detail: str, s: int, f: int) -> tuple[np.ndarray, dict]:
    t = np.arange(f, dtype=np.float64)

    # Panning gradient between two muted colours.
    c0, c1 = (np.array(_muted_colour(rng), np.float32) for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    period = rng.uniform(0.8, 2.0) * s
    speed = rng.uniform(0.01, 0.03) * rng.choice([-1, 1])  # cycles per frame
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.random()

    layers = []
    for _ in range(2):  # two clutter layers drifting in different directions: parallax motion
        rgb, alpha = _clutter_layer(rng, s)
        v = rng.uniform(0.4, 1.6) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
        origin = rng.uniform(0, s, 2)
        layers.append((rgb, alpha, np.mod(origin[:, None] + v[:, None] * t, s).round().astype(int) % s))

    distractors = []
    for _ in range(int(rng.integers(NUM_DISTRACTORS[0], NUM_DISTRACTORS[1] + 1))):
        tile, mask = _distractor(rng)
        side = tile.shape[0]
        path = [_bounce(rng.uniform(0, s - side), rng.uniform(-1.2, 1.2), t, 0, s - side) for _ in range(2)]
        # Some distractors blink in for a while too: appearing is not what marks the cue.
        if rng.random() < 0.5:
            visible = np.ones(f, bool)
        else:
            length = int(rng.integers(max(1, f // 8), max(2, f // 4) + 1))
            begin = int(rng.integers(0, f - length + 1))
            visible = (t >= begin) & (t < begin + length)
        distractors.append((tile, mask, np.rint(path).astype(int), visible))

    cue = _cue_tile(rng, group, detail)
    side = cue.shape[0]
    length = max(2, f // CUE_FRACTION)
    start = int(rng.integers(0, f - length + 1))
    margin = int(s * EDGE_MARGIN)
    low, high = margin, s - margin - side
    steps = np.arange(length, dtype=np.float64)
    cue_path = np.rint(
        [_bounce(rng.uniform(low, high), rng.uniform(-CUE_DRIFT, CUE_DRIFT), steps, low, high) for _ in range(2)]
    ).astype(int)

    phase = 2 * np.pi * (ramp[None] + (speed * t).astype(np.float32)[:, None, None])
    palette = (c0 + (c1 - c0) * np.linspace(0, 1, 256, dtype=np.float32)[:, None]).astype(np.uint8)
    video = palette[(127.5 + 127.5 * np.sin(phase)).astype(np.uint8)]  # a lookup: 5x faster than mixing
    for i, frame in enumerate(video):
        for rgb, alpha, offsets in layers:
            oy, ox = offsets[:, i]
            np.copyto(frame, rgb[oy:oy + s, ox:ox + s], where=alpha[oy:oy + s, ox:ox + s])
        for tile, mask, path, visible in distractors:
            if visible[i]:
                y, x = path[:, i]
                np.copyto(frame[y:y + tile.shape[0], x:x + tile.shape[1]], tile, where=mask)
        if start <= i < start + length:
            y, x = cue_path[:, i - start]
            frame[y:y + side, x:x + side] = cue

    boxes = [(int(y), int(x), side) for y, x in cue_path.T]
    return video, {"start": start, "length": length, "boxes": boxes}


def _noise_background(rng: np.random.Generator, s: int, f: int) -> np.ndarray:
    """`(F, s, s, 3)`: a smooth field of muted colours (a 5x5 grid, bicubic), scrolling. The grid
    is tiled before the resize, so the field repeats without a seam."""
    grid = np.array([[_muted_colour(rng) for _ in range(5)] for _ in range(5)], np.uint8)
    field = np.asarray(Image.fromarray(np.tile(grid, (2, 2, 1))).resize((2 * s, 2 * s), Image.BICUBIC))
    v = rng.uniform(0.3, 1.0) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    offsets = np.mod(rng.uniform(0, s, 2)[:, None] + v[:, None] * np.arange(f), s).astype(int)
    return np.stack([field[oy:oy + s, ox:ox + s] for oy, ox in offsets.T])


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:2 * radius, :2 * radius] - (radius - 0.5)
    return yy**2 + xx**2 <= radius**2


def _lit_ball(rng: np.random.Generator, radius: int, group: str, detail: str) -> np.ndarray:
    fill, ink = BALL_GROUPS[group]
    ball = np.empty((2 * radius, 2 * radius, 3), np.uint8)
    ball[:] = np.clip(np.array(fill) + rng.integers(-12, 13, 3), 0, 255)
    lo = radius - MARK_SPAN // 2
    ball[lo:lo + MARK_SPAN, lo:lo + MARK_SPAN][_BALL_MARKS[detail]] = ink
    return ball


def _render_balls(rng: np.random.Generator, group: str, detail: str, s: int, f: int) -> tuple[np.ndarray, dict]:
    t = np.arange(f, dtype=np.float64)
    video = _noise_background(rng, s, f)
    rgb, alpha = _clutter_layer(rng, s)
    v = rng.uniform(0.4, 1.6) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    offsets = np.mod(rng.uniform(0, s, 2)[:, None] + v[:, None] * t, s).round().astype(int) % s
    margin = int(s * EDGE_MARGIN)
    balls = []
    for _ in range(int(rng.integers(NUM_BALLS[0], NUM_BALLS[1] + 1))):
        radius = int(rng.integers(BALL_RADIUS[0], BALL_RADIUS[1] + 1))
        speed, heading = rng.uniform(*BALL_SPEED), rng.uniform(0, 2 * np.pi)
        low, high = margin, s - margin - 2 * radius
        path = [_bounce(rng.uniform(low, high), speed * np.cos(heading), t, low, high),
                _bounce(rng.uniform(low, high), speed * np.sin(heading), t, low, high)]
        muted = np.array(_muted_colour(rng), np.uint8)
        balls.append((radius, np.rint(path).astype(int), muted))
    length = max(2, f // CUE_FRACTION)
    start = int(rng.integers(0, f - length + 1))
    radius, cue_path, _ = balls[0]  # the one that lights up, drawn last: never hidden
    lit = _lit_ball(rng, radius, group, detail)
    for i, frame in enumerate(video):
        oy, ox = offsets[:, i]
        np.copyto(frame, rgb[oy:oy + s, ox:ox + s], where=alpha[oy:oy + s, ox:ox + s])
        for k, (r, path, muted) in enumerate(balls[::-1]):
            y, x = path[:, i]
            window = frame[y:y + 2 * r, x:x + 2 * r]
            shown = lit if k == len(balls) - 1 and start <= i < start + length else muted
            np.copyto(window, shown, where=_disc(r)[..., None])
    boxes = [(int(cue_path[0, i]), int(cue_path[1, i]), 2 * radius) for i in range(start, start + length)]
    return video, {"start": start, "length": length, "boxes": boxes}


TASKS = {"tiles": CLASSES, "balls": BALL_CLASSES}  # SYNTHETIC.TASK: each generator's class names
_DETAILS_OF = {"tiles": DETAILS, "balls": BALL_DETAILS}
_GROUPS_OF = {"tiles": GROUPS, "balls": BALL_GROUPS}
_RENDERERS = {"tiles": _render_tiles, "balls": _render_balls}


def _write_frames(folder: Path, video: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(video, start=1):
        Image.fromarray(frame).save(folder / FRAME_TEMPLATE.format(i), quality=_JPEG_QUALITY)


def _write_video(path: Path, video: np.ndarray, fmt: str) -> None:
    codec, options = _ENCODERS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            # Converted here with one swscale thread, as decoders.frame_to_rgb: the generator's
            # pool forks after the parent may have converted frames.
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p", threads=1)
            container.mux(stream.encode(yuv))
        container.mux(stream.encode())


def _relative_path(split: str, index: int, fmt: str) -> str:
    video_id = f"{split}_{index:05d}"
    return f"frames/{video_id}" if fmt == "frames" else f"videos/{video_id}.{fmt}"


def _make_one(job: tuple) -> tuple[str, int, str, int, int]:
    root, seed, split, index, fmt, task, frame_size, num_frames = job
    video, label, _ = render_video(seed, split, index, task=task, frame_size=frame_size, num_frames=num_frames)
    rel = _relative_path(split, index, fmt)
    if fmt == "frames":
        _write_frames(Path(root) / rel, video)
    else:
        _write_video(Path(root) / rel, video, fmt)
    return split, index, rel, len(video), label


def _meta(num_train: int, num_val: int, seed: int, fmt: str, task: str, frame_size: int, num_frames: int) -> dict:
    return {"version": VERSION, "task": task, "num_train": num_train, "num_val": num_val, "seed": seed,
            "format": fmt, "frame_size": frame_size, "num_frames": num_frames, "fps": FPS,
            "classes": list(TASKS[task])}


def generate_synthetic(
    out_dir: str | os.PathLike,
    num_train: int = 800,
    num_val: int = 200,
    seed: int = 0,
    fmt: str = "webm",
    progress: bool = True,
    workers: int | None = None,
    *,
    task: str = "tiles",
    frame_size: int = FRAME_SIZE,
    num_frames: int = NUM_FRAMES,
) -> Path:
    """Write the dataset to `out_dir`: videos, `train.txt`, `val.txt`, `classes.txt`, `meta.json`.

    Everything is written to a hidden sibling folder first and renamed into place at the end, so
    an interrupted run never leaves a folder that looks complete. An existing `out_dir` is
    replaced only if it is empty or a dataset this function wrote (it has a `meta.json`), and
    kept if its `meta.json` says it is this very dataset (generation is deterministic): then
    processes generating at once never pull a finished dataset from under each other.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if frame_size % 2 or frame_size < 48:  # yuv420p needs even sides; the tiles need room to move
        raise ValueError(f"frame_size must be an even number of at least 48; got {frame_size}")
    if num_frames < 2 * CUE_FRACTION:
        raise ValueError(f"num_frames must be at least {2 * CUE_FRACTION}; got {num_frames}")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "meta.json").is_file():
        raise FileExistsError(f"{out_dir} exists and is not a synthetic dataset; not overwriting it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        jobs = [(str(tmp), seed, split, i, fmt, task, frame_size, num_frames)
                for split, n in (("train", num_train), ("val", num_val)) for i in range(n)]
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        bar = tqdm(total=len(jobs), desc=f"synthetic {task} {fmt}", unit="video", disable=not progress)
        rows: dict[str, list] = {"train": [], "val": []}
        # One worker runs in this process: no pool to start for a handful of videos (tests).
        with bar, (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
            results = pool.map(_make_one, jobs, chunksize=8) if pool else map(_make_one, jobs)
            for split, index, rel, frames, label in results:
                rows[split].append((index, rel, frames, label))
                bar.update()
        for split, items in rows.items():
            lines = [f"{rel} {frames} {label}\n" for _, rel, frames, label in sorted(items)]
            (tmp / f"{split}.txt").write_text("".join(lines))
        (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in TASKS[task]))
        meta = _meta(num_train, num_val, seed, fmt, task, frame_size, num_frames)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if read_meta(out_dir) == meta:  # another process (a distributed rank) finished the same dataset first
            shutil.rmtree(tmp)
        else:
            _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _replace(new: Path, target: Path) -> None:
    """Move `new` to `target`, the old `target` out of the way first (two renames, no copy)."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(root: str | os.PathLike) -> dict | None:
    """The generator parameters of a dataset folder, or None if it has none."""
    try:
        meta = json.loads((Path(root) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and "task" not in meta:  # written before the balls task: the same tiles
        meta = {**meta, "task": "tiles"}
    return meta


def _cache_root(cfg) -> tuple[Path, dict]:
    """Where DATA.CACHE_DIR keeps the built-in dataset of `cfg`, and the meta it must have."""
    syn = cfg.SYNTHETIC
    meta = _meta(syn.NUM_TRAIN, syn.NUM_VAL, syn.SEED, syn.FORMAT, syn.TASK, syn.FRAME_SIZE, syn.NUM_FRAMES)
    task = "" if syn.TASK == "tiles" else f"-{syn.TASK}"  # the tiles' folders keep their names from before
    name = (f"synthetic-v{VERSION}{task}-{syn.FORMAT}-seed{syn.SEED}-{syn.NUM_TRAIN}+{syn.NUM_VAL}"
            f"-{syn.FRAME_SIZE}px-{syn.NUM_FRAMES}f")
    return Path(cfg.DATA.CACHE_DIR).expanduser() / name, meta


def is_cached(cfg) -> bool:
    """Whether the built-in dataset of `cfg` is already generated under DATA.CACHE_DIR."""
    root, meta = _cache_root(cfg)
    return read_meta(root) == meta


def ensure_synthetic(cfg) -> Path:
    """The built-in dataset for `cfg` under DATA.CACHE_DIR, generated on first use."""
    root, meta = _cache_root(cfg)
    if read_meta(root) == meta:
        return root
    syn = cfg.SYNTHETIC
    logger.info("generating the built-in synthetic dataset (%s, %d videos) in %s", syn.TASK,
                syn.NUM_TRAIN + syn.NUM_VAL, root)
    return generate_synthetic(root, syn.NUM_TRAIN, syn.NUM_VAL, syn.SEED, syn.FORMAT, progress=True,
                              task=syn.TASK, frame_size=syn.FRAME_SIZE, num_frames=syn.NUM_FRAMES)
