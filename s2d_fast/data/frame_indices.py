"""Which frames of a video become its T candidates: TSN's segment sampling, or every frame.

Segments (DATA.CANDIDATES segments): the video's frames are cut into T equal segments; training
takes a random frame inside each (from the sample's own generator), evaluation the centre of
each, or with several clips the point (c + 1/2) / clips of the way through each segment. Every
frame (all, the authors'): the frames from the start, up to T = DATA.MAX_FRAMES of them,
training first trimming a random few off each end. Either way a video shorter than T gives all
its frames, then its last frame repeated, and says how many are real (`n_valid`).
"""

from __future__ import annotations

import numpy as np


def segment_indices(
    num_frames: int, num_segments: int, train: bool, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, int]:
    """TSN sampling: one frame per equal segment, random inside it (train) or its centre (eval).

    A video shorter than `num_segments` gives all its frames, then its last frame repeated.
    Returns the int64 indices `(num_segments,)` and `n_valid = min(num_frames, num_segments)`.
    """
    if num_frames < 1 or num_segments < 1:
        raise ValueError(f"need at least one frame and one segment; got {num_frames} and {num_segments}")
    t = np.arange(num_segments, dtype=np.int64)
    if num_frames < num_segments:
        return np.minimum(t, num_frames - 1), num_frames
    if not train:
        # Exact integer form of floor((t + 0.5) * n / T): the same frames as the model's uniform_indices.
        return (2 * t + 1) * num_frames // (2 * num_segments), num_segments
    if rng is None:
        raise ValueError("training sampling needs a random generator")
    bounds = np.arange(num_segments + 1, dtype=np.int64) * num_frames // num_segments
    return rng.integers(bounds[:-1], bounds[1:]).astype(np.int64), num_segments


def clip_indices(num_frames: int, num_segments: int, num_clips: int) -> tuple[np.ndarray, int]:
    """Evaluation indices of `num_clips` clips: clip c takes the point (c + 1/2) / num_clips of
    the way through each segment (one clip: the segment centres). Returns `(num_clips * T,)`."""
    if num_frames < num_segments:
        return np.tile(np.minimum(np.arange(num_segments), num_frames - 1), num_clips), num_frames
    t = np.arange(num_segments, dtype=np.int64)
    clips = [(2 * num_clips * t + 2 * c + 1) * num_frames // (2 * num_clips * num_segments) for c in range(num_clips)]
    return np.concatenate(clips), num_segments


def all_frame_indices(num_frames: int, max_frames: int, train: bool, rng: np.random.Generator | None = None,
                      trim_div: int = 16, stride: int = 1) -> tuple[np.ndarray, int]:
    """Every frame, the authors' way: training starts at a random frame in [0, n // trim_div]
    and ends a random [0, n // trim_div] frames before the end (trim_div: the larger of the two
    networks' frame counts), evaluation takes frames 0..n-1; the first `max_frames` are kept,
    the last one repeated up to `max_frames`. With `stride` s the video is read as its frames
    0, s, 2s, ... (the authors' folders hold every second frame), n counting those.
    Returns `(max_frames,)` int64 and n_valid."""
    if num_frames < 1 or max_frames < 1 or stride < 1:
        raise ValueError(f"need at least one frame, candidate and stride; got {num_frames}, {max_frames}, {stride}")
    if stride > 1:
        indices, n_valid = all_frame_indices(-(-num_frames // stride), max_frames, train, rng, trim_div)
        return indices * stride, n_valid
    start, end = 0, num_frames
    if train:
        if rng is None:
            raise ValueError("training sampling needs a random generator")
        trim = num_frames // trim_div
        start, end = int(rng.integers(0, trim + 1)), num_frames - int(rng.integers(0, trim + 1))
    frames = np.arange(start, max(end, start + 1), dtype=np.int64)[:max_frames]
    n_valid = len(frames)
    return np.concatenate([frames, np.full(max_frames - n_valid, frames[-1], dtype=np.int64)]), n_valid
