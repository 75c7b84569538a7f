"""The dataset: one list row to one sample of T candidate frames, and what to do when a video
cannot be read.

Every sample is T = DATA.NUM_CANDIDATES frames, one per equal segment of the video (random inside
the segment in training, its centre in evaluation; `frame_indices`), resized so the short side is
DATA.SCALE_SIZE and cropped to DATA.CROP_SIZE (random crop and, where the dataset allows, flip in
training; `transforms`).

Randomness is per sample: crop, flip and in-segment offsets come from a generator seeded with
(RNG_SEED, epoch, index), so a run gives the same batches whatever DATA.NUM_WORKERS is and after
a resume.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .decoders import TSN_FRAME_TEMPLATE, VideoReadError, decode_video, read_frames
from .frame_indices import clip_indices, segment_indices
from .lists import VideoRecord
from .transforms import apply_boxes, spatial_plan

logger = logging.getLogger(__name__)


class BadSamples:
    """What could not be read: each path logged once, replacements counted (training), the
    unreadable videos listed as `{"path", "reason"}` (evaluation)."""

    def __init__(self):
        self.samples: list[dict] = []
        self.num_skipped = 0
        self._seen: set[str] = set()

    def note(self, path: str, reason: str, replaced: bool) -> None:
        if replaced:
            self.num_skipped += 1
        if path in self._seen:
            return
        self._seen.add(path)
        self.samples.append({"path": path, "reason": reason})
        what = "replaced by the next readable video" if replaced else "scored as wrong"
        logger.warning("unreadable sample (%s): %s", what, reason)


class VideoDataset(Dataset):
    """Samples `{"frames", "n_valid", "label", "index", "valid", "bad"}` from a list of videos.

    `frames` is uint8 `(T, 3, H, W)`, or `(V, T, 3, H, W)` for V = num_clips * num_crops > 1
    views (clip-major). An item is an index or `(epoch, index)` (what `EpochSampler` yields): the
    epoch only seeds the frame offsets, crop and flip.

    An unreadable video raises VideoReadError with `on_bad="error"`. With "skip", training takes
    the next readable video of the list instead (deterministically) and evaluation returns zero
    frames with `valid` False; `bad` carries what went wrong (JSON) to the main process, where
    the loader notes it in `bad_samples` (DataLoader workers cannot share a list).
    """

    def __init__(
        self,
        records: list[VideoRecord],
        root: str | os.PathLike,
        *,
        fmt: str,
        num_segments: int,
        scale_size: int,
        crop_size: int,
        train: bool,
        flip: bool,
        num_classes: int,
        frame_template: str = TSN_FRAME_TEMPLATE,
        seed: int = 0,
        num_clips: int = 1,
        num_crops: int = 1,
        on_bad: str = "error",
        flip_label_map: dict[int, int] | None = None,
    ):
        self.records = records
        self.root = Path(root)
        self.fmt = fmt
        self.num_segments = num_segments
        self.scale_size = scale_size
        self.crop_size = crop_size
        self.train = train
        self.flip = flip and train
        self.num_classes = num_classes
        self.frame_template = frame_template
        self.seed = seed
        # Training always takes one view; several are for testing.
        self.num_clips = 1 if train else num_clips
        self.num_crops = 1 if train else num_crops
        self.on_bad = on_bad
        self.flip_label_map = flip_label_map or {}
        self.bad = BadSamples()

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    @property
    def bad_samples(self) -> list[dict]:
        return self.bad.samples

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> dict:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        if self.on_bad == "error":
            return self._load(index, epoch)
        bad = []
        for k in range(len(self.records) if self.train else 1):
            candidate = (index + k) % len(self.records)
            try:
                sample = self._load(candidate, epoch)
                break
            except VideoReadError as err:
                bad.append({"path": str(self.root / self.records[candidate].path), "reason": str(err)})
        else:
            if self.train:
                raise VideoReadError(f"no video of the list could be read; the last: {bad[-1]['reason']}")
            sample = self.invalid_sample(index)
        sample["bad"] = json.dumps(bad)
        return sample

    def invalid_sample(self, index: int) -> dict:
        """The stand-in for an unreadable evaluation video: zeros, never counted as correct."""
        c, t = self.crop_size, self.num_segments
        shape = (t, 3, c, c) if self.num_views == 1 else (self.num_views, t, 3, c, c)
        return {"frames": torch.zeros(shape, dtype=torch.uint8), "n_valid": t, "label": self.records[index].label,
                "index": index, "valid": False}

    def temporal_plan(self, record: VideoRecord, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Frame indices (all clips, clip after clip) and n_valid, from the listed frame count."""
        if self.train:
            return segment_indices(record.num_frames, self.num_segments, True, rng)
        return clip_indices(record.num_frames, self.num_segments, self.num_clips)

    def finish(self, record: VideoRecord, index: int, views: torch.Tensor, n_valid: int, flip: bool) -> dict:
        """The sample dict from `(V, T, 3, c, c)` views; a flip swaps mirrored labels."""
        label = self.flip_label_map.get(record.label, record.label) if flip else record.label
        frames = views[0] if self.num_views == 1 else views
        return {"frames": frames, "n_valid": n_valid, "label": label, "index": index, "valid": True}

    def _read(self, record: VideoRecord, indices: np.ndarray) -> tuple[np.ndarray, int | None]:
        path = self.root / record.path
        if self.fmt == "frames":
            return read_frames(path, indices, self.scale_size, self.frame_template)
        return decode_video(path, indices, self.scale_size)

    def _load(self, index: int, epoch: int) -> dict:
        """One sample; raises VideoReadError for an unreadable video (the skip policy wraps this)."""
        record = self.records[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        indices, n_valid = self.temporal_plan(record, rng)
        frames, available = self._read(record, indices)
        if available is not None:
            n_valid = min(n_valid, available)
        _, h, w, _ = frames.shape
        boxes, flip = spatial_plan(w, h, self.crop_size, self.train, self.flip, self.num_crops, rng)
        views = apply_boxes(frames, boxes, self.crop_size, flip)  # (crops, clips * T, 3, c, c)
        views = views.unflatten(1, (self.num_clips, self.num_segments)).transpose(0, 1).flatten(0, 1)
        return self.finish(record, index, views, n_valid, flip)
