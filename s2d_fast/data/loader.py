"""TSN list files, candidate-frame sampling, decoding (PyAV or JPEG folders) and the DataLoader.

Every sample is T = DATA.NUM_CANDIDATES frames, one per equal segment of the video (random inside
the segment in training, its centre in evaluation), resized so the short side is DATA.SCALE_SIZE
and cropped to DATA.CROP_SIZE (random crop and, where the dataset allows, flip in training).

Randomness is per sample: crop, flip and in-segment offsets come from a generator seeded with
(RNG_SEED, epoch, index), and the shuffle order from RNG_SEED + epoch, so a run gives the same
batches whatever DATA.NUM_WORKERS is and after a resume.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from s2d_fast.config import ConfigError
from s2d_fast.data.datasets import resolve_dataset
from s2d_fast.data.transforms import apply_boxes, clip_indices, read_label_map, scaled_size, spatial_plan

logger = logging.getLogger(__name__)

# Seek only when the first wanted frame is this far in: decoding from the start is cheaper than a
# seek (which lands on the previous keyframe anyway) for short clips.
SEEK_MIN_FRAMES = 64


class ListFileError(ConfigError):
    """A list file that cannot be used; the message starts `file:line:`."""


class VideoReadError(RuntimeError):
    """One video or frame folder that cannot be read; the message names the path and the reason."""


@dataclass(frozen=True)
class VideoRecord:
    path: str  # relative to the dataset root (or absolute)
    num_frames: int  # as listed: a hint, the decoder has the last word
    label: int


def _parse_row(fields: list[str], line: str, where: str, num_classes: int | None) -> VideoRecord:
    if len(fields) < 3:
        raise ListFileError(f"{where}: expected `path num_frames label`, got {line.strip()!r}")
    try:
        num_frames, label = int(fields[-2]), int(fields[-1])
    except ValueError:
        raise ListFileError(
            f"{where}: num_frames and label must be integers, got {fields[-2]!r} {fields[-1]!r}"
        ) from None
    if num_frames < 1:
        raise ListFileError(f"{where}: num_frames must be at least 1, got {num_frames}")
    if label < 0:
        raise ListFileError(f"{where}: label must not be negative, got {label}")
    if num_classes is not None and label >= num_classes:
        raise ListFileError(f"{where}: label {label} is not below the {num_classes} classes (DATA.NUM_CLASS)")
    return VideoRecord(" ".join(fields[:-2]), num_frames, label)


def read_list_file(
    path: str | os.PathLike, num_classes: int | None = None, on_bad: str = "error"
) -> list[VideoRecord]:
    """Rows `path num_frames label` of a TSN list file (a path may contain spaces).

    A malformed row raises ListFileError `file:line: why`; with `on_bad="skip"` it is logged
    (the same message) and left out instead, so one bad row does not stop a long run.
    """
    records = []
    skipped = 0
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                records.append(_parse_row(fields, line, f"{path}:{lineno}", num_classes))
            except ListFileError as err:
                if on_bad != "skip":
                    raise
                logger.warning("skipping a list row: %s", err)
                skipped += 1
    if skipped:
        logger.warning("%s: skipped %d malformed row(s) of %d", path, skipped, skipped + len(records))
    if not records:
        raise ListFileError(f"{path}: the list file names no videos")
    return records


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


class _NoTimestamps(Exception):
    """After a seek, frames without timestamps cannot be numbered: decode from the start."""


def _decode_pass(path: str, wanted: np.ndarray, short_side: int, seek: bool) -> tuple[dict, int | None]:
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1  # DataLoader workers are the parallelism
        rate = stream.average_rate or stream.guessed_rate
        base = stream.time_base
        start = stream.start_time or 0
        seeked = bool(seek and rate and base and wanted[0] >= SEEK_MIN_FRAMES)
        if seeked:
            container.seek(start + int(wanted[0] / rate / base), stream=stream, backward=True, any_frame=False)
        frames: dict[int, np.ndarray] = {}
        pending = 0  # wanted[pending] is the next frame still to find
        last = last_index = size = None
        for count, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and rate and base:
                index = round(float((frame.pts - start) * base * rate))
            elif seeked:
                raise _NoTimestamps
            else:
                index = count
            if size is None:
                size = scaled_size(frame.width, frame.height, short_side)
            image = None
            # Each wanted frame takes the first decoded frame at or after it (gaps in the timestamps).
            while pending < len(wanted) and wanted[pending] <= index:
                if image is None:
                    image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="BILINEAR")
                frames[int(wanted[pending])] = image
                pending += 1
            last, last_index = frame, index
            if pending == len(wanted):
                return frames, None
        if last is None:
            raise VideoReadError(f"{path}: no frames could be decoded")
        # Shorter than listed: the missing frames are the last one (the list's count is a hint).
        image = last.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="BILINEAR")
        for w in wanted[pending:]:
            frames[int(w)] = image
        return frames, last_index + 1


def check_file(path: str) -> None:
    """The two failures worth naming plainly before a decoder words them its own way."""
    if not os.path.isfile(path):
        raise VideoReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file")


def decode_video(path: str | os.PathLike, indices: np.ndarray, short_side: int) -> tuple[np.ndarray, int | None]:
    """Frames `uint8 (len(indices), H, W, 3)` at `indices`, short side resized to `short_side`,
    decoding only up to the last one; and the real frame count if the video ended early, else None."""
    path = str(path)
    check_file(path)
    wanted = np.unique(indices)
    try:
        try:
            frames, available = _decode_pass(path, wanted, short_side, seek=True)
        except _NoTimestamps:
            frames, available = _decode_pass(path, wanted, short_side, seek=False)
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
    available = None
    wanted = np.unique(indices)
    if not (folder / template.format(int(wanted[-1]) + 1)).is_file():
        # Fewer frames than listed: count them and clamp, as for a video that ends early.
        prefix, _, rest = template.partition("{")
        suffix = rest.partition("}")[2]
        available = sum(1 for name in os.listdir(folder) if name.startswith(prefix) and name.endswith(suffix))
        if available == 0:
            raise VideoReadError(f"{folder}: no frames named like {template.format(1)}")
        indices = np.minimum(indices, available - 1)
        wanted = np.unique(indices)
    images = {}
    for i in wanted:
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
        frame_template: str = "img_{:05d}.jpg",
        seed: int = 0,
        num_clips: int = 1,
        num_crops: int = 1,
        on_bad: str = "error",
        flip_label_map: dict[int, int] | None = None,
    ):
        if crop_size > scale_size:
            raise ConfigError(f"DATA.CROP_SIZE ({crop_size}) must not exceed DATA.SCALE_SIZE ({scale_size})")
        if num_crops not in (1, 3):
            raise ConfigError(f"DATA.NUM_CROPS must be 1 or 3; got {num_crops}")
        if num_clips < 1:
            raise ConfigError(f"DATA.NUM_CLIPS must be at least 1; got {num_clips}")
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


class EpochSampler(Sampler):
    """Yields `(epoch, index)`: the order is shuffled from `seed + epoch`, and the epoch travels
    with each index to seed its augmentation.

    Distributed, training splits the shuffled order with DistributedSampler (which pads to equal
    shards), while evaluation takes every `world`-th video from `rank` with no padding, so that
    gathered results score each video exactly once. `set_epoch(epoch, start)` sets the epoch and
    skips the first `start` samples of it, which is how a run resumed mid-epoch continues with
    the very batches it would have seen; without it each pass counts up on its own.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, distributed: bool = False, pad: bool = True):
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self.pad = pad
        self.distributed = DistributedSampler(range(size), shuffle=shuffle, seed=seed) if distributed else None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _order(self, epoch: int) -> list[int]:
        if self.distributed is not None and self.pad:
            self.distributed.set_epoch(epoch)
            return list(self.distributed)
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            order = list(range(self.size))
        if self.distributed is not None:
            order = order[self.distributed.rank :: self.distributed.num_replicas]
        return order

    def __len__(self) -> int:
        return len(self._order(self.epoch)) - self.start

    def __iter__(self):
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        return iter([(epoch, i) for i in self._order(epoch)[start:]])


def _worker_init(worker_id: int) -> None:
    # Samples are seeded on their own; this seeds the global generators any library might use, from
    # the loader's generator (RNG_SEED), and keeps each worker to one thread on shared cores.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def flip_policy(cfg, resolved) -> tuple[bool, dict[int, int]]:
    """Whether training flips, and the label map a flip applies (DATA.FLIP_LABEL_MAP turns the
    flip on for datasets where direction matters, swapping the mirrored classes)."""
    label_map = read_label_map(cfg.DATA.FLIP_LABEL_MAP) if cfg.DATA.FLIP_LABEL_MAP else {}
    if cfg.DATA.FLIP == "auto":
        return resolved.spec.flip or bool(label_map), label_map
    return cfg.DATA.FLIP == "on", label_map


def build_dataset(cfg, split: str) -> VideoDataset:
    """The dataset of `split` ("train" or "val") as the config describes it."""
    resolved = resolve_dataset(cfg)
    on_bad = cfg.DATA.ON_BAD_SAMPLE
    records = read_list_file(resolved.list_file(split), resolved.num_classes, on_bad)
    flip, label_map = flip_policy(cfg, resolved)
    return VideoDataset(
        records,
        resolved.root,
        fmt=resolved.fmt,
        num_segments=cfg.DATA.NUM_CANDIDATES,
        scale_size=cfg.DATA.SCALE_SIZE,
        crop_size=cfg.DATA.CROP_SIZE,
        train=split == "train",
        flip=flip,
        num_classes=resolved.num_classes,
        frame_template=cfg.DATA.FRAME_TEMPLATE or resolved.spec.frame_template,
        seed=cfg.RNG_SEED,
        num_clips=cfg.DATA.NUM_CLIPS,
        num_crops=cfg.DATA.NUM_CROPS,
        on_bad=on_bad,
        flip_label_map=label_map,
    )


class VideoLoader(DataLoader):
    """A DataLoader that notes, in the main process, the bad samples its workers met."""

    def __iter__(self):
        for batch in super().__iter__():
            for report in batch.pop("bad", ()):
                for bad in json.loads(report):
                    self.dataset.bad.note(bad["path"], bad["reason"], replaced=self.dataset.train)
            yield batch


def batch_plan(cfg, split: str, dataset, shuffle, drop_last, distributed) -> tuple[int, EpochSampler, bool]:
    """Per-process batch size, sampler and drop_last, shared by the backends.

    TRAIN.BATCH_SIZE is summed over processes and split between them when `distributed`;
    TEST.BATCH_SIZE is per process.
    """
    train = split == "train"
    shuffle = train if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    batch_size = cfg.TRAIN.BATCH_SIZE if train else cfg.TEST.BATCH_SIZE
    if distributed and train:
        world = torch.distributed.get_world_size()
        if batch_size % world:
            raise ConfigError(f"TRAIN.BATCH_SIZE ({batch_size}) must be a multiple of the {world} processes")
        batch_size //= world
    if drop_last and len(dataset) < batch_size:
        raise ConfigError(
            f"the {split} list has {len(dataset)} videos, fewer than one batch of {batch_size}: "
            f"lower {'TRAIN' if train else 'TEST'}.BATCH_SIZE"
        )
    return batch_size, EpochSampler(len(dataset), shuffle, cfg.RNG_SEED, distributed, pad=train), drop_last


def choose_backend(cfg) -> str:
    """DATA.BACKEND, with auto taking DALI where it is installed."""
    if cfg.DATA.BACKEND == "pyav":
        return "pyav"
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        if cfg.DATA.BACKEND == "dali":
            raise ConfigError(
                "DATA.BACKEND dali: NVIDIA DALI is not installed (pip install nvidia-dali-cuda130); "
                "DATA.BACKEND pyav or auto decodes with PyAV"
            ) from None
        return "pyav"
    return "dali"


def build_loader(cfg, split: str, *, shuffle: bool | None = None, drop_last: bool | None = None,
                 distributed: bool = False):
    """Batches `frames (B, T, 3, H, W) uint8` (`(B, V, T, 3, H, W)` with several test views),
    `n_valid (B,)`, `label (B,)`, `index (B,)` and `valid (B,)` of `split`, from the backend
    DATA.BACKEND names: a DALI pipeline (`DaliLoader`) or PyAV in DataLoader workers."""
    dataset = build_dataset(cfg, split)
    batch_size, sampler, drop_last = batch_plan(cfg, split, dataset, shuffle, drop_last, distributed)
    if choose_backend(cfg) == "dali":
        from s2d_fast.data.dali import DaliLoader  # DALI only when chosen: it is an optional install

        return DaliLoader(dataset, sampler, batch_size, drop_last, num_threads=max(1, cfg.DATA.NUM_WORKERS),
                          use_gpu=cfg.NUM_GPUS > 0 and torch.cuda.is_available())
    workers = cfg.DATA.NUM_WORKERS
    return VideoLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(cfg.RNG_SEED),
        pin_memory=cfg.NUM_GPUS > 0 and torch.cuda.is_available(),
        drop_last=drop_last,
    )
