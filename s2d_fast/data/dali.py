"""The DALI backend: decode (and, on the GPU, crop, resize and flip) in a DALI pipeline.

Videos go through DALI's video decoder with per-sample frame indices (NVDEC, `mixed`, when
CUDA is there; libavcodec on the CPU otherwise, which reads VP8, VP9 and MJPEG only). Frame
folders go through the image decoder (nvJPEG on the GPU), fed each selected frame file once.

On the GPU the crop of each view is a region of interest of one resize (`fn.resize` with
`roi_*`), and the flip and the HWC -> CHW transpose one `crop_mirror_normalize` with uint8
output. On the CPU DALI only decodes — a JPEG frame of a single-crop sample only its crop
(`fn.decoders.image_slice`, ROI decoding) — and the decoded frames, read in place, are cut,
resized and flipped by torch's uint8 antialiased bilinear kernel straight into the batch tensor:
DALI's CPU resampler costs about 4x as much per frame, more than the decoding itself.

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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .dataset import VideoDataset
from .decoders import VideoReadError, frames_if_short, probe_video
from .samplers import EpochSampler
from .transforms import scaled_size, spatial_plan

logger = logging.getLogger(__name__)

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
GPU_CODECS = CPU_CODECS | {"h264", "hevc", "av1", "mpeg4"}


@functools.lru_cache(maxsize=None)
def _folder_size(first_file: str) -> tuple[int, int]:
    with Image.open(first_file) as image:  # reads the header only
        return image.size


@dataclass
class Prepared:
    """One sample ready for the pipeline: encoded bytes and where its views come from."""

    index: int
    data: list[np.ndarray]  # one buffer per video, or one per distinct frame file
    indices: np.ndarray  # frame indices, within what the file has
    frame_of: np.ndarray  # frame files: which buffer of `data` each of the indices is
    n_valid: int
    rois: list[tuple[np.ndarray, np.ndarray]]  # relative (y, x) start and end, per crop
    flip: bool
    boxes: tuple[tuple[int, int, int, int], ...]  # (y, x, h, w) per crop, in the scaled frame
    scaled: tuple[int, int]  # (width, height) of the scaled frame
    window: tuple[np.ndarray, np.ndarray]  # (y, x) start and size of what the decoder cuts out
    sliced: bool  # the decoder outputs the one crop box itself
    notes: str  # what the sample noted (JSON), as VideoDataset's samples carry it


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
        self._cut_pool = ThreadPoolExecutor(num_threads)  # CPU: the torch half of each batch
        self._routed: set[str] = set()

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        items = list(self.sampler)
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if not batches:
            return
        # Batch k + 1 decodes in a thread of its own while the caller works on batch k (DALI and
        # torch both run without the GIL), and the files of batch k + 2 are read meanwhile.
        with ThreadPoolExecutor(1) as decoder:
            files = self._submit(batches[1]) if len(batches) > 1 else None
            pending = decoder.submit(self._run_batch, batches[0], self._submit(batches[0]))
            for k in range(len(batches)):
                batch = pending.result()
                if k + 1 < len(batches):
                    pending = decoder.submit(self._run_batch, batches[k + 1], files)
                    files = self._submit(batches[k + 2]) if k + 2 < len(batches) else None
                yield batch

    # --- per sample, in the thread pool ------------------------------------------------------

    def _submit(self, batch):
        return [self._pool.submit(self._prepare, epoch, index) for epoch, index in batch]

    def _prepare(self, epoch: int, index: int) -> Prepared | None:
        """The sample's plan and bytes, or None for the PyAV path (codec, rotation, or a read
        error that PyAV will report under the bad-input policy)."""
        ds = self.dataset
        path = str(ds.root / ds.records[index].path)
        rng = np.random.default_rng([ds.seed, epoch, index])  # drawn from in the order VideoDataset draws
        notes: list[dict] = []
        frame_of = np.zeros(0, np.int64)
        try:
            num_frames = ds.frame_count(index, notes)
            indices, n_valid = ds.temporal_plan(num_frames, rng)
            if ds.fmt == "frames":
                data, frame_of, width, height, available = self._read_frames(path, indices)
                n_valid = min(n_valid, available or n_valid)
            else:
                info = probe_video(path)
                if info.rotation:
                    self._route_once("DALI does not turn rotated videos upright: those files go through PyAV")
                    return None
                if info.codec not in self.codecs:
                    where = "on this GPU" if self.use_gpu else "without a GPU"
                    self._route_once(f"DALI cannot decode {info.codec} {where}: those files go through PyAV")
                    return None
                data, width, height = [np.fromfile(path, np.uint8)], info.width, info.height
        except (VideoReadError, OSError):
            return None
        w, h = scaled_size(width, height, ds.scale_size)
        boxes, flip = spatial_plan(w, h, ds.crop_size, ds.train, ds.flip, ds.num_crops, rng)
        rois = [(np.array([y / h, x / w], np.float32), np.array([(y + bh) / h, (x + bw) / w], np.float32))
                for y, x, bh, bw in boxes]
        # A frame already at the scaled size with one crop: decode only the crop's pixels.
        sliced = ds.fmt == "frames" and len(boxes) == 1 and (width, height) == (w, h)
        window = ((np.array(boxes[0][:2], np.int32), np.array(boxes[0][2:], np.int32)) if sliced
                  else (np.zeros(2, np.int32), np.array([height, width], np.int32)))
        return Prepared(index, data, indices, frame_of, n_valid, rois, flip, boxes, (w, h), window, sliced,
                        json.dumps(notes))

    def _read_frames(self, folder: str, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, int, int, int | None]:
        template = self.dataset.frame_template
        available = frames_if_short(folder, template, int(indices.max()))  # fewer than listed: clamp
        if available is not None:
            indices = np.minimum(indices, available - 1)
        width, height = _folder_size(os.path.join(folder, template.format(1)))
        wanted, frame_of = np.unique(indices, return_inverse=True)
        data = [np.fromfile(os.path.join(folder, template.format(int(i) + 1)), np.uint8) for i in wanted]  # each once
        return data, frame_of.reshape(-1), width, height, available

    def _route_once(self, why: str) -> None:
        if why not in self._routed:
            self._routed.add(why)
            logger.info("%s", why)

    # --- per batch --------------------------------------------------------------------------

    def _run_batch(self, batch, futures) -> dict:
        ds = self.dataset
        prepared = [f.result() for f in futures]
        c = ds.crop_size
        frames = torch.empty((len(batch), ds.num_views, ds.num_segments, 3, c, c), dtype=torch.uint8,
                             device=self.device)
        ready = [(position, p) for position, p in enumerate(prepared) if p is not None]
        done: set[int] = set()
        if ready:
            try:
                self._decode(ready, frames)
                done.update(position for position, _ in ready)
            except RuntimeError:
                # One bad file fails the whole DALI batch: retry one by one, PyAV for what fails.
                for item in ready:
                    try:
                        self._decode([item], frames)
                        done.add(item[0])
                    except RuntimeError:
                        pass
        samples = []
        fallback = {}
        for position, ((epoch, index), p) in enumerate(zip(batch, prepared)):
            if position in done:
                samples.append({**ds.finish(ds.records[index], index, frames[position], p.n_valid, p.flip),
                                "notes": p.notes})
            else:
                fallback[position] = self._pool.submit(ds.__getitem__, (epoch, index))
                samples.append(None)
        for position, future in fallback.items():
            samples[position] = sample = future.result()
            frames[position].copy_(sample["frames"].reshape(frames.shape[1:]))
        return self._collate(samples, frames[:, 0] if ds.num_views == 1 else frames)

    def _collate(self, samples: list[dict], frames: torch.Tensor) -> dict:
        for sample in samples:
            self.dataset.notes.note_all(sample.pop("notes", "[]"), replaced=self.dataset.train)
        return {
            "frames": frames,
            "n_valid": torch.tensor([s["n_valid"] for s in samples], dtype=torch.int64),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
            "valid": torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
        }

    def _feed(self, ready: list[tuple[int, Prepared]]) -> list[int]:
        """Feed the pipeline with `ready`'s encoded data and plans; the pipeline samples of each
        (one per video, or one per distinct frame file)."""
        pipe = self._pipeline()
        plans = [p for _, p in ready]
        per = [len(p.data) for p in plans]
        pipe.feed_input("encoded", [d for p in plans for d in p.data])
        if self.dataset.fmt != "frames":
            pipe.feed_input("indices", [p.indices.astype(np.int32) for p in plans])

        def repeat(values):
            return [v for n, v in zip(per, values) for _ in range(n)]

        if self.use_gpu:
            for k in range(self.dataset.num_crops):
                pipe.feed_input(f"roi_start{k}", repeat([p.rois[k][0] for p in plans]))
                pipe.feed_input(f"roi_end{k}", repeat([p.rois[k][1] for p in plans]))
            pipe.feed_input("flip", repeat([np.array(int(p.flip), np.int32) for p in plans]))
        elif self.dataset.fmt == "frames":
            pipe.feed_input("anchor", repeat([p.window[0] for p in plans]))
            pipe.feed_input("shape", repeat([p.window[1] for p in plans]))
        return per

    def _decode(self, ready: list[tuple[int, Prepared]], frames: torch.Tensor) -> None:
        """Decode `ready` into its rows of `frames` `(B, V, T, 3, c, c)`."""
        per = self._feed(ready)
        outputs = self._pipe.run()
        starts = np.concatenate([[0], np.cumsum(per)[:-1]]).tolist()
        if not self.use_gpu:
            decoded = outputs[0]  # read in place: done with before the next run
            tasks = [self._cut_pool.submit(self._cut, decoded, start, n, p, frames[position])
                     for (position, p), start, n in zip(ready, starts, per)]
            for task in tasks:
                task.result()
            return
        ds = self.dataset
        crops = [self._to_torch(out) for out in outputs]  # each (N, [F,] 3, c, c)
        for (position, p), start in zip(ready, starts):
            dest = frames[position].view(ds.num_clips, ds.num_crops, *frames.shape[2:])
            for k, crop in enumerate(crops):
                if ds.fmt == "frames":
                    view = crop[start:start + len(p.data)][torch.from_numpy(p.frame_of).to(crop.device)]
                else:
                    view = crop[start]
                dest[:, k].copy_(view.unflatten(0, (ds.num_clips, ds.num_segments)))

    def _cut(self, decoded, start: int, n: int, p: Prepared, dest: torch.Tensor) -> None:
        """One sample's decoded HWC frames (in DALI's output) -> its `(V, T, 3, c, c)` views:
        cut out each box, resize it (uint8, antialiased bilinear), flip, transpose to CHW."""
        ds = self.dataset
        c = ds.crop_size
        if ds.fmt == "frames":
            parts = [torch.from_dlpack(decoded[start + i]) for i in range(n)]
            source = parts[0][None] if n == 1 else torch.stack(parts)
        else:
            source = torch.from_dlpack(decoded[start])
        x = source.permute(0, 3, 1, 2)  # (N, 3, H, W), channels-last in memory
        if not p.sliced and (x.shape[-1], x.shape[-2]) != p.scaled:
            x = _resize(x, (p.scaled[1], p.scaled[0]))  # as PyAV does: scale, then cut the boxes
        dest = dest.view(ds.num_clips, ds.num_crops, *dest.shape[1:])
        order = None if ds.fmt != "frames" or _is_identity(p.frame_of) else torch.from_numpy(p.frame_of)
        for k, (y, x0, h, w) in enumerate(p.boxes):
            view = x if p.sliced else x[:, :, y:y + h, x0:x0 + w]
            if view.shape[-2:] != (c, c):
                view = _resize(view, (c, c))
            if p.flip:
                view = view.flip(-1)
            if order is not None:
                view = view[order]
            dest[:, k].copy_(view.unflatten(0, (ds.num_clips, ds.num_segments)))

    def _to_torch(self, tensor_list) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray  # device-to-device copy, no host round trip

        dense = tensor_list.as_tensor()
        out = torch.empty(dense.shape(), dtype=torch.uint8, device=self.device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))
        return out

    def _pipeline(self):
        if self._pipe is None:
            self._pipe = build_pipeline(self.dataset, self.batch_size, self.num_threads, self.use_gpu)
        return self._pipe


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 `(N, 3, h, w)` -> `(N, 3, *size)`: bilinear, antialiased where it downsizes (torch's
    uint8 kernel, on channels-last memory)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _is_identity(order: np.ndarray) -> bool:
    return bool(np.array_equal(order, np.arange(len(order))))


def build_pipeline(dataset: VideoDataset, batch_size: int, num_threads: int, use_gpu: bool):
    """The DALI pipeline for `dataset`'s format: encoded input in; on the GPU one output per crop
    (resized, flipped, CHW), on the CPU the decoded HWC frames (the frame files' windows)."""
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
        if frames_format and not use_gpu:
            anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
            return fn.decoders.image_slice(encoded, anchor, shape, axis_names="HW", output_type=types.RGB)
        if frames_format:
            frames = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
        else:
            indices = fn.external_source(name="indices", dtype=types.INT32, ndim=1)
            frames = fn.decoders.video(encoded, frames=indices, device="mixed" if use_gpu else "cpu")
            if not use_gpu:
                return frames
        flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
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
