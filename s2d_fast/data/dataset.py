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
from torch.utils.data import Dataset, get_worker_info

from .decoders import TSN_FRAME_TEMPLATE, VideoReadError, decode_video, folder_frames, probe_video, read_frames
from .frame_indices import all_frame_indices, clip_indices, segment_indices
from .lists import RejectedRow, VideoRecord
from .transforms import apply_boxes, spatial_plan

logger = logging.getLogger(__name__)


# The kinds of note a sample can carry.
UNREADABLE, MISCOUNTED, TRUNCATED = "unreadable", "miscounted", "truncated"
LOGGED_PER_KIND = 5  # notes of a kind logged one by one


class SampleNotes:
    """What the samples had to say, gathered in the main process: unreadable videos (each path
    logged once; replacements counted in training; listed as `{"path", "reason", "index"}` in
    evaluation) and rows whose listed frame count or length the video contradicts (logged
    once). A note marked fatal (DATA.ON_BAD_SAMPLE error, met in a DataLoader worker) raises
    here, so that the error reads as it would without workers."""

    def __init__(self):
        self.samples: list[dict] = []
        self.num_skipped = 0
        self._seen: set[tuple[str, str]] = set()
        self._logged: dict[str, int] = {}

    def note(self, note: dict, replaced: bool) -> None:
        if note.get("fatal"):
            raise VideoReadError(note["reason"])
        kind = note.get("kind", UNREADABLE)
        if kind == UNREADABLE and replaced:
            self.num_skipped += 1
        if (kind, note["path"]) in self._seen:
            return
        self._seen.add((kind, note["path"]))
        if kind == UNREADABLE:
            self.samples.append({"path": note["path"], "reason": note["reason"], "index": note.get("index")})
            what = "replaced by the next readable video" if replaced else "scored as wrong"
            self._log(kind, f"unreadable sample ({what}): {note['reason']}")
        else:
            self._log(kind, note["reason"])

    def _log(self, kind: str, message: str) -> None:
        """The first LOGGED_PER_KIND notes of a kind one by one, then that more are not."""
        logged = self._logged.get(kind, 0)
        self._logged[kind] = logged + 1
        if logged < LOGGED_PER_KIND:
            logger.warning("%s", message)
        elif logged == LOGGED_PER_KIND:
            logger.warning("more %s samples are not logged one by one (evaluation lists them all)", kind)

    def note_all(self, notes: str, replaced: bool) -> None:
        """The JSON list a sample carries under "notes"."""
        for note in json.loads(notes):
            self.note(note, replaced)


class DecodedCache:
    """Decoded frames kept in this process's memory, up to `budget_mb`, so that later epochs skip
    the decoder (`DATA.DECODED_CACHE_MB`). A video's entry holds the frames at its `kept` indices
    (every frame for training); a read of indices it holds returns exactly what decoding them
    would (a truncated video's `available` only where a read reaches past its end). Once full it
    keeps what it has: with shuffled epochs an eviction would only trade one miss for another."""

    def __init__(self, budget_mb: int):
        self.budget = budget_mb * 2**20
        self.used = 0
        self.full = False
        self.entries: dict[Path, tuple[np.ndarray, np.ndarray, int | None]] = {}

    @staticmethod
    def select(entry: tuple[np.ndarray, np.ndarray, int | None], indices: np.ndarray):
        """The frames at `indices` and the truncation `decode_video` would report, or None if
        `entry` does not hold them."""
        kept, frames, available = entry
        if np.array_equal(kept, indices):
            picked = frames
        elif np.array_equal(kept, np.arange(len(kept))) and indices.max(initial=0) < len(kept):
            picked = frames[indices]
        else:
            return None
        return picked, (available if available is not None and indices.max(initial=0) >= available else None)

    def get(self, path: Path, indices: np.ndarray):
        entry = self.entries.get(path)
        return None if entry is None else self.select(entry, indices)

    def put(self, path: Path, entry: tuple[np.ndarray, np.ndarray, int | None]) -> None:
        """Keep `entry` (kept indices, their frames, truncation) if the budget allows."""
        size = entry[1].nbytes
        if self.used + size > self.budget:
            self.full = True
            return
        self.entries[path] = entry
        self.used += size


class VideoDataset(Dataset):
    """Samples `{"frames", "n_valid", "label", "index", "valid", "notes"}` from a list of videos.

    `frames` is uint8 `(T, 3, H, W)`, or `(V, T, 3, H, W)` for V = num_clips * num_crops > 1
    views (clip-major). An item is an index or `(epoch, index)` (what `EpochSampler` yields): the
    epoch only seeds the frame offsets, crop and flip. Frames are chosen among the ones the video
    (or frame folder) really has; a row whose listed count is off by more than one frame, or a
    video that ends before its last frame, is noted.

    An unreadable video raises VideoReadError with `on_bad="error"`. With "skip", training takes
    the next readable video of the list instead (deterministically) and evaluation returns zero
    frames with `valid` False. `notes` carries what went wrong (JSON) to the main process, where
    the loader gathers it in `notes` (DataLoader workers cannot share a list).
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
        every_frame: bool = False,
        trim_div: int = 16,
        frame_stride: int = 1,
        decoded_cache_mb: int = 0,
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
        # DATA.CANDIDATES all: every frame, up to num_segments (= DATA.MAX_FRAMES) of them.
        self.every_frame = every_frame
        self.trim_div = trim_div
        self.frame_stride = frame_stride
        self.decoded = DecodedCache(decoded_cache_mb)
        self.notes = SampleNotes()
        self.rejected: list[RejectedRow] = []  # rows of the list file left out as malformed

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    @property
    def bad_samples(self) -> list[dict]:
        return self.notes.samples

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> dict:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        notes: list[dict] = []
        for k in range(len(self.records) if self.train and self.on_bad == "skip" else 1):
            candidate = (index + k) % len(self.records)
            try:
                sample = self._load(candidate, epoch, notes)
                break
            except VideoReadError as err:
                if self.on_bad == "error" and get_worker_info() is None:
                    raise
                notes.append({"path": str(self.root / self.records[candidate].path), "reason": str(err),
                              "index": candidate, "kind": UNREADABLE, "fatal": self.on_bad == "error"})
        else:
            if self.train and self.on_bad == "skip":
                raise VideoReadError(f"no video of the list could be read; the last: {notes[-1]['reason']}")
            sample = self.invalid_sample(index)
        sample["notes"] = json.dumps(notes)
        return sample

    def invalid_sample(self, index: int) -> dict:
        """The stand-in for an unreadable evaluation video: zeros, never counted as correct."""
        c, t = self.crop_size, self.num_segments
        shape = (t, 3, c, c) if self.num_views == 1 else (self.num_views, t, 3, c, c)
        return {"frames": torch.zeros(shape, dtype=torch.uint8), "n_valid": t, "label": self.records[index].label,
                "index": index, "valid": False}

    def frame_count(self, index: int, notes: list[dict]) -> int:
        """How many frames the row's video has (a listed count that is off by more than one frame
        is noted). A frame folder's rows keep their listed count, as TSN's lists are written from
        the folders (a folder that has fewer is clamped when read); a `path label` row counts."""
        record = self.records[index]
        path = self.root / record.path
        if self.fmt == "frames":
            return record.num_frames if record.num_frames is not None else folder_frames(path, self.frame_template)
        count = probe_video(str(path)).num_frames
        if record.num_frames is not None and abs(record.num_frames - count) > 1:
            notes.append({"path": str(path), "kind": MISCOUNTED, "reason": (
                f"{record.where or record.path}: the list says {record.num_frames} frames, {path} has {count}; "
                f"reading the {count}")})
        return count

    def temporal_plan(self, num_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Frame indices (all clips, clip after clip) and n_valid for a video of `num_frames`."""
        if self.every_frame:
            return all_frame_indices(num_frames, self.num_segments, self.train, rng, self.trim_div, self.frame_stride)
        if self.train:
            return segment_indices(num_frames, self.num_segments, True, rng)
        return clip_indices(num_frames, self.num_segments, self.num_clips)

    def note_truncated(self, index: int, available: int, num_frames: int, notes: list[dict]) -> None:
        path = str(self.root / self.records[index].path)
        notes.append({"path": path, "kind": TRUNCATED, "reason": (
            f"{path}: ends after {available} of its {num_frames} frames (truncated?); its last frame stands in "
            "for the missing ones")})

    def finish(self, record: VideoRecord, index: int, views: torch.Tensor, n_valid: int, flip: bool) -> dict:
        """The sample dict from `(V, T, 3, c, c)` views; a flip swaps mirrored labels."""
        label = self.flip_label_map.get(record.label, record.label) if flip else record.label
        frames = views[0] if self.num_views == 1 else views
        return {"frames": frames, "n_valid": n_valid, "label": label, "index": index, "valid": True}

    def _decode(self, path: Path, indices: np.ndarray) -> tuple[np.ndarray, int | None]:
        if self.fmt == "frames":
            return read_frames(path, indices, self.scale_size, self.frame_template)
        return decode_video(path, indices, self.scale_size)

    def _read(self, record: VideoRecord, indices: np.ndarray, num_frames: int) -> tuple[np.ndarray, int | None]:
        path = self.root / record.path
        hit = self.decoded.get(path, indices)
        if hit is not None:
            return hit
        if not self.decoded.budget or self.decoded.full:
            return self._decode(path, indices)
        # Training draws other frames every epoch, so it keeps every frame of the video;
        # evaluation reads the same frames each time and keeps only those.
        kept = np.arange(num_frames) if self.train else indices.copy()
        entry = (kept, *self._decode(path, kept))
        self.decoded.put(path, entry)
        return self.decoded.select(entry, indices) or self._decode(path, indices)

    def _load(self, index: int, epoch: int, notes: list[dict]) -> dict:
        """One sample; raises VideoReadError for an unreadable video (the skip policy wraps this)."""
        record = self.records[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        num_frames = self.frame_count(index, notes)
        indices, n_valid = self.temporal_plan(num_frames, rng)
        frames, available = self._read(record, indices, num_frames)
        if available is not None:
            n_valid = min(n_valid, available)
            self.note_truncated(index, available, num_frames, notes)
        _, h, w, _ = frames.shape
        boxes, flip = spatial_plan(w, h, self.crop_size, self.train, self.flip, self.num_crops, rng)
        views = apply_boxes(frames, boxes, self.crop_size, flip)  # (crops, clips * T, 3, c, c)
        views = views.unflatten(1, (self.num_clips, self.num_segments)).transpose(0, 1).flatten(0, 1)
        return self.finish(record, index, views, n_valid, flip)
