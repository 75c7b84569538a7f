"""Data, split by job as PySlowFast's `datasets/` is:

- `lists`: TSN list files (`path num_frames label`), errors as `file:line`;
- `frame_indices`: which frames become the T candidates (TSN segments, clips);
- `decoders`: PyAV for video files, PIL for JPEG frame folders, the one frame counter and probe;
- `transforms`: crop boxes, their resize and the flip;
- `dataset`: `VideoDataset`, one list row to one sample, and the bad-sample policy;
- `samplers`: the epoch order, the same in every backend and after a resume;
- `dali`: the DALI backend (GPU decoding; the CPU decoder for VP8/VP9/MJPEG and JPEG);
- `loader`: `build_loader`, the thin builder that puts the above together;
- `datasets`: the registry of datasets (roots, list files, frame names, classes);
- `synthetic`, `prepare`, `commands`: the built-in dataset, dataset preparation and its CLI.
"""

from .dataset import VideoDataset
from .datasets import DATASETS, class_names, resolve_dataset, resolve_num_classes
from .decoders import (
    SEEK_MIN_FRAMES,
    TSN_FRAME_TEMPLATE,
    VideoReadError,
    count_frames,
    decode_video,
    probe_video,
    read_frames,
)
from .frame_indices import clip_indices, segment_indices
from .lists import ListFileError, VideoRecord, read_list_file
from .loader import build_dataset, build_loader, choose_backend

__all__ = [
    "DATASETS",
    "SEEK_MIN_FRAMES",
    "TSN_FRAME_TEMPLATE",
    "ListFileError",
    "VideoDataset",
    "VideoReadError",
    "VideoRecord",
    "build_dataset",
    "build_loader",
    "choose_backend",
    "class_names",
    "clip_indices",
    "count_frames",
    "decode_video",
    "probe_video",
    "read_frames",
    "read_list_file",
    "resolve_dataset",
    "resolve_num_classes",
    "segment_indices",
]
