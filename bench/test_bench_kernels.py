"""pytest-benchmark timings of the kernels at a few model shapes (see bench/kernels.py):
`pytest -n 0 bench/test_bench_kernels.py` (not part of the default test run; `-n 0` runs it in
one process, as pytest-benchmark times nothing under xdist). CUDA if available, else CPU, where
backend None means the torch paths."""

import pytest
import torch

from s2d_fast.kernels import gather_frames, gather_frames_reference, temporal_shift, temporal_shift_reference, topk_frame_index

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# TSM-ResNet-50, batch 8 of 8 frames: layer1 block 0's and layer3's conv1 inputs.
SHIFT_SHAPES = [(64, 64, 56, 56), (64, 1024, 14, 14)]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _timed(benchmark, fn):
    def run():
        out = fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    run()  # warm-up (compiles the Triton kernels)
    return benchmark(run)


def _shift_fwd_bwd(op):
    def run(x, grad):
        xg = x.detach().requires_grad_()
        return torch.autograd.grad(op(xg), xg, grad)

    return run


SHIFTS = {
    "ours": lambda v: temporal_shift(v, 8),
    "reference": lambda v: temporal_shift_reference(v, 8),
}


@pytest.mark.parametrize("impl", ["ours", "reference", "clone"])
@pytest.mark.parametrize("shape", SHIFT_SHAPES, ids=str)
def test_temporal_shift_fwd_bwd(benchmark, shape, impl):
    x = torch.randn(shape, device=DEVICE)
    grad = torch.randn_like(x)
    benchmark.group = f"temporal_shift fwd+bwd {shape}"
    if impl == "clone":  # the floor: each pass makes one new tensor of this size
        _timed(benchmark, lambda: (x.clone(), grad.clone()))
    else:
        (result,) = _timed(benchmark, lambda: _shift_fwd_bwd(SHIFTS[impl])(x, grad))
        assert result.shape == x.shape


@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_gather_frames_topk(benchmark, impl):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    frames = torch.randint(0, 256, (8, 32, 3, 224, 224), dtype=torch.uint8, device=DEVICE, generator=gen)
    index = topk_frame_index(torch.rand(8, 32, device=DEVICE, generator=gen), 8)
    fn = gather_frames if impl == "ours" else gather_frames_reference
    benchmark.group = "gather_frames 8 of 32 u8 224"
    out = _timed(benchmark, lambda: fn(frames, index, mean=MEAN, std=STD))
    assert out.shape == (8, 8, 3, 224, 224)
