"""The DALI backend against the PyAV one: same indices, same boxes, pixels within codec tolerance."""

import logging

import pytest
import torch

from s2d_fast.config import load_config
from s2d_fast import data as L
from s2d_fast.data import synthetic as S

pytest.importorskip("nvidia.dali")

SMALL = {"frame_size": 64, "num_frames": 16}


@pytest.fixture(scope="module", params=["webm", "mp4", "frames"])
def data(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param) / "d"
    return request.param, S.generate_synthetic(root, 6, 3, fmt=request.param, progress=False, workers=1, **SMALL)


def _cfg(root, backend, *pairs):
    return load_config(None, [
        "DATA.ROOT", str(root), "DATA.NUM_CANDIDATES", "8", "SNET.NUM_FRAMES", "4", "DNET.NUM_FRAMES", "4",
        "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "56", "DATA.NUM_WORKERS", "0", "DATA.BACKEND", backend,
        "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "3", "DATA.FLIP", "on", *pairs,
    ])


@pytest.mark.parametrize("split,views", [("train", ()), ("val", ("DATA.NUM_CLIPS", "2", "DATA.NUM_CROPS", "3"))])
def test_backends_agree(data, split, views, caplog):
    fmt, root = data
    batches = {}
    for backend in ("pyav", "dali"):
        loader = L.build_loader(_cfg(root, backend, *views), split)
        loader.sampler.set_epoch(1)
        with caplog.at_level(logging.INFO):
            batches[backend] = next(iter(loader))
    assert type(loader).__name__ == "DaliLoader"
    a, d = batches["pyav"], batches["dali"]
    for key in ("index", "label", "n_valid", "valid"):
        assert torch.equal(a[key], d[key]), key
    assert a["frames"].shape == d["frames"].shape == ((4, 8, 3, 56, 56) if split == "train" else (3, 6, 8, 3, 56, 56))
    diff = (a["frames"].int() - d["frames"].int()).abs().float()
    # JPEG frames: the same decoder family, only resampling differs. Videos: also YUV->RGB rounding.
    assert diff.mean() < (0.5 if fmt == "frames" else 3.0)
    if fmt == "mp4":  # H.264 has no CPU decoder in DALI: routed to PyAV, and said so once
        assert sum("DALI cannot decode h264 without a GPU" in r.message for r in caplog.records) == 1
        assert torch.equal(a["frames"], d["frames"])


def test_dali_is_deterministic_and_resumes(data):
    fmt, root = data
    if fmt == "mp4":
        pytest.skip("PyAV decodes mp4 under either backend")
    loader = L.build_loader(_cfg(root, "dali", "TRAIN.BATCH_SIZE", "2"), "train")
    assert len(loader) == 3
    loader.sampler.set_epoch(2)
    full = list(loader)
    loader.sampler.set_epoch(2, start=2)  # resume after the first batch
    resumed = list(loader)
    assert len(resumed) == 2
    for x, y in zip(full[1:], resumed):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["frames"], y["frames"])
    again = list(loader)  # the next epoch: a different order or different crops
    assert any(not torch.equal(x["frames"], y["frames"]) for x, y in zip(full, again))


@pytest.mark.parametrize("split", ["train", "val"])
def test_backends_agree_on_rescaled_short_frame_folders(data, split):
    """Frames not at the scale size (no ROI decoding: scaled first, then cut, as PyAV does) and
    more candidates than frames (each file decoded once, its frame repeated)."""
    fmt, root = data
    if fmt != "frames":
        pytest.skip("frame folders only")
    pairs = ("DATA.SCALE_SIZE", "48", "DATA.CROP_SIZE", "40", "DATA.NUM_CANDIDATES", "20")
    batches = {}
    for backend in ("pyav", "dali"):
        loader = L.build_loader(_cfg(root, backend, *pairs, *(("DATA.NUM_CLIPS", "2") if split == "val" else ())), split)
        loader.sampler.set_epoch(1)
        batches[backend] = next(iter(loader))
    a, d = batches["pyav"], batches["dali"]
    assert torch.equal(a["n_valid"], d["n_valid"]) and d["n_valid"].tolist() == [16] * len(d["n_valid"])
    assert a["frames"].shape == d["frames"].shape
    assert (a["frames"].int() - d["frames"].int()).abs().float().mean() < 0.5
