"""What a real GPU needs of the kernels, checked on the CPU: no host synchronisation in the
index check, one device per call, NaN kept, frames read in place, launch settings."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from s2d_fast.kernels import gather_frames, gather_frames_reference, sample_details, sample_details_reference
from s2d_fast.kernels._backend import device_guard, triton_interpreted
from s2d_fast.kernels.gather_frames import assert_in_range, block_for, frames_in_place

BACKENDS = ["torch", "triton"] if triton_interpreted() else ["torch"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_device_check_never_waits_for_the_device():
    """The GPU path's range check reads no value back to the host (no `.item()` / `bool()`,
    whose op is `_local_scalar_dense`), so it neither stalls the stream nor breaks CUDA graph
    capture; it compiles into the graph, and still stops a bad index."""
    index = torch.tensor([[0, 3], [2, 1]])
    with _Ops() as ops:
        out = assert_in_range(index, 4)
    assert out.dtype == torch.int64 and torch.equal(out, index)
    assert not [name for name in ops.names if "_local_scalar_dense" in name], ops.names
    torch._dynamo.reset()
    compiled = torch.compile(assert_in_range, fullgraph=True)
    assert torch.equal(compiled(index, 4), index)
    with pytest.raises(RuntimeError, match=r"frame index out of range \[0, 3\)"):
        compiled(index, 3)


def test_tensors_of_one_call_must_share_a_device():
    frames = torch.zeros(1, 4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="gather_frames: index is on meta but frames are on cpu"):
        gather_frames(frames, torch.zeros(1, 2, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="sample_details: centers is on meta but frames are on cpu"):
        sample_details(frames, torch.zeros(1, 2, dtype=torch.long), None, torch.zeros(1, 2, 2, device="meta"),
                       torch.ones(1, 2, 2), 4)
    with pytest.raises(ValueError, match="must be on one device"):
        device_guard(frames, torch.zeros(1, device="meta"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_centre_gives_nan_as_grid_sample_does(backend):
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, 3, 3, 9, 9), dtype=torch.uint8, generator=gen)
    index = torch.tensor([[[0], [2]]])
    centers = torch.tensor([[[4.0, float("nan")], [4.0, 4.0]]])
    strides = torch.tensor([[[1.0, 1.0], [float("nan"), 1.0]]])
    out = sample_details(frames, index, None, centers, strides, 5, mean=MEAN, std=STD, backend=backend)
    ref = sample_details_reference(frames, index, None, centers, strides, 5, mean=MEAN, std=STD)
    assert out[0, 0].isnan().all() and ref[0, 0].isnan().all()
    # A NaN stride: the centre column (offset 0 times NaN is NaN too) and the rest.
    assert torch.equal(out[0, 1].isnan(), ref[0, 1].isnan()) and out[0, 1].isnan().all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_read_in_place_from_a_view(backend):
    """Every other candidate of a clip (a strided view) is gathered where it lies, no copy of
    the clip; a view whose frames are not themselves contiguous is copied once."""
    gen = torch.Generator().manual_seed(1)
    clip = torch.randint(0, 256, (2, 12, 3, 16, 16), dtype=torch.uint8, generator=gen)
    view = clip[:, ::2]
    assert frames_in_place(view) is view
    assert frames_in_place(clip.transpose(3, 4)) is not clip
    index = torch.tensor([[[0, 3], [5, 1]], [[2, 2], [4, 0]]])
    weight = torch.rand(2, 2, 2, generator=gen)
    for frames in (view, clip.transpose(3, 4)[:, 1:]):
        torch.testing.assert_close(gather_frames(frames, index, weight, mean=MEAN, std=STD, backend=backend),
                                   gather_frames_reference(frames, index, weight, mean=MEAN, std=STD))
    centers, strides = torch.rand(2, 2, 2, generator=gen) * 15, torch.rand(2, 2, 2, generator=gen) + 0.5
    torch.testing.assert_close(sample_details(view, index, weight, centers, strides, 6, backend=backend),
                               sample_details_reference(view, index, weight, centers, strides, 6),
                               rtol=1e-4, atol=1e-4)


def test_launch_settings_give_16_byte_loads():
    # 4 warps of 32 threads: 2048 uint8 or 1024 two-byte values are 16 bytes a thread.
    assert block_for(torch.empty(0, dtype=torch.uint8)) * 1 == 128 * 16
    assert block_for(torch.empty(0, dtype=torch.bfloat16)) * 2 == 128 * 16
    assert math.log2(block_for(torch.empty(0))) % 1 == 0
