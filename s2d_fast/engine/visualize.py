"""Pictures of where S2DNet looked: synopsis frames, detail placement, zoom windows, prediction.

One figure per video, built from uint8 tensors with torchvision.utils (make_grid,
draw_bounding_boxes) and PIL text in its default font: no plotting library. Frames are enlarged
by whole factors with nearest-neighbour so that the pixels the networks saw stay crisp. The same
figure goes to a PNG (`predict_videos(save_vis=...)`) and, as a CHW tensor, to TensorBoard.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes, make_grid

from s2d_fast.models import sampler

# One colour per detail frame j (cycled beyond eight): bright hues that read on the dark
# background and on the built-in dataset's muted clutter; none is white, its cue tiles' border.
COLOURS = (
    (255, 0, 255), (0, 229, 255), (255, 140, 0), (127, 255, 0),
    (255, 105, 180), (160, 120, 255), (255, 215, 0), (0, 200, 160),
)
BACKGROUND = 30  # grey level: make_grid pads with one value for all channels
TEXT = (235, 235, 235)
SYNOPSIS_MARK = (200, 200, 200)
PREDICTION_BAR = (90, 170, 255)
SYNOPSIS_BAR = (150, 150, 150)
FONT_SIZE = 14
GAP = 8
PANEL_TARGET = 160  # detail panels: the frame enlarged by the smallest whole factor reaching this
PAIRS_PER_ROW = 2
LINE_WIDTH = 3  # window rectangles and the coloured frame around each detail frame
BAR_LENGTH = 240
MIN_THUMB = 16  # candidate strip thumbnails never shrink below this, however many candidates
MARK_SIZE = 10


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    # Pillow's bundled font at a readable size (the bitmap fallback where FreeType is missing).
    return ImageFont.load_default(size=FONT_SIZE)


def _text_width(text: str) -> int:
    return math.ceil(_font().getlength(text))


def _line_height() -> int:
    return _font().getbbox("Hgy")[3] + 4


def _canvas(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (max(1, width), max(1, height)), (BACKGROUND,) * 3)


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy())


def figure_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL figure as the uint8 `(3, H, W)` tensor TensorBoard's `add_image` takes."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 `(N, 3, h, w)` to `size`: nearest-neighbour when enlarging (crisp pixels),
    antialiased bilinear when shrinking (thumbnails without aliasing)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] >= x.shape[-2] and size[1] >= x.shape[-1]:
        return F.interpolate(x, size=size, mode="nearest-exact")
    y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def display_scale(size: int) -> int:
    """The whole factor that shows a `size`-pixel frame at PANEL_TARGET pixels or more."""
    return max(1, math.ceil(PANEL_TARGET / size))


def window_box(center, stride, out_size: int, frame_hw: tuple[int, int], scale: int) -> tuple[int, int, int, int]:
    """The zoom window as inclusive `(x0, y0, x1, y1)` in the frame enlarged `scale` times, clipped.

    The window's S samples sit `stride` apart around `center`, in pixel-index coordinates where
    pixel i spans [i, i + 1); so it covers `center + 1/2 -+ S stride / 2`, which at the identity
    (centre (n-1)/2, stride n/S) is exactly the whole frame."""
    h, w = frame_hw
    box = []
    for edge in (-1, 1):
        for axis, limit in ((0, w), (1, h)):
            c = (float(center[axis]) + 0.5 + edge * out_size * float(stride[axis]) / 2) * scale
            box.append(min(max(c, 0.0), limit * scale))
    x0, y0, x1, y1 = (round(v) for v in box)
    # The far edge is inclusive; a window narrower than a display pixel still shows as one.
    return x0, y0, max(x0, min(x1 - 1, w * scale - 1)), max(y0, min(y1 - 1, h * scale - 1))


def window_panel(frame: torch.Tensor, center, stride, out_size: int, colour, scale: int) -> torch.Tensor:
    """uint8 `(3, H, W)` frame enlarged `scale` times with the zoom window drawn on it."""
    h, w = frame.shape[-2:]
    big = resize(frame[None], (h * scale, w * scale))[0]
    box = torch.tensor([window_box(center, stride, out_size, (h, w), scale)], dtype=torch.float32)
    return draw_bounding_boxes(big, box, colors=[tuple(colour)], width=LINE_WIDTH)


def denormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised float `(..., 3, h, w)` back to uint8 pixels."""
    mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    return (x.float() * std + mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def _framed(x: torch.Tensor, colour, width: int) -> torch.Tensor:
    """`x (3, h, w)` inside a border of `colour`, added around it so no pixel of it is hidden."""
    h, w = x.shape[1] + 2 * width, x.shape[2] + 2 * width
    out = torch.tensor(colour, dtype=torch.uint8)[:, None, None].repeat(1, h, w)
    out[:, width:-width, width:-width] = x
    return out


def ranked(probs: torch.Tensor, top: int) -> list[tuple[int, float]]:
    """The `top` most probable classes `(class_id, prob)`; ties (the zeros outside the
    synopsis' top-k) in class order, as the predictions file writes them."""
    order = np.argsort(-probs.detach().float().cpu().numpy(), kind="stable")[:top]
    return [(int(c), float(probs[c])) for c in order]


def synopsis_ranking(out_b: dict) -> list[tuple[int, float]]:
    """The synopsis' top-k `(class_id, SNet probability)`, most likely first; [] for the baseline."""
    if "mask" not in out_b:
        return []
    probs = torch.softmax(out_b["z_s"].float(), dim=0)
    members = out_b["mask"].nonzero().flatten()
    order = members[torch.argsort(probs[members], descending=True, stable=True)]
    return [(int(c), float(probs[c])) for c in order]


def _name(class_id: int, class_names) -> str:
    return class_names[class_id] if class_names else f"class {class_id}"


# -- layout: each section is a PIL image; sections stack ------------------------------------


def _titled(lines: list[str], body: Image.Image) -> Image.Image:
    lh = _line_height()
    out = _canvas(max([body.width] + [_text_width(line) for line in lines]), lh * len(lines) + body.height)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((0, i * lh), line, fill=TEXT, font=_font())
    out.paste(body, (0, lh * len(lines)))
    return out


def _stack(images: list[Image.Image], vertical: bool, gap: int = GAP) -> Image.Image:
    if vertical:
        out = _canvas(max(im.width for im in images), sum(im.height for im in images) + gap * (len(images) - 1))
    else:
        out = _canvas(sum(im.width for im in images) + gap * (len(images) - 1), max(im.height for im in images))
    offset = 0
    for im in images:
        out.paste(im, (0, offset) if vertical else (offset, 0))
        offset += (im.height if vertical else im.width) + gap
    return out


def _uniform_row(frames, indices, input_size: int | None, tile: int, title: str) -> Image.Image:
    """The uniform frames as the network saw them: at its input size, then enlarged to `tile`."""
    x = frames[indices]
    if input_size:
        x = resize(x, (input_size, input_size))
    x = resize(x, (round(tile * x.shape[-2] / x.shape[-1]), tile))
    grid = make_grid(x, nrow=8, padding=GAP // 2, pad_value=BACKGROUND)
    return _titled([title], _pil(grid))


def _candidate_strip(frames, n_valid: int, positions, synopsis, width: int, t_center, t_stride) -> Image.Image:
    """All T candidates in a row; a grey bar over the synopsis frames, a coloured mark j under
    the (fractional) position of detail frame j; candidates past the video's end dimmed."""
    t = frames.shape[0]
    spacing = 2
    thumb = max(MIN_THUMB, min(frames.shape[-1], (width - spacing) // t - spacing))
    pitch = thumb + spacing  # thumbnail i starts at spacing + i * pitch (make_grid pads the outside too)
    x = resize(frames, (round(thumb * frames.shape[-2] / frames.shape[-1]), thumb)).clone()
    x[n_valid:] = (x[n_valid:].float() * 0.3).to(torch.uint8)  # repeats of the last frame, not video
    strip = make_grid(x, nrow=t, padding=spacing, pad_value=BACKGROUND)

    lh, bar = _line_height(), 4
    # Marks that would overlap step down a row, so every j stays readable when frames bunch up.
    placed = []
    for p in positions:
        cx = spacing + float(p) * pitch + thumb / 2
        row = 0
        while any(abs(cx - px) < 2 * MARK_SIZE and r == row for px, r in placed):
            row += 1
        placed.append((cx, row))
    mark_h = MARK_SIZE + lh
    top = bar + 2
    out = _canvas(strip.shape[2], top + strip.shape[1] + 2 + mark_h * (max((r for _, r in placed), default=-1) + 1))
    out.paste(_pil(strip), (0, top))
    draw = ImageDraw.Draw(out)
    for i in synopsis:
        left = spacing + int(i) * pitch
        draw.rectangle((left, 0, left + thumb - 1, bar - 1), fill=SYNOPSIS_MARK)
    y0 = top + strip.shape[1] + 2
    for j, ((cx, row), colour) in enumerate(zip(placed, _colours(len(placed)))):
        y = y0 + row * mark_h
        half = MARK_SIZE / 2
        draw.polygon([(cx, y), (cx - half, y + MARK_SIZE - 1), (cx + half, y + MARK_SIZE - 1)], fill=colour)
        draw.text((cx - _text_width(str(j)) / 2, y + MARK_SIZE), str(j), fill=colour, font=_font())
    title = [
        f"all {t} candidates (valid {n_valid}): grey bar = synopsis frame, mark j = detail frame j",
        f"detail frames at t = {', '.join(f'{float(p):.1f}' for p in positions)}  "
        f"(temporal centre {float(t_center):.2f}, stride {float(t_stride):.2f})",
    ]
    return _titled(title, out)


def _colours(k: int) -> list[tuple[int, int, int]]:
    return [COLOURS[j % len(COLOURS)] for j in range(k)]


def _detail_pairs(frames, out_b: dict, mean, std) -> Image.Image:
    """Per detail frame: the nearest candidate with its window drawn, then the detail frame."""
    t, _, h, w = frames.shape
    detail = denormalise(out_b["detail"], mean, std)
    k, _, s, _ = detail.shape
    scale = display_scale(max(h, w))
    side = max(h, w) * scale
    pairs = []
    for j, colour in enumerate(_colours(k)):
        pos = float(out_b["t_positions"][j])
        index = min(int(math.floor(pos + 0.5)), t - 1)
        center, stride = out_b["centers"][j], out_b["strides"][j]
        panel = _framed(window_panel(frames[index], center, stride, s, colour, scale), (BACKGROUND,) * 3, LINE_WIDTH)
        zoomed = _framed(resize(detail[j][None], (side, side))[0], colour, LINE_WIDTH)
        spacer = torch.full((3, panel.shape[1], GAP), BACKGROUND, dtype=torch.uint8)
        size_x, size_y = s * float(stride[0]), s * float(stride[1])
        zoom_x, zoom_y = w / size_x, h / size_y
        zoom = f"{zoom_x:.2f}x" if abs(zoom_x - zoom_y) < 0.005 else f"{zoom_x:.2f}x across, {zoom_y:.2f}x down"
        caption = [
            f"j={j}  t={pos:.2f} (candidate {index})",
            f"window {size_x:.0f}x{size_y:.0f} px of the frame, zoom {zoom}",
        ]
        pairs.append(_titled(caption, _pil(torch.cat([panel, spacer, zoomed], 2))))
    rows = [_stack(pairs[i : i + PAIRS_PER_ROW], vertical=False, gap=2 * GAP) for i in range(0, k, PAIRS_PER_ROW)]
    title = f"detail frames: nearest candidate with the window sampled (left), what DNet saw, {s}x{s} px (right)"
    return _titled([title], _stack(rows, vertical=True))


def _bars(title: str, entries: list[tuple[str, float]], colour) -> Image.Image:
    lh = _line_height()
    name_w = max(_text_width(name) for name, _ in entries)
    out = _canvas(name_w + GAP + BAR_LENGTH + GAP + _text_width("0.000"), lh * len(entries))
    draw = ImageDraw.Draw(out)
    x = name_w + GAP
    for i, (name, p) in enumerate(entries):
        y = i * lh
        draw.text((0, y), name, fill=TEXT, font=_font())
        draw.rectangle((x, y + 2, x + BAR_LENGTH - 1, y + lh - 3), fill=(55, 55, 55))
        if p > 0:
            draw.rectangle((x, y + 2, x + max(1, round(p * BAR_LENGTH)) - 1, y + lh - 3), fill=colour)
        draw.text((x + BAR_LENGTH + GAP, y), f"{p:.3f}", fill=TEXT, font=_font())
    return _titled([title], out)


def _prediction(out_b: dict, class_names, top: int) -> Image.Image:
    final = ranked(out_b["log_prob"].float().exp(), top)
    panels = [_bars(f"prediction: top-{len(final)}", [(_name(c, class_names), p) for c, p in final], PREDICTION_BAR)]
    synopsis = synopsis_ranking(out_b)
    if synopsis:
        entries = [(_name(c, class_names), p) for c, p in synopsis]
        panels.append(_bars(f"synopsis top-{len(synopsis)} (SNet softmax)", entries, SYNOPSIS_BAR))
    return _stack(panels, vertical=False, gap=4 * GAP)


def sampling_figure(
    frames: torch.Tensor,
    n_valid: int,
    out_b: dict,
    *,
    uniform_indices: torch.Tensor | None = None,
    input_size: int | None = None,
    class_names: list[str] | None = None,
    mean,
    std,
    top: int = 5,
    title: str | None = None,
) -> Image.Image:
    """The figure of one video: uint8 candidates `frames (T, 3, H, W)`, its valid count and the
    model's output for it (`out_b`: each tensor of the output dict without the batch dim).

    S2DNet: (a) the `uniform_indices` frames SNet saw (at `input_size`, its SNET.INPUT_SIZE),
    (b) all T candidates with a mark under each detail frame's position, (c) per detail frame
    the nearest candidate with its zoom window and the detail frame itself, (d) the final top-
    `top` and the synopsis' top-k. The uniform baseline (no sampler output): (a) with its K
    frames at DNET.INPUT_SIZE, and (d).
    """
    frames = frames.cpu()
    h, w = frames.shape[-2:]
    tile = max(h, w) * display_scale(max(h, w)) // 2
    sampling = "t_positions" in out_b
    sections = []
    if uniform_indices is not None:
        indices = uniform_indices.cpu()
        who = "synopsis: the uniform candidates SNet saw" if sampling else "uniform frames DNet saw"
        size = f" at {input_size}x{input_size}" if input_size else ""
        line = f"{who}{size}: {', '.join(str(int(i)) for i in indices)}"
        sections.append(_uniform_row(frames, indices, input_size, tile, line))
    if sampling:
        pairs = _detail_pairs(frames, out_b, mean, std)
        width = max([pairs.width] + [s.width for s in sections])
        strip = _candidate_strip(
            frames, n_valid, out_b["t_positions"], [] if uniform_indices is None else uniform_indices,
            width, out_b["t_center"], out_b["t_stride"],
        )
        sections += [strip, pairs]
    sections.append(_prediction(out_b, class_names, top))
    if title:
        sections.insert(0, _titled([title], _canvas(1, 1)))
    body = _stack(sections, vertical=True, gap=3 * GAP)
    out = _canvas(body.width + 2 * GAP, body.height + 2 * GAP)
    out.paste(body, (GAP, GAP))
    return out


def batch_figure(model, frames: torch.Tensor, n_valid: torch.Tensor, out: dict, index: int = 0, *,
                 class_names: list[str] | None = None, title: str | None = None, top: int = 5) -> Image.Image:
    """`sampling_figure` of video `index` of a batch: `frames (B, T, 3, H, W)` uint8, `n_valid
    (B,)` and the output dict of `model` (the registered model itself, not a DDP wrapper) on
    them; the uniform frames and their size come from the model. Entries that are not per
    video (a scalar loss term) are left out."""
    b = frames.shape[0]
    out_b = {key: value[index].detach().float().cpu() for key, value in out.items()
             if value.dim() and value.shape[0] == b}
    n = int(n_valid[index])
    k, size = model.uniform_input
    return sampling_figure(
        frames[index], n, out_b, uniform_indices=sampler.uniform_indices(torch.tensor([n]), k)[0], input_size=size,
        class_names=class_names, mean=model.mean.cpu(), std=model.std.cpu(), top=top, title=title,
    )


def sampling_grid_tensor(model, frames: torch.Tensor, n_valid: torch.Tensor, out: dict, index: int = 0, *,
                         class_names: list[str] | None = None, top: int = 5) -> torch.Tensor:
    """`batch_figure` as a uint8 `(3, H, W)` tensor, for `SummaryWriter.add_image`."""
    return figure_tensor(batch_figure(model, frames, n_valid, out, index, class_names=class_names, top=top))
