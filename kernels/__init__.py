"""Custom kernels of s2d-fast: each op is one `torch.library` custom op holding a Triton kernel
and a plain torch path (so that tracers and `torch.compile(fullgraph=True)` see it whole), with
a `*_reference` it is tested and benchmarked against. See kernels/README.md."""

from ._backend import resolve_backend
from .gather_frames import (
    checked_index,
    gather_frames,
    gather_frames_bytes,
    gather_frames_reference,
    topk_frame_index,
)
from .sample_details import sample_details, sample_details_bytes, sample_details_reference
from .temporal_shift import temporal_shift, temporal_shift_bytes, temporal_shift_reference

__all__ = [
    "checked_index",
    "gather_frames",
    "gather_frames_bytes",
    "gather_frames_reference",
    "resolve_backend",
    "sample_details",
    "sample_details_bytes",
    "sample_details_reference",
    "temporal_shift",
    "temporal_shift_bytes",
    "temporal_shift_reference",
    "topk_frame_index",
]
