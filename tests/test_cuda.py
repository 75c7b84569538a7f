"""The kernels compiled for a real GPU (not Triton's interpreter), against the references, at
the shapes the models use; the model compiled on CUDA; DALI's GPU decoder; NCCL. Skipped, with
the reason, where CUDA is missing or Triton runs interpreted (`bench/gpu_check.py` runs this
module in a process of its own on a GPU machine)."""

import os

import pytest
import torch

from s2d_fast.kernels import (
    gather_frames,
    gather_frames_reference,
    sample_details,
    sample_details_reference,
    temporal_shift,
    temporal_shift_reference,
)
from s2d_fast.kernels._backend import TRITON_AVAILABLE, triton_interpreted

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs Triton"),
    pytest.mark.skipif(triton_interpreted(), reason="TRITON_INTERPRET=1 would interpret the kernels; "
                                                    "run with TRITON_INTERPRET=0 (bench/gpu_check.py does)"),
]
CUDA = torch.device("cuda")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# TSM-ResNet-50's shift inputs (batch 2, 8 frames) and odd ones: 7x7 and 14x14 planes, C = 64
# channels_last, C not a multiple of the fold, T = 1.
SHIFT_CASES = [(16, 8, 64, 56, 56), (16, 8, 256, 56, 56), (16, 8, 512, 28, 28), (16, 8, 1024, 14, 14),
               (16, 8, 2048, 7, 7), (6, 3, 37, 5, 7), (4, 1, 16, 3, 3)]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", SHIFT_CASES, ids=str)
def test_shift_on_the_gpu_matches_the_reference(case, dtype, memory_format):
    nt, t, c, h, w = case
    x = torch.randn(nt, c, h, w, device=CUDA).to(dtype).to(memory_format=memory_format).requires_grad_()
    grad = torch.randn_like(x)
    out = temporal_shift(x, t, backend="triton")
    (g,) = torch.autograd.grad(out, x, grad)
    xr = x.detach().clone().requires_grad_()
    ref = temporal_shift_reference(xr, t)
    (g_ref,) = torch.autograd.grad(ref, xr, grad)
    assert out.stride() == x.stride()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=0)


@pytest.mark.parametrize("taps", [1, 7])
def test_gather_on_the_gpu_matches_the_reference(taps):
    """The model's calls: 8 of 32 candidates (taps=1), and the sampler's 7-tap weighted mix of
    16 detail frames from 150 candidates."""
    gen = torch.Generator(device=CUDA).manual_seed(0)
    b, t, k = 2, (32 if taps == 1 else 150), (8 if taps == 1 else 16)
    frames = torch.randint(0, 256, (b, t, 3, 224, 224), dtype=torch.uint8, device=CUDA, generator=gen)
    index = torch.randint(0, t, (b, k, taps), device=CUDA, generator=gen)
    weight = torch.rand(b, k, taps, device=CUDA, generator=gen)
    out = gather_frames(frames, index, weight, mean=MEAN, std=STD, backend="triton")
    torch.testing.assert_close(out, gather_frames_reference(frames, index, weight, mean=MEAN, std=STD),
                               rtol=1e-5, atol=1e-5)
    floats = frames.float().requires_grad_()
    w = weight.clone().requires_grad_()
    got = torch.autograd.grad(gather_frames(floats, index, w, backend="triton").square().sum(), (floats, w))
    want = torch.autograd.grad(gather_frames_reference(floats, index, w).square().sum(), (floats, w))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-3)


def test_sample_details_on_the_gpu_matches_the_reference():
    """16 detail frames of 112 from 150 candidates of 224, 7 taps, zoomed and off the edge."""
    gen = torch.Generator(device=CUDA).manual_seed(1)
    b, t, k = 2, 150, 16
    frames = torch.randint(0, 256, (b, t, 3, 224, 224), dtype=torch.uint8, device=CUDA, generator=gen)
    index = torch.randint(0, t, (b, k, 7), device=CUDA, generator=gen)
    weight = torch.rand(b, k, 7, device=CUDA, generator=gen)
    centers = torch.rand(b, k, 2, device=CUDA, generator=gen) * 260 - 18
    strides = torch.rand(b, k, 2, device=CUDA, generator=gen) * 2 + 0.3
    args = (frames, index, weight, centers, strides, 112)
    torch.testing.assert_close(sample_details(*args, mean=MEAN, std=STD, backend="triton"),
                               sample_details_reference(*args, mean=MEAN, std=STD), rtol=1e-4, atol=1e-4)


def test_the_model_compiles_on_the_gpu_and_matches_eager():
    from s2d_fast.config import load_config
    from s2d_fast.models import build_model

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = load_config(None, ["DATA.NUM_CANDIDATES", "16", "DATA.SCALE_SIZE", "128", "DATA.CROP_SIZE", "112",
                             "SNET.INPUT_SIZE", "64", "DNET.ARCH", "resnet18", "DNET.INPUT_SIZE", "112"])
    model = build_model(cfg, 10, pretrained=False).to(CUDA).eval()
    model.set_stage("sampling")
    frames = torch.randint(0, 256, (2, 16, 3, 112, 112), dtype=torch.uint8, device=CUDA)
    n_valid = torch.tensor([16, 11], device=CUDA)
    with torch.no_grad():
        eager = model(frames, n_valid)
        compiled = torch.compile(model, fullgraph=True)(frames, n_valid)
    torch.testing.assert_close(compiled["log_prob"], eager["log_prob"], rtol=1e-3, atol=1e-3)


def test_dali_decodes_on_the_gpu_as_on_the_cpu(tiny_dataset):
    pytest.importorskip("nvidia.dali")
    from s2d_fast.config import load_config
    from s2d_fast.data.loader import build_loader

    base = ["DATA.ROOT", str(tiny_dataset), "DATA.NUM_CANDIDATES", "8", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE",
            "64", "DATA.NUM_WORKERS", "1", "TEST.BATCH_SIZE", "4", "DATA.BACKEND", "dali"]
    gpu = next(iter(build_loader(load_config(None, base + ["NUM_GPUS", "1"]), "val")))
    cpu = next(iter(build_loader(load_config(None, base + ["NUM_GPUS", "0"]), "val")))
    assert gpu["frames"].is_cuda and torch.equal(gpu["index"], cpu["index"])
    # nvdec and libavcodec decode VP9 alike up to rounding; the resamplers differ by a level or two.
    diff = (gpu["frames"].cpu().float() - cpu["frames"].float()).abs()
    assert diff.mean() < 2.0 and diff.max() <= 40


def test_nccl_in_one_process(tmp_path):
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1, init_method=f"file://{tmp_path}/rendezvous")
    try:
        x = torch.ones(4, device=CUDA)
        dist.all_reduce(x)
        assert x.tolist() == [1.0] * 4
    finally:
        dist.destroy_process_group()
