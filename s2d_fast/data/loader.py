"""The loader of a split: the dataset the config describes, its sampler and batch size, and the
backend that decodes it (a DALI pipeline, or PyAV and PIL in DataLoader workers)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from s2d_fast.config import ConfigError, num_candidates, process_batch_size, read_flip_label_map, uses_gpus

from .dali import DaliLoader
from .dataset import VideoDataset
from .datasets import resolve_dataset
from .lists import read_list
from .samplers import EpochSampler


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
    label_map = read_flip_label_map(cfg.DATA.FLIP_LABEL_MAP) if cfg.DATA.FLIP_LABEL_MAP else {}
    if cfg.DATA.FLIP == "auto":
        return resolved.spec.flip or bool(label_map), label_map
    return cfg.DATA.FLIP == "on", label_map


def build_dataset(cfg, split: str, *, generate: bool = True) -> VideoDataset:
    """The dataset of `split` ("train" or "val") as the config describes it (`generate`: see
    `resolve_dataset`)."""
    resolved = resolve_dataset(cfg, generate=generate)
    on_bad = cfg.DATA.ON_BAD_SAMPLE
    records, rejected = read_list(resolved.list_file(split), resolved.num_classes, on_bad)
    flip, label_map = flip_policy(cfg, resolved)
    dataset = VideoDataset(
        records,
        resolved.root,
        fmt=resolved.fmt,
        num_segments=num_candidates(cfg),
        scale_size=cfg.DATA.SCALE_SIZE,
        crop_size=cfg.DATA.CROP_SIZE,
        train=split == "train",
        flip=flip,
        num_classes=resolved.num_classes,
        frame_template=resolved.frame_template,
        seed=cfg.RNG_SEED,
        num_clips=cfg.DATA.NUM_CLIPS,
        num_crops=cfg.DATA.NUM_CROPS,
        on_bad=on_bad,
        flip_label_map=label_map,
        every_frame=cfg.DATA.CANDIDATES == "all",
        trim_div=max(cfg.SNET.NUM_FRAMES, cfg.DNET.NUM_FRAMES),
        frame_stride=cfg.DATA.FRAME_STRIDE,
        decoded_cache_mb=cfg.DATA.DECODED_CACHE_MB,
    )
    dataset.rejected = rejected  # malformed rows left out (DATA.ON_BAD_SAMPLE skip): evaluation counts them
    return dataset


class VideoLoader(DataLoader):
    """A DataLoader that gathers, in the main process, what its workers' samples noted."""

    def __iter__(self):
        for batch in super().__iter__():
            for notes in batch.pop("notes", ()):
                self.dataset.notes.note_all(notes, replaced=self.dataset.train)
            yield batch


def batch_plan(cfg, split: str, dataset, shuffle, drop_last, distributed) -> tuple[int, EpochSampler, bool]:
    """Per-process batch size, sampler and drop_last, shared by the backends.

    TRAIN.BATCH_SIZE counts every process's videos or one process's (TRAIN.BATCH_SIZE_SCOPE);
    TEST.BATCH_SIZE is per process.
    """
    train = split == "train"
    shuffle = train if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    batch_size = cfg.TEST.BATCH_SIZE
    if train:
        batch_size = process_batch_size(cfg, torch.distributed.get_world_size() if distributed else 1)
    if drop_last and len(dataset) < batch_size:
        raise ConfigError(
            f"the {split} list has {len(dataset)} videos, fewer than one batch of {batch_size}: "
            f"lower {'TRAIN' if train else 'TEST'}.BATCH_SIZE"
        )
    return batch_size, EpochSampler(len(dataset), shuffle, cfg.RNG_SEED, distributed, pad=train), drop_last


def choose_backend(cfg) -> str:
    """DATA.BACKEND, with auto taking DALI where it is installed, unless DATA.DECODED_CACHE_MB
    keeps decoded frames (which the PyAV backend does)."""
    if cfg.DATA.BACKEND == "pyav" or cfg.DATA.DECODED_CACHE_MB:
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
        return DaliLoader(dataset, sampler, batch_size, drop_last, num_threads=max(1, cfg.DATA.NUM_WORKERS),
                          use_gpu=uses_gpus(cfg) and torch.cuda.is_available())
    workers = cfg.DATA.NUM_WORKERS
    return VideoLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(cfg.RNG_SEED),
        pin_memory=uses_gpus(cfg) and torch.cuda.is_available(),
        drop_last=drop_last,
    )
