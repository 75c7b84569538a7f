"""sample_details against its reference (gather_frames_reference, then float64 grid_sample).

Tolerance rtol=1e-5, atol=2e-5 for float32 outputs: the kernel forms sample positions and
bilinear weights in float32 (positions up to ~20 px, so ~1e-6 px of rounding), the reference
in float64; values are O(1) (normalised uint8, or randn).
"""

import pytest
import torch

from s2d_fast.kernels import gather_frames, sample_details, sample_details_bytes, sample_details_reference

BACKENDS = ["torch", "triton"]
DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TOL = dict(rtol=1e-5, atol=2e-5)


def _frames(shape, dtype, gen):
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return torch.randn(shape, generator=gen).to(dtype)


# (B, T, C, H, W, K, P, out_size): odd and even windows, T = 1, K = T, P None = (B, K) index.
CASES = [
    (2, 4, 3, 9, 11, 2, 2, 5),
    (1, 3, 3, 8, 7, 3, None, 4),
    (2, 1, 2, 5, 6, 1, 3, 3),
    (1, 5, 3, 12, 10, 2, 4, 6),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalise", [False, True], ids=["raw", "normalised"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(case, dtype, normalise, backend):
    b, t, c, h, w, k, p, s = case
    gen = torch.Generator().manual_seed(h * 10 + w)
    frames = _frames((b, t, c, h, w), dtype, gen)
    index_shape = (b, k) if p is None else (b, k, p)
    index = torch.randint(0, t, index_shape, generator=gen)
    weight = torch.rand(index_shape, generator=gen)
    # Centres from beyond the left/top edge to beyond the right/bottom one, zooming in and out,
    # one window flipped: many windows leave the frame.
    centers = torch.rand(b, k, 2, generator=gen) * torch.tensor([w + 6.0, h + 6.0]) - 3
    strides = torch.rand(b, k, 2, generator=gen) * 2.5 + 0.3
    strides[0, 0, 0] *= -1
    stats = dict(mean=MEAN[:c], std=STD[:c]) if normalise else {}
    out = sample_details(frames, index, weight, centers, strides, s, backend=backend, **stats)
    ref = sample_details_reference(frames, index, weight, centers, strides, s, **stats)
    assert out.dtype == torch.float32 and out.shape == (b, k, c, s, s)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_window_is_the_gather(backend):
    gen = torch.Generator().manual_seed(1)
    frames = _frames((2, 4, 3, 6, 6), torch.uint8, gen)
    index, weight = torch.randint(0, 4, (2, 3, 2), generator=gen), torch.rand(2, 3, 2, generator=gen)
    centers, strides = torch.full((2, 3, 2), 2.5), torch.ones(2, 3, 2)
    out = sample_details(frames, index, weight, centers, strides, 6, mean=MEAN, std=STD, backend=backend)
    expected = gather_frames(frames, index, weight, mean=MEAN, std=STD, backend=backend)
    torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_positions_by_hand(backend):
    # One 2x3 frame, one channel, rows [0, 10, 20] and [30, 40, 50]; mean 5, std 2.
    frames = torch.tensor([[0.0, 10, 20], [30, 40, 50]]).view(1, 1, 1, 2, 3)
    index, weight = torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1)
    # out_size 2 with stride (1, 1) around (1.5, 0.5): x in {1, 2}, y in {0, 1}.
    out = sample_details(frames, index, weight, torch.tensor([[[1.5, 0.5]]]), torch.ones(1, 1, 2), 2, backend=backend)
    assert out.view(2, 2).tolist() == [[10.0, 20.0], [40.0, 50.0]]
    # A single sample half a pixel left of pixel (0, 0): half of it, half zero padding, where
    # the padding is zero after normalisation: 0.5 * (0 - 5) / 2.
    out = sample_details(
        frames, index, weight, torch.tensor([[[-0.5, 0.0]]]), torch.ones(1, 1, 2), 1, mean=[5.0], std=[2.0],
        backend=backend,
    )
    assert out.item() == -1.25


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_dtype(backend):
    gen = torch.Generator().manual_seed(2)
    frames = _frames((1, 3, 3, 7, 7), torch.uint8, gen)
    index, weight = torch.randint(0, 3, (1, 2, 2), generator=gen), torch.rand(1, 2, 2, generator=gen)
    centers, strides = torch.full((1, 2, 2), 3.2), torch.full((1, 2, 2), 1.3)
    out = sample_details(frames, index, weight, centers, strides, 4, mean=MEAN, std=STD, out_dtype=torch.float16, backend=backend)
    ref = sample_details_reference(frames, index, weight, centers, strides, 4, mean=MEAN, std=STD, out_dtype=torch.float16)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, ref)


def test_bytes_moved():
    # A 4x4 window at stride 1 centred in a 224 frame reads 5x5 pixels per channel and tap.
    centers, strides = torch.full((1, 1, 2), 100.0), torch.ones(1, 1, 2)
    expected = 5 * 5 * 3 * 2 * 1 + 4 * 4 * 3 * 4
    assert sample_details_bytes((1, 8, 3, 224, 224), (1, 1, 2), centers, strides, 4, 1, 4) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    frames = torch.zeros(2, 4, 3, 5, 5, dtype=torch.uint8)
    index, weight = torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3)
    centers, strides = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    with pytest.raises(IndexError, match=r"frame index out of range \[0, 4\): got values from 0 to 7"):
        sample_details(frames, torch.tensor([[0, 7, 1], [2, 3, 0]]), weight, centers, strides, 4, backend=backend)
    with pytest.raises(ValueError, match=r"needs frames of at least 2x2 pixels, got \(1, 5\)"):
        sample_details(frames[:, :, :, :1], index, weight, centers, strides, 4, backend=backend)
    with pytest.raises(ValueError, match=r"centers must be float of shape \(2, 3, 2\), got torch.float32 \(2, 3\)"):
        sample_details(frames, index, weight, centers[..., 0], strides, 4, backend=backend)
    with pytest.raises(ValueError, match=r"strides must be float of shape \(2, 3, 2\), got torch.int64 \(2, 3, 2\)"):
        sample_details(frames, index, weight, centers, strides.long(), 4, backend=backend)
    with pytest.raises(ValueError, match="out_size must be positive, got 0"):
        sample_details(frames, index, weight, centers, strides, 0, backend=backend)
    with pytest.raises(ValueError, match="sample_details: mean and std must be given together"):
        sample_details(frames, index, weight, centers, strides, 4, std=STD, backend=backend)
