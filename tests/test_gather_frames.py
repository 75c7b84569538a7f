"""gather_frames (both backends) and topk_frame_index against their plain torch references.

Tolerances: a pure copy (float frames, one tap, no weight, no normalisation) must be exact;
otherwise the kernel and the reference sum in a different order (and scale uint8 before or
after the sum), so float32 results agree to a few ulps: rtol=1e-5, atol=1e-5 (values are
O(1..1000)); outputs stored in float16/bfloat16 agree to one unit of their last place.
"""

import pytest
import torch

from s2d_fast.kernels import gather_frames, gather_frames_bytes, gather_frames_reference, topk_frame_index

BACKENDS = ["torch", "triton"]
DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _frames(shape, dtype, gen):
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return torch.randn(shape, generator=gen).to(dtype)


# (B, T, C, H, W, K, P): P None means a (B, K) index; K = T; T = 1; K*P >= T takes the torch
# path's mixing-matrix branch, K*P < T its gather branch.
CASES = [
    (2, 5, 3, 7, 9, 3, None),
    (1, 4, 3, 5, 5, 4, 1),
    (2, 1, 3, 3, 3, 2, 2),
    (2, 6, 3, 4, 3, 2, 3),
    (1, 9, 2, 3, 5, 2, 4),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalise", [False, True], ids=["raw", "normalised"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case, dtype, normalise, backend):
    b, t, c, h, w, k, p = case
    gen = torch.Generator().manual_seed(t * 100 + k)
    frames = _frames((b, t, c, h, w), dtype, gen)
    index_shape = (b, k) if p is None else (b, k, p)
    index = torch.randint(0, t, index_shape, generator=gen)
    weight = None if p is None else torch.rand(index_shape, generator=gen)
    stats = dict(mean=MEAN[:c], std=STD[:c]) if normalise else {}
    out = gather_frames(frames, index, weight, backend=backend, **stats)
    ref = gather_frames_reference(frames, index, weight, **stats)
    assert out.dtype == torch.float32 and out.shape == (b, k, c, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_plain_gather_is_an_exact_copy(dtype, backend):
    gen = torch.Generator().manual_seed(1)
    frames = _frames((2, 6, 3, 5, 7), dtype, gen)
    index = torch.tensor([[5, 0, 0], [2, 3, 1]])
    out = gather_frames(frames, index, out_dtype=dtype, backend=backend)
    torch.testing.assert_close(out, frames[torch.arange(2)[:, None], index], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_out_dtype(out_dtype, backend):
    gen = torch.Generator().manual_seed(2)
    frames = _frames((2, 4, 3, 5, 6), torch.uint8, gen)
    index, weight = torch.randint(0, 4, (2, 3, 2), generator=gen), torch.rand(2, 3, 2, generator=gen)
    out = gather_frames(frames, index, weight, mean=MEAN, std=STD, out_dtype=out_dtype, backend=backend)
    ref = gather_frames_reference(frames, index, weight, mean=MEAN, std=STD, out_dtype=out_dtype)
    assert out.dtype == out_dtype
    torch.testing.assert_close(out, ref)  # the default tolerance of the half-precision dtype


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("p", [None, 1, 2, 4])
def test_backward_matches_reference(p, dtype, backend):
    b, t, c, h, w, k = 2, 4, 3, 3, 5, 4
    gen = torch.Generator().manual_seed(3)
    frames = _frames((b, t, c, h, w), dtype, gen)
    index_shape = (b, k) if p is None else (b, k, p)
    index = torch.randint(0, t, index_shape, generator=gen)
    weight = torch.rand(index_shape, generator=gen)
    grad = torch.randn(b, k, c, h, w, generator=gen)

    def grads(fn, frames, **kw):
        f, wt = frames.clone().requires_grad_(), weight.clone().requires_grad_()
        out = fn(f, index, wt, mean=MEAN, std=STD, **kw)
        return torch.autograd.grad(out, (f, wt), grad)

    out_frames, out_weight = grads(gather_frames, frames, backend=backend)
    # The reference's autograd accumulates repeated taps in the frames' dtype; ours sums in
    # float32 and rounds once, so the truth to compare with is the float32 gradient, rounded.
    ref_frames, ref_weight = grads(gather_frames_reference, frames.float())
    assert out_frames.dtype == dtype and out_weight.dtype == torch.float32
    if dtype == torch.float32:
        torch.testing.assert_close(out_frames, ref_frames, rtol=1e-5, atol=1e-5)
    else:  # within one unit of the last place: the dtype's default tolerance
        torch.testing.assert_close(out_frames, ref_frames.to(dtype))
    # The weight gradient is a dot product over C*H*W = 45 terms: float32 summation-order noise.
    torch.testing.assert_close(out_weight, ref_weight, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_gradient_from_uint8(backend):
    gen = torch.Generator().manual_seed(4)
    frames = _frames((1, 3, 3, 4, 4), torch.uint8, gen)
    index = torch.tensor([[[0, 2], [1, 1]]])
    grad = torch.randn(1, 2, 3, 4, 4, generator=gen)
    w1 = torch.rand(1, 2, 2, generator=gen).requires_grad_()
    w2 = w1.detach().clone().requires_grad_()
    (g1,) = torch.autograd.grad(gather_frames(frames, index, w1, backend=backend), w1, grad)
    (g2,) = torch.autograd.grad(gather_frames_reference(frames, index, w2), w2, grad)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_style_dense_weights(backend):
    # The detail sampler mixes every candidate: an expanded (non-contiguous) arange index.
    gen = torch.Generator().manual_seed(5)
    frames = _frames((2, 6, 3, 4, 4), torch.uint8, gen)
    index = torch.arange(6).expand(2, 3, 6)
    weight = torch.softmax(torch.randn(2, 3, 6, generator=gen), -1)
    out = gather_frames(frames, index, weight, mean=torch.tensor(MEAN), std=torch.tensor(STD), backend=backend)
    torch.testing.assert_close(out, gather_frames_reference(frames, index, weight, mean=MEAN, std=STD))


def test_bytes_moved():
    assert gather_frames_bytes((8, 32, 3, 224, 224), (8, 8), 1, 4) == 8 * 8 * 3 * 224 * 224 * (1 + 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    frames = torch.zeros(2, 4, 3, 2, 2, dtype=torch.uint8)
    index = torch.zeros(2, 3, dtype=torch.int64)
    for bad in (torch.tensor([[0, 4, 1], [0, 0, 0]]), torch.tensor([[0, 1, 1], [-1, 0, 0]])):
        with pytest.raises(IndexError, match=r"frame index out of range \[0, 4\): got values from -?\d+ to \d+"):
            gather_frames(frames, bad, backend=backend)
    with pytest.raises(ValueError, match=r"expects frames of shape \(B, T, C, H, W\), got shape \(4, 3, 2, 2\)"):
        gather_frames(frames[0], index, backend=backend)
    with pytest.raises(TypeError, match="frames must be uint8, float16, bfloat16 or float32, got torch.int32"):
        gather_frames(frames.int(), index, backend=backend)
    with pytest.raises(TypeError, match="index must be an integer tensor, got torch.float32"):
        gather_frames(frames, index.float(), backend=backend)
    with pytest.raises(ValueError, match=r"index of shape \(B, K\) or \(B, K, P\) with B = 2, got shape \(3, 3\)"):
        gather_frames(frames, torch.zeros(3, 3, dtype=torch.int64), backend=backend)
    with pytest.raises(ValueError, match=r"weight must have the shape of index \(2, 3\), got \(2, 3, 1\)"):
        gather_frames(frames, index, torch.ones(2, 3, 1), backend=backend)
    with pytest.raises(TypeError, match="weight must be a float tensor, got torch.int64"):
        gather_frames(frames, index, torch.ones(2, 3, dtype=torch.int64), backend=backend)
    with pytest.raises(ValueError, match="mean and std must be given together"):
        gather_frames(frames, index, mean=MEAN, backend=backend)
    with pytest.raises(ValueError, match=r"mean and std need one value per channel \(3\), got 2 and 3"):
        gather_frames(frames, index, mean=[0.5, 0.5], std=STD, backend=backend)
    with pytest.raises(TypeError, match="out_dtype must be a float dtype, got torch.uint8"):
        gather_frames(frames, index, out_dtype=torch.uint8, backend=backend)


def test_topk_frame_index():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.2], [3.0, 3.0, 3.0, 1.0, 3.0]])
    assert topk_frame_index(scores, 2).tolist() == [[1, 3], [0, 1]]
    assert topk_frame_index(scores, 3).tolist() == [[1, 2, 3], [0, 1, 2]]
    assert topk_frame_index(scores, 3, sort_by_time=False).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert topk_frame_index(scores, 5).tolist() == [[0, 1, 2, 3, 4]] * 2
    idx = topk_frame_index(scores, 1)
    assert idx.dtype == torch.int64 and idx.shape == (2, 1)


def test_topk_frame_index_random_rows_agree_with_topk():
    scores = torch.rand(6, 32, generator=torch.Generator().manual_seed(6))  # no ties
    expected = torch.topk(scores, 8, dim=1).indices.sort(dim=1).values
    assert torch.equal(topk_frame_index(scores, 8), expected)


def test_topk_frame_index_bad_arguments():
    with pytest.raises(ValueError, match=r"k = 6 must be in \[0, T = 5\]"):
        topk_frame_index(torch.zeros(2, 5), 6)
    with pytest.raises(ValueError, match=r"expects scores of shape \(B, T\), got shape \(5,\)"):
        topk_frame_index(torch.zeros(5), 2)
