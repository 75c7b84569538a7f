"""`prepare frames` (extraction, resume, read back) and `prepare lists` (official annotations)."""

import json

import pytest
import torch
from click.testing import CliRunner

from s2d_fast.config import load_config
from s2d_fast.data import commands as C
from s2d_fast.data import loader as L
from s2d_fast.data import prepare as P
from s2d_fast.data import synthetic as S


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory):
    return S.generate_synthetic(tmp_path_factory.mktemp("p") / "d", 2, 2, fmt="mp4", progress=False, workers=1,
                                frame_size=64, num_frames=16)


def test_prepare_frames_extracts_resumes_and_reads_back(mp4s, tmp_path):
    out = tmp_path / "frames"
    (out / "val_00001.partial").mkdir(parents=True)  # an interrupted run's leftover: redone
    (out / "val_00001.partial" / "img_00001.jpg").write_bytes(b"")
    result = CliRunner().invoke(C.prepare_frames, [str(mp4s / "videos"), str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "extracted 4, skipped 0 already extracted, failed 0" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["train_00000", "train_00001", "val_00000", "val_00001"]
    assert len(list((out / "val_00001").iterdir())) == 16
    again = CliRunner().invoke(C.prepare_frames, [str(mp4s / "videos"), str(out), "--workers", "1"])
    assert "extracted 0, skipped 4 already extracted, failed 0" in again.output

    rows = [line.split() for line in (mp4s / "val.txt").read_text().splitlines()]
    (tmp_path / "val.txt").write_text("".join(f"{r[0].split('/')[1].split('.')[0]} {r[1]} {r[2]}\n" for r in rows))
    cfg = load_config(None, ["DATA.ROOT", str(out), "DATA.VAL_LIST", str(tmp_path / "val.txt"),
                             "DATA.INPUT_FORMAT", "frames", "DATA.NUM_CANDIDATES", "8", "SNET.NUM_FRAMES", "4",
                             "DNET.NUM_FRAMES", "4", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "64",
                             "DATA.NUM_WORKERS", "0", "TEST.BATCH_SIZE", "2"])
    (frames,) = list(L.build_loader(cfg, "val"))
    assert frames["valid"].all() and frames["frames"].shape == (2, 8, 3, 64, 64)
    video, _, _ = S.render_video(0, "val", 1, frame_size=64, num_frames=16)
    idx, _ = L.segment_indices(16, 8, train=False)
    expected = torch.from_numpy(video[idx]).permute(0, 3, 1, 2).int()
    assert (frames["frames"][1].int() - expected).abs().float().mean() < 8  # H.264 then JPEG


def test_prepare_frames_reports_failures(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp4").write_bytes(b"nope" * 50)
    summary = P.extract_frames(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    assert summary["done"] == [] and summary["failed"][0]["video"] == "bad"
    assert str(tmp_path / "in" / "bad.mp4") in summary["failed"][0]["reason"]
    assert not any((tmp_path / "out").iterdir())  # nothing partial left behind


def test_lists_from_kinetics_csv_and_something_annotations(tmp_path):
    for name in ("abseiling/aaaaaaaaaaa_000010_000020", "zumba/bbbbbbbbbbb_000000_000010"):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        for i in range(1, 4):
            (folder / f"img_{i:05d}.jpg").write_bytes(b"x")
    csv = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(csv + "abseiling,aaaaaaaaaaa,10,20,train\nzumba,bbbbbbbbbbb,0,10,train\n"
                                        "zumba,ccccccccccc,0,10,train\n")
    (tmp_path / "val.csv").write_text(csv + "zumba,bbbbbbbbbbb,0,10,val\n")
    result = CliRunner().invoke(C.prepare_lists, ["kinetics", "--root", str(tmp_path), "--train",
                                                  str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.txt").read_text() == ("abseiling/aaaaaaaaaaa_000010_000020 3 0\n"
                                                    "zumba/bbbbbbbbbbb_000000_000010 3 1\n")
    assert (tmp_path / "classes.txt").read_text() == "abseiling\nzumba\n"
    assert "skipped 1: missing" in result.output

    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "00001.jpg").write_bytes(b"x")
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something left": "1", "Holding something": "0"}))
    (tmp_path / "v2.json").write_text(json.dumps([{"id": "12", "template": "Pushing [something] left"}]))
    rows, classes = P.something_v2_rows(tmp_path / "v2.json", tmp_path / "labels.json")
    assert rows == [("12", 1)] and classes == ["Holding something", "Pushing something left"]
    (tmp_path / "v1.csv").write_text("12;Pushing something left\n")
    (tmp_path / "v1labels.csv").write_text("Holding something\nPushing something left\n")
    assert P.something_v1_rows(tmp_path / "v1.csv", tmp_path / "v1labels.csv")[0] == [("12", 1)]
    assert P.count_frames(tmp_path / "12", "{:05d}.jpg") == 1
