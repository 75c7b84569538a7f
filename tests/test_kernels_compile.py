"""A small model using the kernels compiles with torch.compile(fullgraph=True) on CPU and
matches eager, forward and backward. The Triton path compiles too: its ops are opaque custom
ops with fake implementations, so Inductor calls them (here: the interpreter on CPU tensors)."""

import pytest
import torch
from torch import nn

from s2d_fast.kernels import gather_frames, sample_details, temporal_shift, topk_frame_index
from s2d_fast.kernels._backend import triton_interpreted

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class TinyDetailNet(nn.Module):
    """Pick the K best-scored frames, mix, normalise, conv, shift, conv, pool."""

    def __init__(self, k: int, backend: str):
        super().__init__()
        self.k, self.backend = k, backend
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.register_buffer("mean", torch.tensor(MEAN))
        self.register_buffer("std", torch.tensor(STD))

    def forward(self, frames: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        index = topk_frame_index(scores, self.k)
        weight = torch.softmax(scores, dim=1).gather(1, index) * self.k
        x = gather_frames(frames, index, weight, mean=self.mean, std=self.std, backend=self.backend)
        x = self.conv1(x.flatten(0, 1))
        x = temporal_shift(x, self.k, fold_div=4, backend=self.backend)
        return self.conv2(x).mean(dim=(2, 3))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_compiled_model_matches_eager(backend):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 6, 3, 8, 8), generator=gen, dtype=torch.uint8)
    scores = torch.randn(2, 6, generator=gen)
    model = TinyDetailNet(k=4, backend=backend)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)

    def run(fn):
        s = scores.clone().requires_grad_()
        out = fn(frames, s)
        grads = torch.autograd.grad(out.square().sum(), (s, *model.parameters()))
        return out, grads

    out, grads = run(model)
    out_c, grads_c = run(compiled)
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-5)
    for g, g_c in zip(grads, grads_c):
        torch.testing.assert_close(g_c, g, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not triton_interpreted(), reason="the Triton kernel on CPU tensors needs the interpreter")
def test_compiled_sample_details_matches_eager():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (1, 4, 3, 9, 9), generator=gen, dtype=torch.uint8)
    index, weight = torch.randint(0, 4, (1, 2, 2), generator=gen), torch.rand(1, 2, 2, generator=gen)
    centers, strides = torch.rand(1, 2, 2, generator=gen) * 8, torch.rand(1, 2, 2, generator=gen) + 0.5

    def fn(frames, index, weight, centers, strides):
        return sample_details(frames, index, weight, centers, strides, 5, mean=MEAN, std=STD, backend="triton")

    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(frames, index, weight, centers, strides), fn(frames, index, weight, centers, strides))


@pytest.mark.parametrize("use_triton", [False, True], ids=["torch", "triton"])
def test_custom_op_registrations_pass_opcheck(use_triton):
    # Schema, fake (meta) implementation, autograd registration and AOT dispatch of every op,
    # through both of its implementations.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 8, 3, 3, generator=gen, requires_grad=True)
    torch.library.opcheck(torch.ops.s2d_fast.temporal_shift, (x, 2, 2, False, use_triton))
    torch.library.opcheck(torch.ops.s2d_fast.temporal_shift,
                          (x.detach().to(memory_format=torch.channels_last), 2, 2, True, use_triton))
    frames = torch.randn(2, 3, 3, 4, 4, generator=gen, requires_grad=True)
    index = torch.randint(0, 3, (2, 2, 2), generator=gen)
    weight = torch.rand(2, 2, 2, generator=gen, requires_grad=True)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    torch.library.opcheck(torch.ops.s2d_fast.gather_frames, (frames, index, weight, mean, std, torch.float32, use_triton))
    torch.library.opcheck(torch.ops.s2d_fast.gather_frames,
                          (frames.detach().byte(), index, None, None, None, torch.float16, use_triton))
    torch.library.opcheck(torch.ops.s2d_fast.checked_index, (index, 3))
    centers, strides = torch.rand(2, 2, 2, generator=gen) * 3, torch.rand(2, 2, 2, generator=gen) + 0.5
    torch.library.opcheck(
        torch.ops.s2d_fast.sample_details,
        (frames.detach(), index, weight.detach(), centers, strides, 3, mean, std, torch.float32, use_triton),
    )
