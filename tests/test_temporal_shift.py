"""temporal_shift (both backends) against TSM's reference shift: a copy, so compared exactly."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from s2d_fast.kernels import temporal_shift, temporal_shift_bytes, temporal_shift_reference
from s2d_fast.kernels._backend import triton_interpreted
from s2d_fast.kernels.temporal_shift import temporal_shift_impl

# (N*T, n_segment, C, H, W): the general case, T = 1, C < fold_div (fold = 0), odd sizes,
# 1x1 planes (where contiguous and channels_last strides coincide) and a TSM-like width.
SHAPES = [(8, 4, 16, 3, 5), (3, 1, 16, 2, 3), (6, 3, 5, 4, 7), (12, 4, 17, 5, 3), (4, 2, 24, 1, 1)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
FORMATS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("memory_format", FORMATS, ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_reference(shape, dtype, memory_format, backend):
    nt, n_segment, c, h, w = shape
    gen = torch.Generator().manual_seed(hash(shape) % 2**31)
    x = torch.randn(nt, c, h, w, generator=gen).to(dtype).to(memory_format=memory_format)
    grad = torch.randn(nt, c, h, w, generator=gen).to(dtype).to(memory_format=memory_format)

    xr = x.clone().requires_grad_()
    ref = temporal_shift_reference(xr, n_segment)
    (ref_grad,) = torch.autograd.grad(ref, xr, grad)

    xo = x.clone().requires_grad_()
    out = temporal_shift(xo, n_segment, backend=backend)
    (out_grad,) = torch.autograd.grad(out, xo, grad)

    assert out.dtype == dtype and out.shape == x.shape and out.stride() == x.stride()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(out_grad, ref_grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("fold_div", [1, 2, 3])
def test_fold_div(fold_div, backend):
    x = torch.randn(6, 7, 3, 2)
    torch.testing.assert_close(
        temporal_shift(x, 3, fold_div, backend=backend), temporal_shift_reference(x, 3, fold_div), rtol=0, atol=0
    )


def test_shift_values_by_hand():
    # One clip of 3 frames, 2 channels with fold_div 2: channel 0 looks ahead, channel 1 back.
    x = torch.arange(1.0, 7.0).view(3, 2, 1, 1)
    expected = torch.tensor([[3.0, 0.0], [5.0, 2.0], [0.0, 4.0]]).view(3, 2, 1, 1)
    for backend in ("torch", "triton") if triton_interpreted() else ("torch",):
        torch.testing.assert_close(temporal_shift(x, 3, 2, backend=backend), expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_other_layouts_come_back_contiguous(backend):
    x = torch.randn(4, 8, 5, 3).transpose(2, 3)  # neither contiguous nor channels_last
    out = temporal_shift(x, 2, backend=backend)
    assert out.is_contiguous()
    torch.testing.assert_close(out, temporal_shift_reference(x.contiguous(), 2), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_backward_of_broadcast_gradient(backend):
    # `sum().backward()` hands the op an expanded (stride 0) gradient.
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    temporal_shift(x, 2, backend=backend).sum().backward()
    xr = x.detach().clone().requires_grad_()
    temporal_shift_reference(xr, 2).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=0)


class _WriteCounter(TorchDispatchMode):
    """Counts the elements that copy_ and fill_ write."""

    def __init__(self):
        super().__init__()
        self.written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.s2d_fast.temporal_shift.default:
            with self:  # what the op writes inside, not the op as one call
                return temporal_shift_impl(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.copy_, torch.ops.aten.fill_, torch.ops.aten.zero_):
            self.written += args[0].numel()
        if func.overloadpacket in (torch.ops.aten.zeros_like, torch.ops.aten.zeros, torch.ops.aten.new_zeros):
            raise AssertionError(f"the one-pass shift must not zero-fill ({func})")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("memory_format", FORMATS, ids=["contiguous", "channels_last"])
def test_torch_path_writes_every_element_once(memory_format):
    x = torch.randn(8, 16, 4, 4).to(memory_format=memory_format).requires_grad_()
    out = temporal_shift(x, 4, backend="torch")
    grad = torch.randn_like(out)
    with _WriteCounter() as forward:
        temporal_shift(x.detach(), 4, backend="torch")
    with _WriteCounter() as backward:
        torch.autograd.grad(out, x, grad)
    assert forward.written == x.numel()
    assert backward.written == x.numel()


def test_bytes_moved():
    # 2 clips of 4 frames, fold 2: each clip's last frame reads nothing for its 2 look-ahead
    # channels and its first frame nothing for its 2 look-back channels.
    assert temporal_shift_bytes((8, 16, 3, 3), 4, 8, 4) == (2 * 8 * 16 * 9 - 2 * 2 * 2 * 9) * 4


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_arguments(backend):
    with pytest.raises(ValueError, match=r"N\*T = 10 is not divisible by n_segment = 4"):
        temporal_shift(torch.zeros(10, 8, 2, 2), 4, backend=backend)
    with pytest.raises(ValueError, match=r"expects x of shape \(N\*T, C, H, W\), got shape \(8, 8, 2\)"):
        temporal_shift(torch.zeros(8, 8, 2), 4, backend=backend)
    with pytest.raises(ValueError, match="needs n_segment >= 1 and fold_div >= 1, got 0 and 8"):
        temporal_shift(torch.zeros(8, 8, 2, 2), 0, backend=backend)


def test_backend_choice():
    x = torch.randn(4, 8, 2, 2)
    torch.testing.assert_close(temporal_shift(x, 2, backend="auto"), temporal_shift_reference(x, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"backend must be one of \(None, 'auto', 'triton', 'torch'\), got 'cuda'"):
        temporal_shift(x, 2, backend="cuda")


@pytest.mark.parametrize("memory_format", FORMATS, ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_compiled_shift_is_plain_torch_and_exact(shape, dtype, memory_format):
    """Under torch.compile the shift is the traceable form (no custom op in the graph, so that
    Inductor fuses it), forward and backward equal to the reference, strides kept."""
    nt, n_segment, c, h, w = shape
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(nt, c, h, w, generator=gen).to(dtype).to(memory_format=memory_format)
    grad = torch.randn(nt, c, h, w, generator=gen).to(dtype).to(memory_format=memory_format)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(lambda t: temporal_shift(t, n_segment), backend=record, fullgraph=True)
    xo = x.clone().requires_grad_()
    out = compiled(xo)
    (out_grad,) = torch.autograd.grad(out, xo, grad)
    xr = x.clone().requires_grad_()
    ref = temporal_shift_reference(xr, n_segment)
    (ref_grad,) = torch.autograd.grad(ref, xr, grad)
    assert out.is_contiguous(memory_format=memory_format)  # (1x1 planes: both strides fit)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(out_grad, ref_grad, rtol=0, atol=0)
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert targets and not any("s2d_fast" in t for t in targets)


@pytest.mark.parametrize("memory_format", FORMATS, ids=["contiguous", "channels_last"])
def test_inductor_code_of_the_shift_is_exact(memory_format):
    torch._dynamo.reset()
    x = torch.randn(8, 19, 5, 3).to(torch.bfloat16).to(memory_format=memory_format)
    out = torch.compile(lambda t: temporal_shift(t, 4), fullgraph=True)(x)
    assert out.stride() == x.stride()
    torch.testing.assert_close(out, temporal_shift_reference(x, 4), rtol=0, atol=0)
