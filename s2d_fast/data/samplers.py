"""The order in which an epoch visits the list, the same in every backend and after a resume."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler, Sampler


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
