"""Data-loading throughput: our backends against a TSM-style baseline on the same files.

Each backend decodes and augments DATA.NUM_CANDIDATES frames per training video (multi-scale
crop, flip) for `num_batches` batches of TRAIN.BATCH_SIZE after one warm-up batch; videos/s
and frames/s are over the timed batches. The baseline is what the TSM repository does: PyAV
decodes up to the last needed frame (or PIL opens the needed JPEGs), PIL scales, crops, resizes
and flips each frame, the frames become one normalised float tensor, and a torch DataLoader with DATA.NUM_WORKERS worker processes batches
them — the same number of workers as the DALI pipeline has threads. With DATA.DECODED_CACHE_MB
set, a `pyav-cached` row times the PyAV backend in a later epoch, its videos already decoded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import click
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from s2d_fast.cli_support import PAIRS_SETTINGS, UserErrorCommand, config_arguments, config_from_args
from s2d_fast.config import ConfigError
from s2d_fast.data.dataset import VideoDataset
from s2d_fast.data.frame_indices import segment_indices
from s2d_fast.data.loader import build_dataset, build_loader
from s2d_fast.data.samplers import EpochSampler
from s2d_fast.data.transforms import multi_scale_box, scaled_size


class TsmBaseline(Dataset):
    """TSM's loading recipe on a `VideoDataset`'s records: PIL images all the way."""

    def __init__(self, dataset: VideoDataset, mean: list[float], std: list[float]):
        self.dataset = dataset
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.dataset)

    def _images(self, path: Path, indices: np.ndarray) -> list[Image.Image]:
        if self.dataset.fmt == "frames":
            return [Image.open(path / self.dataset.frame_template.format(int(i) + 1)).convert("RGB") for i in indices]
        wanted, images = set(indices.tolist()), {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1  # one thread per worker: the same thread count as the DALI pipeline
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    images[n] = frame.to_image(threads=1)  # as decoders.frame_to_rgb: PyAV 18.1.1 hangs forked workers
                if n >= indices.max():
                    break
        last = images[max(images)]
        return [images.get(int(i), last) for i in indices]

    def __getitem__(self, item) -> torch.Tensor:
        epoch, index = item
        ds = self.dataset
        record = ds.records[index]
        rng = np.random.default_rng([ds.seed, epoch, index])
        indices, _ = segment_indices(record.num_frames, ds.num_segments, True, rng)
        images = self._images(ds.root / record.path, indices)
        size = scaled_size(*images[0].size, ds.scale_size)
        y, x, h, w = multi_scale_box(*size, ds.crop_size, rng)
        flip = rng.random() < 0.5
        out = []
        for image in images:
            image = image.resize(size, Image.BILINEAR).crop((x, y, x + w, y + h))
            image = image.resize((ds.crop_size, ds.crop_size), Image.BILINEAR)
            if flip:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            out.append(np.asarray(image))
        # TSM's ToTorchFormatTensor and GroupNormalize: the workers hand over normalised float32
        # (4x the bytes of uint8), normalised channel by channel; s2d-fast hands over uint8 and
        # normalises on the device inside its frame gather.
        clip = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255)
        for frame in clip:
            for channel, mean, std in zip(frame, self.mean, self.std):
                channel.sub_(mean).div_(std)
        return clip


def _time(loader, num_batches: int) -> dict:
    """Videos/s and frames/s over `num_batches` batches of epoch 0 after the first (warm-up) one."""
    loader.sampler.set_epoch(0)  # the same videos in every run, those a warmed cache holds
    it = iter(loader)
    first = next(it)
    frames_per_video = (first["frames"] if isinstance(first, dict) else first).shape[1]
    videos = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(it)
        videos += len(batch["frames"] if isinstance(batch, dict) else batch)
    seconds = time.perf_counter() - start
    return {"videos_per_s": round(videos / seconds, 2), "frames_per_s": round(videos * frames_per_video / seconds, 1),
            "videos": videos, "seconds": round(seconds, 2)}


def bench_data(cfg, num_batches: int = 8, backends: tuple[str, ...] = ("dali", "pyav"), json_path=None,
               repeats: int = 3) -> dict:
    """Time each backend and the baseline on `cfg`'s training list, `repeats` times in interleaved
    order; print and return the medians and their ratios to the baseline's."""
    batch = cfg.TRAIN.BATCH_SIZE
    workers = cfg.DATA.NUM_WORKERS
    dataset = build_dataset(cfg, "train")
    needed = (num_batches + 1) * batch
    if len(dataset) < needed:
        raise ConfigError(f"the training list has {len(dataset)} videos; {num_batches} + 1 batches of {batch} need {needed}")
    loaders = {backend: build_loader(_with(cfg, backend, cache_mb=0), "train") for backend in backends}
    if cfg.DATA.DECODED_CACHE_MB:
        # Later epochs: one untimed pass fills the persistent workers' caches with the videos the
        # timed passes read (the sampler's order stays that of epoch 0).
        loaders["pyav-cached"] = build_loader(_with(cfg, "pyav"), "train")
        _time(loaders["pyav-cached"], num_batches)
    loaders["baseline"] = DataLoader(TsmBaseline(dataset, cfg.DATA.MEAN, cfg.DATA.STD), batch_size=batch,
                                     num_workers=workers, sampler=EpochSampler(len(dataset), True, cfg.RNG_SEED),
                                     drop_last=True)
    runs: dict[str, list[dict]] = {name: [] for name in loaders}
    for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits every loader
        for name, loader in loaders.items():
            runs[name].append(_time(loader, num_batches))
    rows = {}
    for name, timed in runs.items():
        rows[name] = {
            "videos_per_s": float(np.median([t["videos_per_s"] for t in timed])),
            "frames_per_s": float(np.median([t["frames_per_s"] for t in timed])),
            "runs_videos_per_s": [t["videos_per_s"] for t in timed],
        }
        if name != "baseline":
            rows[name]["skipped"] = loaders[name].dataset.notes.num_skipped
    base = rows["baseline"]["videos_per_s"]
    for row in rows.values():
        row["vs_baseline"] = round(row["videos_per_s"] / base, 2)
    result = {"dataset": cfg.DATA.DATASET, "format": dataset.fmt, "root": str(dataset.root), "workers": workers,
              "batch_size": batch, "num_batches": num_batches, "frames_per_video": cfg.DATA.NUM_CANDIDATES,
              "crop_size": cfg.DATA.CROP_SIZE, "repeats": repeats, "rows": rows}
    print(f"{cfg.DATA.DATASET} ({dataset.fmt}), {workers} workers/threads, {cfg.DATA.NUM_CANDIDATES} frames at "
          f"{cfg.DATA.CROP_SIZE}, {num_batches} batches of {batch}, median of {repeats} interleaved runs")
    print(f"{'loader':<10}{'videos/s':>10}{'frames/s':>10}{'skipped':>9}{'x baseline':>12}")
    for name, row in rows.items():
        print(f"{name:<10}{row['videos_per_s']:>10.2f}{row['frames_per_s']:>10.1f}{row.get('skipped', '-'):>9}"
              f"{row['vs_baseline']:>12.2f}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _with(cfg, backend: str, cache_mb: int | None = None):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.BACKEND = backend
    if cache_mb is not None:
        cfg.DATA.DECODED_CACHE_MB = cache_mb
    cfg.freeze()
    return cfg


@click.command(cls=UserErrorCommand, context_settings=PAIRS_SETTINGS)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@click.option("--batches", default=8, show_default=True, help="Timed batches per loader (after one warm-up).")
@click.option("--repeats", default=3, show_default=True, help="Interleaved runs per loader; medians are reported.")
@config_arguments
def bench_data_command(json_path, batches, repeats, config_file, args):
    """Decode and augment the configured training list with each backend and with a TSM-style
    baseline loader (PyAV + PIL in DataLoader workers); print videos/s, frames/s, skips, ratio.

    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train`.
    """
    bench_data(config_from_args(config_file, args), num_batches=batches, json_path=json_path, repeats=repeats)
