"""Which frames of a video become its T candidates: TSN's segment sampling.

The video's frames are cut into T equal segments; training takes a random frame inside each
(from the sample's own generator), evaluation the centre of each, or with several clips the
point (c + 1/2) / clips of the way through each segment. A video shorter than T gives all its
frames, then its last frame repeated, and says how many are real (`n_valid`).
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
