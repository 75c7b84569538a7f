"""Reading frames: video files with PyAV, folders of JPEG frames with PIL, and the one frame
counter and the one probe the package uses for both.

A frame folder holds one JPEG per frame named `template.format(i)` for i = 1, 2, ... (TSN's
numbering, `TSN_FRAME_TEMPLATE` unless the dataset says otherwise).
"""

from __future__ import annotations

import bisect
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from s2d_fast.errors import UserError

from .transforms import scaled_size

TSN_FRAME_TEMPLATE = "img_{:05d}.jpg"

# Seek only when the first wanted frame is this far in: decoding from the start is cheaper than a
# seek (which lands on the previous keyframe anyway) for short clips.
SEEK_MIN_FRAMES = 64


class VideoReadError(UserError, RuntimeError):
    """One video or frame folder that cannot be read; the message names the path and the reason."""


def check_file(path: str) -> None:
    """The two failures worth naming plainly before a decoder words them its own way."""
    if not os.path.isfile(path):
        raise VideoReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file")


# --- counting -------------------------------------------------------------------------------


def count_frames(folder: str | os.PathLike, template: str) -> int:
    """Files of `folder` named like `template` (its text before and after the `{...}` field)."""
    prefix, _, rest = template.partition("{")
    suffix = rest.partition("}")[2]
    return sum(1 for name in os.listdir(folder) if name.startswith(prefix) and name.endswith(suffix))


def folder_frames(folder: str | os.PathLike, template: str) -> int:
    """The frame count of a frame folder; VideoReadError for a missing folder or one with none."""
    if not os.path.isdir(folder):
        raise VideoReadError(f"{folder}: no such frame folder")
    available = count_frames(folder, template)
    if available == 0:
        raise VideoReadError(f"{folder}: no frames named like {template.format(1)}")
    return available


def frames_if_short(folder: str | os.PathLike, template: str, last: int) -> int | None:
    """None when the frame folder has frame `last` (0-based), else how many frames it has; a
    folder with none named like `template` raises VideoReadError."""
    if os.path.isfile(os.path.join(folder, template.format(last + 1))):
        return None
    return folder_frames(folder, template)


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int  # as stored; `rotation` may turn it for display
    height: int
    num_frames: int
    pts: tuple[int, ...] | None  # every frame's timestamp, in presentation order (None: some lack one)
    rotation: int  # degrees counter-clockwise that display turns the stored frames: 0, 90, 180, 270


def _quarter_turns(degrees: float | None) -> int:
    return round((degrees or 0) / 90) % 4


@functools.lru_cache(maxsize=None)
def probe_video(path: str) -> VideoInfo:
    """Codec, size, frame count and timestamps (packets; only the first frame is decoded, for its
    rotation) of a video file; cached per path."""
    check_file(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stamps, rotation = [], None
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                stamps.append(packet.pts)
                if rotation is None:
                    rotation = next((frame.rotation for frame in packet.decode()), None)
            pts = None if any(t is None for t in stamps) else tuple(sorted(stamps))
            info = VideoInfo(stream.codec_context.name, stream.width, stream.height, len(stamps), pts,
                             90 * _quarter_turns(rotation))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError(f"{path}: cannot decode: {err}") from err
    if info.num_frames == 0 or not info.width:
        raise VideoReadError(f"{path}: no frames could be decoded")
    return info


def frames_at(path: Path, template: str) -> int:
    """Frames of a frame folder (files named like `template`) or of a video file; 0 if unreadable."""
    if path.is_dir():
        return count_frames(path, template)
    try:
        return probe_video(str(path)).num_frames
    except VideoReadError:
        return 0


# --- decoding -------------------------------------------------------------------------------


def frame_to_rgb(frame: av.VideoFrame, short_side: int) -> np.ndarray:
    """An upright RGB image of `frame`, its short side resized to `short_side` (0 keeps the
    size): the stream's rotation is applied, as ffmpeg does when it displays or extracts."""
    turns = _quarter_turns(frame.rotation)
    width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    if short_side:
        width, height = scaled_size(width, height, short_side)
    stored = (height, width) if turns % 2 else (width, height)
    # One swscale thread: PyAV 18.1.1 keeps a slice-thread pool that a DataLoader worker forked
    # after the parent decoded inherits without its threads, and the worker hangs for good.
    image = frame.to_ndarray(format="rgb24", width=stored[0], height=stored[1], interpolation="BILINEAR", threads=1)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class _NoTimestamps(Exception):
    """After a seek, frames without timestamps cannot be numbered: decode from the start."""


def _decode_pass(path: str, info: VideoInfo, wanted: np.ndarray, short_side: int, seek: bool) -> tuple[dict, int | None]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # DataLoader workers are the parallelism
        # Frames are numbered by their rank in presentation order, so that a variable-rate video
        # gives the frames DALI and an extracted frame folder give.
        seeked = bool(seek and info.pts is not None and wanted[0] >= SEEK_MIN_FRAMES)
        if seeked:
            container.seek(info.pts[int(wanted[0])], stream=stream, backward=True, any_frame=False)
        frames: dict[int, np.ndarray] = {}
        pending = 0  # wanted[pending] is the next frame still to find
        last = last_index = None
        for count, frame in enumerate(container.decode(stream)):
            if info.pts is not None and frame.pts is not None:
                index = bisect.bisect_left(info.pts, frame.pts)
            elif seeked:
                raise _NoTimestamps
            else:
                index = count
            image = None
            # Each wanted frame takes the first decoded frame at or after it (gaps in the timestamps).
            while pending < len(wanted) and wanted[pending] <= index:
                if image is None:
                    image = frame_to_rgb(frame, short_side)
                frames[int(wanted[pending])] = image
                pending += 1
            last, last_index = frame, index
            if pending == len(wanted):
                return frames, None
        if last is None:
            raise VideoReadError(f"{path}: no frames could be decoded")
        # The file ends before its last wanted frame (truncated): the missing frames are the last one.
        image = frame_to_rgb(last, short_side)
        for w in wanted[pending:]:
            frames[int(w)] = image
        return frames, last_index + 1


def decode_video(path: str | os.PathLike, indices: np.ndarray, short_side: int) -> tuple[np.ndarray, int | None]:
    """Upright frames `uint8 (len(indices), H, W, 3)` at `indices` (ranks in presentation
    order), short side resized to `short_side`, decoding only up to the last one; and the
    frames the file really has if it ends before the last one (truncated), else None."""
    path = str(path)
    info = probe_video(path)
    wanted = np.unique(indices)
    try:
        try:
            frames, available = _decode_pass(path, info, wanted, short_side, seek=True)
        except _NoTimestamps:
            frames, available = _decode_pass(path, info, wanted, short_side, seek=False)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError(f"{path}: cannot decode: {err}") from err
    return np.stack([frames[int(i)] for i in indices]), available


def read_frames(
    folder: str | os.PathLike, indices: np.ndarray, short_side: int, template: str
) -> tuple[np.ndarray, int | None]:
    """The same from a folder of JPEGs named `template.format(i + 1)` (TSN numbering is 1-based)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoReadError(f"{folder}: no such frame folder")
    # Fewer frames than asked for: clamp to what there is, as for a video that ends early.
    available = frames_if_short(folder, template, int(indices.max()))
    if available is not None:
        indices = np.minimum(indices, available - 1)
    images = {}
    for i in np.unique(indices):
        file = folder / template.format(int(i) + 1)
        try:
            with Image.open(file) as image:
                size = scaled_size(*image.size, short_side)
                image.draft("RGB", size)  # JPEG decodes at 1/2, 1/4 or 1/8 scale when that is enough
                image = image.convert("RGB")
                if image.size != size:
                    image = image.resize(size, Image.BILINEAR)
                images[int(i)] = np.asarray(image)
        except OSError as err:
            raise VideoReadError(f"{file}: cannot read: {err}") from err
    try:
        return np.stack([images[int(i)] for i in indices]), available
    except ValueError as err:
        raise VideoReadError(f"{folder}: frames of different sizes: {err}") from err
