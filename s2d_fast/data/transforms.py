"""Where each view of a sample comes from in space: crop boxes, their resize, the flip.

Both backends draw the same plan from the same per-sample generator (seeded by (RNG_SEED,
epoch, index)), in the same order (frame offsets, crop, flip), so PyAV and DALI read the same
frames and the same boxes; they differ only in the codec's and the resampler's rounding.

Boxes are `(y, x, h, w)` in the coordinates of the frame resized to short side DATA.SCALE_SIZE;
every box is resized to DATA.CROP_SIZE square (a no-op for the evaluation crops, which are
already that size).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# TSM's GroupMultiScaleCrop: crop sides as fractions of the short side, neighbouring scales may
# pair up for width and height (max_distort 1), offsets on a 5x5 grid's 13 fixed points.
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
MAX_DISTORT = 1


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side resized to `short_side`."""
    if height <= width:
        return max(1, round(width * short_side / height)), short_side
    return short_side, max(1, round(height * short_side / width))


def _fixed_offsets(width: int, height: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    w, h = (width - crop_w) // 4, (height - crop_h) // 4
    quarters = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(qy * h, qx * w) for qx, qy in quarters]


def multi_scale_box(width: int, height: int, crop_size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """TSM's multi-scale crop of a `width x height` frame (later resized to `crop_size`)."""
    base = min(width, height)
    sizes = [int(base * s) for s in MULTI_SCALES]
    sizes = [crop_size if abs(s - crop_size) < 3 else s for s in sizes]
    pairs = [(sizes[j], sizes[i]) for i in range(len(sizes)) for j in range(len(sizes)) if abs(i - j) <= MAX_DISTORT]
    crop_w, crop_h = pairs[int(rng.integers(len(pairs)))]
    crop_w, crop_h = min(crop_w, width), min(crop_h, height)
    offsets = _fixed_offsets(width, height, crop_w, crop_h)
    y, x = offsets[int(rng.integers(len(offsets)))]
    return y, x, crop_h, crop_w


def eval_boxes(width: int, height: int, crop_size: int, num_crops: int) -> tuple[tuple[int, int, int, int], ...]:
    """The centre crop, or three crops along the long side (its two ends, then the centre), as
    TSM's GroupFullResSample does for landscape frames."""
    c = crop_size
    y, x = (height - c) // 2, (width - c) // 2
    if num_crops == 1:
        return ((y, x, c, c),)
    if width >= height:
        return ((y, 0, c, c), (y, width - c, c, c), (y, x, c, c))
    return ((0, x, c, c), (height - c, x, c, c), (y, x, c, c))


def spatial_plan(width: int, height: int, crop_size: int, train: bool, flip: bool, num_crops: int,
                 rng: np.random.Generator) -> tuple[tuple[tuple[int, int, int, int], ...], bool]:
    """Boxes in the scaled frame and whether to flip; draws crop then flip from `rng` (training)."""
    if not train:
        return eval_boxes(width, height, crop_size, num_crops), False
    box = multi_scale_box(width, height, crop_size, rng)
    return (box,), bool(flip and rng.random() < 0.5)


def apply_boxes(frames: np.ndarray, boxes, crop_size: int, flip: bool) -> torch.Tensor:
    """uint8 `(F, H, W, 3)` frames -> uint8 `(len(boxes), F, 3, crop, crop)`: each box cut out,
    resized to `crop_size` where it is not that size already (bilinear, antialiased)."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    views = []
    for y, x, h, w in boxes:
        view = clip[:, :, y:y + h, x:x + w]
        if (h, w) != (crop_size, crop_size):
            view = F.interpolate(view.float(), size=(crop_size, crop_size), mode="bilinear", align_corners=False,
                                 antialias=True).round_().clamp_(0, 255).to(torch.uint8)
        views.append(view.flip(-1) if flip else view)
    return torch.stack(views).contiguous()
