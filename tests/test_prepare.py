"""`prepare frames` (extraction, resume, read back), `prepare lists` (official annotations) and
`prepare mini-kinetics` (AR-Net's split files, tests/data/mini_kinetics/)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from s2d_fast.config import load_config
from s2d_fast.data import commands as C
from s2d_fast import data as L
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
    assert L.count_frames(tmp_path / "12", "{:05d}.jpg") == 1
    # With no --template, SSv1's own frame names ({:05d}.jpg) are counted.
    result = CliRunner().invoke(C.prepare_lists, ["somethingv1", "--root", str(tmp_path), "--train", str(tmp_path / "v1.csv"),
                                                  "--val", str(tmp_path / "v1.csv"), "--labels", str(tmp_path / "v1labels.csv"),
                                                  "--out", str(tmp_path / "v1")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v1" / "train_videofolder.txt").read_text() == "12 1 1\n"


MINI = Path(__file__).parent / "data" / "mini_kinetics"


def _frames(folder, n):
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        (folder / f"img_{i:05d}.jpg").write_bytes(b"x")


@pytest.fixture
def kinetics_root(tmp_path, mp4s):
    """Clips of the fixture splits in the namings met in practice: frame folders named
    <id>_<start>_<end> (in a class folder with spaces) or <id>, a video file, an empty folder,
    a folder whose name looks like an id (`kinetics400`), an interrupted extraction."""
    root = tmp_path / "k400"
    _frames(root / "frames" / "air drumming" / "a1-bC2dE3fG_000000_000010", 3)
    _frames(root / "frames" / "_h4iJ5kL6mN", 2)
    (root / "videos" / "answering_questions").mkdir(parents=True)
    shutil.copy(mp4s / "videos" / "val_00000.mp4",
                root / "videos" / "answering_questions" / "Op7-qR8sT9u_000104_000114.mp4")
    (root / "loop").symlink_to(root)  # searched once
    (root / "frames" / "hurling (sport)" / "dE3fG4hI5jK_000007_000017").mkdir(parents=True)
    _frames(root / "kinetics400" / "val" / "answering_questions" / "Lm6nO7pQ8rS_000059_000069", 4)
    _frames(root / "frames" / "air drumming" / "tU9vW0xY1zA_000001_000011", 2)
    _frames(root / "frames" / "air drumming" / "Bc2dE3fG4hI_000000_000010.partial", 1)
    (root / "videos" / "other").mkdir()
    (root / "videos" / "other" / "tU9vW0xY1zA_000001_000011.mp4").write_bytes(b"not this one")
    return root


def _mini(root, train, val, *extra):
    return CliRunner().invoke(C.prepare_mini_kinetics, ["--root", str(root), "--split-train", str(train),
                                                        "--split-val", str(val), *extra])


def test_mini_kinetics_from_arnet_split_files(kinetics_root):
    result = _mini(kinetics_root, MINI / "mini_train_videofolder.txt", MINI / "mini_val_videofolder.txt")
    assert result.exit_code == 0, result.output
    assert (kinetics_root / "train.txt").read_text() == (
        "frames/air drumming/a1-bC2dE3fG_000000_000010 3 0\n"
        "frames/_h4iJ5kL6mN 2 0\n"
        "videos/answering_questions/Op7-qR8sT9u_000104_000114.mp4 16 1\n")
    assert (kinetics_root / "val.txt").read_text() == (
        "kinetics400/val/answering_questions/Lm6nO7pQ8rS_000059_000069 4 1\n"
        "frames/air drumming/tU9vW0xY1zA_000001_000011 2 0\n")
    assert (kinetics_root / "classes.txt").read_text() == "air drumming\nanswering questions\nhurling (sport)\n"
    train, val = MINI / "mini_train_videofolder.txt", MINI / "mini_val_videofolder.txt"
    assert result.stdout.splitlines() == [
        f"train.txt: 3 of the 6 videos in {train} ({P.ARNET})",
        f"  skipped 1: {P.NO_FRAMES}",
        f"  skipped 1: {P.MISSING}",
        f"  skipped 1: {P.REPEATED}",
        f"val.txt: 2 of the 3 videos in {val} ({P.ARNET})",
        f"  skipped 1: {P.MISSING}",
        "classes.txt: 3 classes (Mini-Kinetics has 200)",
        f"skipped entries, one per line: {kinetics_root / P.SKIPPED_FILE}",
    ]
    assert (kinetics_root / P.SKIPPED_FILE).read_text().splitlines() == [
        f"{train}:4: vW0xY1zA2bC_000031_000041: {P.MISSING}",
        f"{train}:5: dE3fG4hI5jK_000007_000017: {P.NO_FRAMES} in frames/hurling (sport)/dE3fG4hI5jK_000007_000017",
        f"{train}:6: a1-bC2dE3fG_000000_000010: {P.REPEATED} (first at {train}:1)",
        f"{val}:3: Bc2dE3fG4hI_000000_000010: {P.MISSING}",
    ]
    records = L.read_list_file(kinetics_root / "train.txt", 200)  # the loader reads paths with spaces back
    assert (records[0].path, records[0].num_frames, records[0].label) == (
        "frames/air drumming/a1-bC2dE3fG_000000_000010", 3, 0)

    # Run again over its own lists: replaced. Over lists it did not write (Kinetics' own): refused.
    again = _mini(kinetics_root, MINI / "mini_train_videofolder.txt", MINI / "mini_val_videofolder.txt")
    assert again.exit_code == 0, again.output
    (kinetics_root / P.SKIPPED_FILE).unlink()
    (kinetics_root / "train.txt").write_text("kinetics' own list\n")
    refused = _mini(kinetics_root, MINI / "mini_train_videofolder.txt", MINI / "mini_val_videofolder.txt")
    assert refused.exit_code == 1
    assert f"{kinetics_root / 'train.txt'} exists and was not written by prepare mini-kinetics" in refused.output
    assert (kinetics_root / "train.txt").read_text() == "kinetics' own list\n"

    semicolons = P.read_split(MINI / "mini_val.txt")  # AdaFuse's variant of the same rows
    spaces = P.read_split(MINI / "mini_val_videofolder.txt")
    assert semicolons[0] == spaces[0] == P.ARNET
    assert [e.clip for e in semicolons[1]] == [e.clip for e in spaces[1]]
    assert [(e.cls, e.label) for e in spaces[1]] == [("answering questions", 1), ("air drumming", 0),
                                                     ("hurling (sport)", 2)]


def test_mini_kinetics_from_youtube_id_lists(kinetics_root, tmp_path):
    out = tmp_path / "lists"
    args = ["--kinetics-train", str(MINI / "kinetics_train.csv"), "--kinetics-val", str(MINI / "kinetics_val.csv"),
            "--out", str(out)]
    result = _mini(kinetics_root, MINI / "train_ytid_list.txt", MINI / "val_ytid_list.txt", *args)
    assert result.exit_code == 0, result.output
    # classes: the sorted names of the classes the lists name (hurling's only clip is in no list)
    assert (out / "classes.txt").read_text() == "air drumming\nanswering questions\n"
    assert (out / "train.txt").read_text() == ("frames/air drumming/a1-bC2dE3fG_000000_000010 3 0\n"
                                               "videos/answering_questions/Op7-qR8sT9u_000104_000114.mp4 16 1\n")
    assert (out / "val.txt").read_text() == ("frames/air drumming/tU9vW0xY1zA_000001_000011 2 0\n"
                                             "kinetics400/val/answering_questions/Lm6nO7pQ8rS_000059_000069 4 1\n")
    assert f"train.txt: 2 of the 3 videos in {MINI / 'train_ytid_list.txt'} ({P.PLAIN})" in result.output
    assert f"  skipped 1: {P.NOT_IN_CSV}" in result.output
    assert (out / P.SKIPPED_FILE).read_text() == f"{MINI / 'train_ytid_list.txt'}:3: zz9Yy8Xx7Ww: {P.NOT_IN_CSV}\n"

    no_csv = _mini(kinetics_root, MINI / "train_ytid_list.txt", MINI / "mini_val_videofolder.txt")
    assert no_csv.exit_code != 0 and "--kinetics-train" in no_csv.output


@pytest.mark.parametrize("lines, bad_line, why", [
    (["images/val/air drumming/tU9vW0xY1zA_000001_000011 120"], 2, "num_frames and label must be"),
    (["images/val/air drumming/tU9vW0xY1zA_000001_000011 x 0"], 2, "num_frames and label must be"),
    (["tU9vW0xY1zA_000001_000011 120 0"], 2, "<class name>/<youtube_id>_<start>_<end>"),
    (["images/val/air drumming/not-a-clip 120 0"], 2, "<class name>/<youtube_id>_<start>_<end>"),
    (["", "tU9vW0xY1zA"], 3, f"a line in the {P.PLAIN} format"),
    (["images/val/air drumming/tU9vW0xY1zA_000001_000011 120 4"], 2, "class 'air drumming' has label 4, but 0 at"),
    (["images/val/yoga/tU9vW0xY1zA_000001_000011 120 0"], 2, "label 0 is given to class 'yoga', but to"),
])
def test_mini_kinetics_bad_split_line_names_file_and_line(kinetics_root, tmp_path, lines, bad_line, why):
    split = tmp_path / "mini_val_videofolder.txt"
    split.write_text("images/val/air drumming/Lm6nO7pQ8rS_000059_000069 158 0\n" + "".join(f"{x}\n" for x in lines))
    result = _mini(kinetics_root, MINI / "mini_train_videofolder.txt", split)
    assert result.exit_code == 1
    assert f"Error: {split}:{bad_line}: " in result.output and why in result.output
    assert not (kinetics_root / "train.txt").exists()  # nothing written before the splits are read

    ids = tmp_path / "ids.txt"
    ids.write_text("a1-bC2dE3fG\nnot-an-id!\n")
    with pytest.raises(P.SplitFileError, match=f"^{ids}:2: 'not-an-id!' is not a YouTube id"):
        P.read_split(ids)


def test_prepare_frames_keeps_label_folders(mp4s, tmp_path):
    """Kinetics keeps videos in label folders; two videos of one name in two folders stay two."""
    videos = tmp_path / "kinetics"
    for label in ("abseiling", "zumba"):
        (videos / label).mkdir(parents=True)
        shutil.copy(mp4s / "videos" / f"val_0000{label == 'zumba':d}.mp4", videos / label / "clip.mp4")
    result = CliRunner().invoke(C.prepare_frames, [str(videos), str(tmp_path / "out"), "--workers", "1"])
    assert "extracted 2, skipped 0 already extracted, failed 0" in result.output
    a, b = (sorted((tmp_path / "out" / label / "clip").iterdir()) for label in ("abseiling", "zumba"))
    assert len(a) == len(b) == 16
    assert a[0].read_bytes() != b[0].read_bytes()  # each folder holds its own video
