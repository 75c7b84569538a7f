"""Missing, empty, truncated and undecodable videos, missing frame files, malformed list rows."""

import logging
import os
import sys

import pytest

from s2d_fast.config import load_config
from s2d_fast import data as L
from s2d_fast.data import synthetic as S


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """8 training and 6 validation webm videos, validation 1-4 broken four ways."""
    root = S.generate_synthetic(tmp_path_factory.mktemp("bad") / "d", 8, 6, progress=False, workers=1,
                                frame_size=64, num_frames=16)
    videos = root / "videos"
    (videos / "val_00001.webm").unlink()  # missing
    (videos / "val_00002.webm").write_bytes(b"")  # empty
    data = (videos / "val_00003.webm").read_bytes()
    (videos / "val_00003.webm").write_bytes(data[:300])  # truncated inside the first frame
    (videos / "val_00004.webm").write_bytes(b"not a video at all " * 100)  # undecodable
    (videos / "train_00002.webm").unlink()
    return root


def _cfg(root, backend, *pairs):
    return load_config(None, ["DATA.ROOT", str(root), "DATA.NUM_CANDIDATES", "4", "SNET.NUM_FRAMES", "4",
                              "DNET.NUM_FRAMES", "4", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "48",
                              "DATA.NUM_WORKERS", "0", "DATA.BACKEND", backend, "TEST.BATCH_SIZE", "6",
                              "TRAIN.BATCH_SIZE", "8", *pairs])


@pytest.mark.parametrize("backend", ["pyav", "dali"])
def test_eval_marks_unreadable_videos_and_lists_them(broken, backend, caplog):
    loader = L.build_loader(_cfg(broken, backend), "val")
    with caplog.at_level(logging.WARNING):
        (batch,) = list(loader)
    assert batch["valid"].tolist() == [True, False, False, False, False, True]
    assert batch["index"].tolist() == list(range(6)) and batch["frames"].shape == (6, 4, 3, 48, 48)
    reasons = {os.path.basename(b["path"]): b["reason"] for b in loader.dataset.bad_samples}
    assert sorted(reasons) == ["val_00001.webm", "val_00002.webm", "val_00003.webm", "val_00004.webm"]
    assert reasons["val_00001.webm"].endswith("val_00001.webm: no such file")
    assert reasons["val_00002.webm"].endswith("val_00002.webm: empty file")
    assert "val_00003.webm: cannot decode" in reasons["val_00003.webm"] and "val_00004.webm: cannot decode" in reasons["val_00004.webm"]
    logged = [r.message for r in caplog.records if "unreadable sample" in r.message]
    assert len(logged) == 4 and all("scored as wrong" in m for m in logged)


@pytest.mark.parametrize("backend", ["pyav", "dali"])
def test_training_replaces_a_bad_video_by_the_next_and_counts_it(broken, backend, caplog):
    loader = L.build_loader(_cfg(broken, backend, "DATA.FLIP", "off"), "train")
    with caplog.at_level(logging.WARNING):
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            (batch,) = list(loader)
            assert sorted(batch["index"].tolist()) == [0, 1, 3, 3, 4, 5, 6, 7]  # 2 -> 3
            assert batch["valid"].all()
    assert loader.dataset.notes.num_skipped == 2  # counted each time...
    logged = [r.message for r in caplog.records if "unreadable sample" in r.message]
    assert len(logged) == 1 and "train_00002.webm: no such file" in logged[0]  # ...logged once


def test_error_policy_stops_with_the_path_and_reason(broken):
    loader = L.build_loader(_cfg(broken, "pyav", "DATA.ON_BAD_SAMPLE", "error"), "val")
    with pytest.raises(L.VideoReadError, match=r"val_00001.webm: no such file"):
        list(loader)
    loader = L.build_loader(_cfg(broken, "dali", "DATA.ON_BAD_SAMPLE", "error"), "val")
    with pytest.raises(L.VideoReadError, match=r"val_00001.webm: no such file"):
        list(loader)


def test_missing_frame_file_is_named(tmp_path):
    root = S.generate_synthetic(tmp_path / "d", 1, 1, fmt="frames", progress=False, workers=1,
                                frame_size=64, num_frames=16)
    (root / "frames" / "val_00000" / "img_00006.jpg").unlink()
    for backend in ("pyav", "dali"):
        loader = L.build_loader(_cfg(root, backend, "TEST.BATCH_SIZE", "1", "DATA.NUM_CANDIDATES", "8",
                                     "DATA.INPUT_FORMAT", "frames"), "val")
        (batch,) = list(loader)
        assert batch["valid"].tolist() == [False]
        (bad,) = loader.dataset.bad_samples
        assert bad["reason"].startswith(str(root / "frames" / "val_00000" / "img_00006.jpg") + ": cannot read")


def test_malformed_list_row_is_reported_as_file_line(tmp_path, caplog):
    rows = tmp_path / "list.txt"
    rows.write_text("a.mp4 10 1\nb.mp4 ten 1\nc.mp4 12 2\n")
    with pytest.raises(L.ListFileError, match=rf"^{rows}:2: num_frames and label must be integers"):
        L.read_list_file(rows, on_bad="error")
    with caplog.at_level(logging.WARNING):
        records = L.read_list_file(rows, on_bad="skip")
    assert [r.path for r in records] == ["a.mp4", "c.mp4"]
    assert any(f"{rows}:2: num_frames and label must be integers" in r.message for r in caplog.records)
    assert any("skipped 1 malformed row(s) of 3" in r.message for r in caplog.records)


def test_user_errors_are_one_line_messages(tmp_path, monkeypatch):
    """Errors that are the user's to fix print as `Error: ...` without a traceback."""
    from click.testing import CliRunner

    from s2d_fast.cli import main
    from s2d_fast.config import ConfigError, load_config
    from s2d_fast.data import choose_backend
    from s2d_fast.config import read_flip_label_map as read_label_map

    bad_map = tmp_path / "flip.txt"
    bad_map.write_text("0 1\n2 three\n")
    with pytest.raises(ConfigError, match=r"DATA.FLIP_LABEL_MAP .*flip.txt:2: expected two class numbers"):
        read_label_map(str(bad_map))

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if DALI were not installed
    with pytest.raises(ConfigError, match="DATA.BACKEND dali: NVIDIA DALI is not installed"):
        choose_backend(load_config(None, ["DATA.BACKEND", "dali"]))
    assert choose_backend(load_config(None, ["DATA.BACKEND", "auto"])) == "pyav"

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["prepare", "synthetic", "--out", str(tmp_path / "mine"), "--num-train", "1",
                                       "--num-val", "1"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "is not a synthetic dataset; not overwriting it" in result.output
    assert "Traceback" not in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
