"""Video files as phones and encoders write them: variable frame rate, rotation metadata,
truncation, lists without frame counts. Both backends and the frame folders `prepare frames`
writes must read the same frames, the way ffmpeg shows them."""

import logging
import multiprocessing
from fractions import Fraction

import av
import numpy as np
import pytest

from s2d_fast import data as L
from s2d_fast.config import load_config
from s2d_fast.data.prepare import extract_frames

GRAY_STEP = 4  # frame i is a flat grey of level GRAY_STEP * i: which frame was read is its colour


def _write(path, levels, *, pts=None, rotation=0, codec="libvpx-vp9", size=(32, 32)):
    """A video of flat grey frames (levels), lossless where the codec allows, with the given
    timestamps (1/30 s ticks) and display rotation."""
    options = {"deadline": "realtime", "cpu-used": "8", "lossless": "1"} if codec == "libvpx-vp9" else {"qp": "0"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, level in enumerate(levels):
            image = np.full((size[1], size[0], 3), level, np.uint8)
            image[: size[1] // 4, : size[0] // 4] = 255  # a white corner, to see which way is up
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(pts[i] if pts is not None else i), Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _levels(frames: np.ndarray) -> list[int]:
    """The grey level of each frame (HWC or CHW), read away from the white corner."""
    frames = np.asarray(frames)
    if frames.shape[-1] != 3:
        frames = np.moveaxis(frames, -3, -1)
    h, w = frames.shape[-3:-1]
    return [round(float(f[h // 2:, w // 2:].mean()) / GRAY_STEP) for f in frames]


def _cfg(root, backend, *pairs):
    return load_config(None, ["DATA.ROOT", str(root), "DATA.NUM_CANDIDATES", "8", "SNET.NUM_FRAMES", "4",
                              "DNET.NUM_FRAMES", "4", "DATA.SCALE_SIZE", "32", "DATA.CROP_SIZE", "32",
                              "DATA.NUM_WORKERS", "0", "DATA.BACKEND", backend, "TEST.BATCH_SIZE", "1",
                              "DATA.INPUT_FORMAT", "video", *pairs])


@pytest.fixture(scope="module")
def vfr_root(tmp_path_factory):
    """60 frames whose timestamps advance by 1 or 4 ticks of a nominal 30 fps, in a list with no
    frame count."""
    root = tmp_path_factory.mktemp("vfr")
    pts = np.cumsum([0] + [1 if i % 3 else 4 for i in range(1, 60)])
    _write(root / "vfr.webm", [GRAY_STEP * i for i in range(60)], pts=pts)
    (root / "val.txt").write_text("vfr.webm 0\n")
    (root / "train.txt").write_text("vfr.webm 0\n")
    return root


def test_variable_frame_rate_is_read_by_frame_order_in_pyav(vfr_root):
    wanted = np.array([0, 3, 10, 31, 47, 58, 59])
    frames, available = L.decode_video(vfr_root / "vfr.webm", wanted, 32)
    assert available is None and _levels(frames) == wanted.tolist()
    # seeking deep into the video lands on the same frames
    late = np.array([L.SEEK_MIN_FRAMES - 4, 55, 59]) if L.SEEK_MIN_FRAMES < 60 else np.array([55, 59])
    assert _levels(L.decode_video(vfr_root / "vfr.webm", late, 32)[0]) == late.tolist()


@pytest.mark.parametrize("backend", ["pyav", "dali"])
def test_both_backends_and_the_frame_folders_read_the_same_vfr_frames(vfr_root, tmp_path, backend):
    expected = L.segment_indices(60, 8, train=False)[0].tolist()  # the centres of 8 segments of 60
    (batch,) = list(L.build_loader(_cfg(vfr_root, backend), "val"))
    assert _levels(batch["frames"][0].numpy()) == expected
    frames_root = tmp_path / "frames"
    summary = extract_frames(vfr_root, frames_root, workers=1, progress=False)
    assert summary["done"] == ["vfr"] and len(list((frames_root / "vfr").iterdir())) == 60
    (frames_root / "val.txt").write_text("vfr 60 0\n")
    (batch,) = list(L.build_loader(_cfg(frames_root, backend, "DATA.INPUT_FORMAT", "frames"), "val"))
    assert _levels(batch["frames"][0].numpy()) == expected


@pytest.mark.parametrize("backend", ["pyav", "dali"])
def test_rotation_metadata_turns_frames_upright(tmp_path, backend):
    """Stored 48x32 with a 90 degree display rotation: read 32 wide and 48 high, the white
    corner where ffmpeg shows it, in both backends and in extracted frames."""
    _write(tmp_path / "phone.webm", [80] * 6, rotation=90, size=(48, 32))
    stored = np.full((32, 48, 3), 80, np.uint8)
    stored[:8, :12] = 255
    upright = np.rot90(stored)  # counter-clockwise, as the display matrix says
    frames, _ = L.decode_video(tmp_path / "phone.webm", np.array([0, 5]), 32)
    assert frames.shape == (2, 48, 32, 3)
    assert np.abs(frames[0].astype(int) - upright).mean() < 4

    (tmp_path / "val.txt").write_text("phone.webm 6 0\n")
    (batch,) = list(L.build_loader(_cfg(tmp_path, backend, "DATA.SCALE_SIZE", "32", "DATA.CROP_SIZE", "32"), "val"))
    top = upright[8:40]  # the centre crop of the upright frame
    assert np.abs(batch["frames"][0, 0].permute(1, 2, 0).numpy().astype(int) - top).mean() < 4

    summary = extract_frames(tmp_path, tmp_path / "out", workers=1, progress=False)
    assert summary["done"] == ["phone"]
    from PIL import Image

    extracted = np.asarray(Image.open(tmp_path / "out" / "phone" / "img_00001.jpg").convert("RGB"))
    assert extracted.shape == (48, 32, 3) and np.abs(extracted.astype(int) - upright).mean() < 6


@pytest.mark.parametrize("cache_mb", ["0", "16"])
def test_a_truncated_video_is_read_to_its_real_end_and_said_once(tmp_path, caplog, cache_mb):
    _write(tmp_path / "full.webm", [GRAY_STEP * i for i in range(48)])
    data = (tmp_path / "full.webm").read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])
    real = L.probe_video(str(tmp_path / "cut.webm")).num_frames
    assert 0 < real < 48
    (tmp_path / "val.txt").write_text("cut.webm 48 0\n")
    loader = L.build_loader(_cfg(tmp_path, "pyav", "DATA.DECODED_CACHE_MB", cache_mb), "val")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # with the cache, the second read comes from it
            (batch,) = list(loader)
    assert batch["valid"].tolist() == [True] and batch["n_valid"].tolist() == [8]
    levels = _levels(batch["frames"][0].numpy())
    assert levels == L.segment_indices(real, 8, train=False)[0].tolist()  # spread over what is there
    said = [r.message for r in caplog.records if "the list says 48 frames" in r.message]
    assert len(said) == 1 and f"has {real}" in said[0] and said[0].startswith(f"{tmp_path / 'val.txt'}:1:")


def _decode_all(path):
    return L.decoders.decode_video(path, np.arange(6), 16)[0]


def test_a_worker_forked_after_the_parent_decoded_decodes_too(tmp_path):
    """A DataLoader worker is forked after the parent process has decoded (validation, a first
    epoch): PyAV 18.1.1's swscale slice threads did not survive the fork and the worker hung."""
    path = tmp_path / "grey.webm"
    _write(path, [GRAY_STEP * i for i in range(6)], size=(48, 32))
    expected = _decode_all(str(path))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_decode_all, (str(path),)).get(timeout=60)
    np.testing.assert_array_equal(got, expected)
