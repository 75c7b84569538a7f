"""The DALI backend: decode, crop, resize and flip in a DALI pipeline.

Videos go through DALI's video decoder with per-sample frame indices (NVDEC, `mixed`, when
CUDA is there; libavcodec on the CPU otherwise, which reads VP8, VP9 and MJPEG only). Frame
folders go through the image decoder (nvJPEG on the GPU), fed only the selected frames' files.
The crop of each view is a region of interest of one resize (`fn.resize` with `roi_*`), and the
flip and the HWC -> CHW transpose one `crop_mirror_normalize` with uint8 output.

Python keeps what must match the PyAV backend exactly: the sampler's order, the per-sample plan
(`VideoDataset.temporal_plan` and `transforms.spatial_plan`, seeded by (seed, epoch, index)),
and the bad-input policy. Files are read by a thread pool (one batch ahead of the pipeline).
Whatever DALI cannot take — a codec its CPU decoder lacks, a file it fails on — goes through
`VideoDataset` (PyAV) for that sample alone, which also applies DATA.ON_BAD_SAMPLE.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from s2d_fast.data.loader import EpochSampler, VideoDataset, VideoReadError, check_file
from s2d_fast.data.transforms import scaled_size, spatial_plan

logger = logging.getLogger(__name__)

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
GPU_CODECS = CPU_CODECS | {"h264", "hevc", "av1", "mpeg4"}


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    num_frames: int


@functools.lru_cache(maxsize=None)
def probe_video(path: str) -> VideoInfo:
    """Codec, size and frame count (packets, no decoding) of a video file; cached per path."""
    check_file(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size)
            info = VideoInfo(stream.codec_context.name, stream.width, stream.height, count)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError(f"{path}: cannot decode: {err}") from err
    if info.num_frames == 0 or not info.width:
        raise VideoReadError(f"{path}: no frames could be decoded")
    return info


@functools.lru_cache(maxsize=None)
def _folder_size(first_file: str) -> tuple[int, int]:
    with Image.open(first_file) as image:  # reads the header only
        return image.size


@dataclass
class Prepared:
    """One sample ready for the pipeline: encoded bytes and where its views come from."""

    index: int
    data: list[np.ndarray]  # one buffer per video, or one per frame file
    indices: np.ndarray  # frame indices, clamped to what the file has
    n_valid: int
    rois: list[tuple[np.ndarray, np.ndarray]]  # relative (y, x) start and end, per crop
    flip: bool


class DaliLoader:
    """Batches of `VideoDataset` samples decoded by DALI: the `build_loader` interface
    (`dataset`, `sampler`, `batch_size`, `len()`, dicts of tensors) without a DataLoader."""

    def __init__(self, dataset: VideoDataset, sampler: EpochSampler, batch_size: int, drop_last: bool,
                 num_threads: int, use_gpu: bool):
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_threads = num_threads
        self.use_gpu = use_gpu
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
        self.codecs = GPU_CODECS if use_gpu else CPU_CODECS
        self._pipe = None
        self._pool = ThreadPoolExecutor(num_threads)
        self._routed: set[str] = set()

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        items = list(self.sampler)
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        ahead = self._submit(batches[0]) if batches else None
        for k in range(len(batches)):
            current = ahead
            ahead = self._submit(batches[k + 1]) if k + 1 < len(batches) else None
            yield self._run_batch(batches[k], current)

    # --- per sample, in the thread pool ------------------------------------------------------

    def _submit(self, batch):
        return [self._pool.submit(self._prepare, epoch, index) for epoch, index in batch]

    def _prepare(self, epoch: int, index: int) -> Prepared | None:
        """The sample's plan and bytes, or None for the PyAV path (codec, or a read error that
        PyAV will report under the bad-input policy)."""
        ds = self.dataset
        record = ds.records[index]
        path = str(ds.root / record.path)
        rng = np.random.default_rng([ds.seed, epoch, index])
        indices, n_valid = ds.temporal_plan(record, rng)
        try:
            if ds.fmt == "frames":
                data, available, width, height = self._read_frames(path, indices)
            else:
                info = probe_video(path)
                if info.codec not in self.codecs:
                    self._route_once(info.codec)
                    return None
                data, available, width, height = [np.fromfile(path, np.uint8)], info.num_frames, info.width, info.height
        except (VideoReadError, OSError):
            return None
        if indices.max() >= available:  # fewer frames than listed: the last one repeats
            indices = np.minimum(indices, available - 1)
            n_valid = min(n_valid, available)
        w, h = scaled_size(width, height, ds.scale_size)
        boxes, flip = spatial_plan(w, h, ds.crop_size, ds.train, ds.flip, ds.num_crops, rng)
        rois = [(np.array([y / h, x / w], np.float32), np.array([(y + bh) / h, (x + bw) / w], np.float32))
                for y, x, bh, bw in boxes]
        return Prepared(index, data, indices, n_valid, rois, flip)

    def _read_frames(self, folder: str, indices: np.ndarray) -> tuple[list[np.ndarray], int, int, int]:
        template = self.dataset.frame_template
        files = [os.path.join(folder, template.format(int(i) + 1)) for i in range(int(indices.max()) + 1)]
        available = len(files)
        if not os.path.isfile(files[-1]):
            prefix, _, rest = template.partition("{")
            suffix = rest.partition("}")[2]
            available = sum(1 for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(suffix))
            if available == 0:
                raise VideoReadError(f"{folder}: no frames named like {template.format(1)}")
        width, height = _folder_size(files[0])
        data = [np.fromfile(files[min(int(i), available - 1)], np.uint8) for i in indices]
        return data, available, width, height

    def _route_once(self, codec: str) -> None:
        if codec not in self._routed:
            self._routed.add(codec)
            where = "on this GPU" if self.use_gpu else "without a GPU"
            logger.info("DALI cannot decode %s %s: those files go through PyAV", codec, where)

    # --- per batch --------------------------------------------------------------------------

    def _run_batch(self, batch, futures) -> dict:
        prepared = [f.result() for f in futures]
        ready = [p for p in prepared if p is not None]
        views: dict[int, torch.Tensor] = {}
        if ready:
            try:
                views.update(zip((p.index for p in ready), self._decode(ready)))
            except RuntimeError:
                # One bad file fails the whole DALI batch: retry one by one, PyAV for what fails.
                for p in ready:
                    try:
                        views[p.index] = self._decode([p])[0]
                    except RuntimeError:
                        pass
        samples = []
        fallback = {}
        for (epoch, index), p in zip(batch, prepared):
            if p is not None and index in views:
                samples.append(self.dataset.finish(self.dataset.records[index], index, views[index], p.n_valid, p.flip))
            else:
                fallback[len(samples)] = self._pool.submit(self.dataset.__getitem__, (epoch, index))
                samples.append(None)
        for position, future in fallback.items():
            samples[position] = future.result()
        return self._collate(samples)

    def _collate(self, samples: list[dict]) -> dict:
        for sample in samples:
            for bad in json.loads(sample.pop("bad", "[]")):
                self.dataset.bad.note(bad["path"], bad["reason"], replaced=self.dataset.train)
        return {
            "frames": torch.stack([s["frames"].to(self.device) for s in samples]),
            "n_valid": torch.tensor([s["n_valid"] for s in samples], dtype=torch.int64),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
            "valid": torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
        }

    def _decode(self, ready: list[Prepared]) -> list[torch.Tensor]:
        """`(V, T, 3, c, c)` uint8 views of each prepared sample, through the pipeline."""
        ds = self.dataset
        frames_format = ds.fmt == "frames"
        pipe = self._pipeline()
        if frames_format:  # one pipeline sample per frame file
            per = [len(p.data) for p in ready]
            pipe.feed_input("encoded", [d for p in ready for d in p.data])
            repeat = lambda values: [v for p, v in zip(ready, values) for _ in range(len(p.data))]  # noqa: E731
        else:
            pipe.feed_input("encoded", [p.data[0] for p in ready])
            pipe.feed_input("indices", [p.indices.astype(np.int32) for p in ready])
            repeat = lambda values: list(values)  # noqa: E731
        for k in range(ds.num_crops):
            pipe.feed_input(f"roi_start{k}", repeat([p.rois[k][0] for p in ready]))
            pipe.feed_input(f"roi_end{k}", repeat([p.rois[k][1] for p in ready]))
        pipe.feed_input("flip", repeat([np.array(int(p.flip), np.int32) for p in ready]))
        crops = [self._to_torch(out) for out in pipe.run()]  # each (N, [F,] 3, c, c)
        if frames_format:
            crops = [c.split(per) for c in crops]
        else:
            crops = [list(c) for c in crops]
        out = []
        for i in range(len(ready)):
            v = torch.stack([c[i] for c in crops])  # (crops, clips * T, 3, c, c)
            v = v.unflatten(1, (ds.num_clips, ds.num_segments)).transpose(0, 1).flatten(0, 1)
            out.append(v)
        return out

    def _to_torch(self, tensor_list) -> torch.Tensor:
        dense = tensor_list.as_tensor()
        if not self.use_gpu:
            return torch.from_numpy(np.array(dense))
        from nvidia.dali.plugin.pytorch import feed_ndarray  # device-to-device copy, no host round trip

        out = torch.empty(dense.shape(), dtype=torch.uint8, device=self.device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))
        return out

    def _pipeline(self):
        if self._pipe is None:
            self._pipe = build_pipeline(self.dataset, self.batch_size, self.num_threads, self.use_gpu)
        return self._pipe


def build_pipeline(dataset: VideoDataset, batch_size: int, num_threads: int, use_gpu: bool):
    """The DALI pipeline for `dataset`'s format: encoded input in, one output per crop."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    frames_format = dataset.fmt == "frames"
    per_sample = dataset.num_clips * dataset.num_segments if frames_format else 1
    size = [dataset.crop_size, dataset.crop_size]

    @pipeline_def(batch_size=batch_size * per_sample, num_threads=num_threads,
                  device_id=torch.cuda.current_device() if use_gpu else None,
                  exec_dynamic=True, prefetch_queue_depth=1)
    def pipe():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
        if frames_format:
            frames = fn.decoders.image(encoded, device="mixed" if use_gpu else "cpu", output_type=types.RGB)
        else:
            indices = fn.external_source(name="indices", dtype=types.INT32, ndim=1)
            frames = fn.decoders.video(encoded, frames=indices, device="mixed" if use_gpu else "cpu")
        outputs = []
        for k in range(dataset.num_crops):
            start = fn.external_source(name=f"roi_start{k}", dtype=types.FLOAT, ndim=1)
            end = fn.external_source(name=f"roi_end{k}", dtype=types.FLOAT, ndim=1)
            view = fn.resize(frames, roi_start=start, roi_end=end, roi_relative=True, size=size,
                             interp_type=types.INTERP_LINEAR, antialias=True)
            outputs.append(fn.crop_mirror_normalize(view, dtype=types.UINT8, output_layout="FCHW" if not frames_format
                                                    else "CHW", mirror=flip, mean=0.0, std=1.0))
        return tuple(outputs)

    built = pipe()
    built.build()
    return built
