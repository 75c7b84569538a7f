"""List files, TSN segment sampling, decoding and the DataLoader."""

import json
import logging

import av
import numpy as np
import pytest
import torch

from s2d_fast.config import ConfigError, load_config
from s2d_fast import data as L
from s2d_fast.data import synthetic as S
from s2d_fast.data.datasets import resolve_dataset
from s2d_fast.models.sampler import uniform_indices

SMALL = {"frame_size": 64, "num_frames": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """6 training and 3 validation webm videos of 16 frames at 64 px."""
    return S.generate_synthetic(tmp_path_factory.mktemp("tiny") / "d", 6, 3, seed=0, progress=False, workers=1, **SMALL)


def _cfg(root, *pairs):
    return load_config(None, [
        "DATA.ROOT", str(root), "DATA.NUM_CANDIDATES", "8", "SNET.NUM_FRAMES", "4", "DNET.NUM_FRAMES", "4",
        "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "56", "DATA.NUM_WORKERS", "0",
        "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "3", *pairs,
    ])


# --- segment sampling -------------------------------------------------------------------------

def test_eval_takes_segment_centres_like_the_model():
    idx, n_valid = L.segment_indices(48, 8, train=False)
    assert idx.dtype == np.int64 and idx.tolist() == [3, 9, 15, 21, 27, 33, 39, 45] and n_valid == 8
    for n in (8, 9, 31, 48, 97, 300):
        for t in (1, 4, 8):
            ours, _ = L.segment_indices(n, t, train=False)
            assert ours.tolist() == uniform_indices(torch.tensor([n]), t)[0].tolist()


def test_train_picks_one_random_frame_inside_each_segment():
    n, t = 50, 8
    bounds = np.arange(t + 1) * n // t
    draws = [L.segment_indices(n, t, train=True, rng=np.random.default_rng(s))[0] for s in range(40)]
    for idx in draws:
        assert ((idx >= bounds[:-1]) & (idx < bounds[1:])).all()
    assert len({tuple(d) for d in draws}) > 30  # random...
    again = L.segment_indices(n, t, train=True, rng=np.random.default_rng(3))[0]
    assert np.array_equal(again, draws[3])  # ...and reproducible from the seed
    assert L.segment_indices(8, 8, train=True, rng=np.random.default_rng(0))[0].tolist() == list(range(8))


@pytest.mark.parametrize("train", [True, False])
def test_short_video_takes_all_frames_then_repeats_the_last(train):
    idx, n_valid = L.segment_indices(3, 8, train=train, rng=np.random.default_rng(0))
    assert idx.tolist() == [0, 1, 2, 2, 2, 2, 2, 2] and n_valid == 3


# --- list files and dataset resolution ---------------------------------------------------------

def test_list_file_rows_and_errors(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("a/clip one.mp4 30 2\n\nb.mp4 12 0\n")
    assert L.read_list_file(good) == [L.VideoRecord("a/clip one.mp4", 30, 2), L.VideoRecord("b.mp4", 12, 0)]
    # PySlowFast's and MMAction2's `path label` rows: the frame count comes from the video
    plain = tmp_path / "plain.txt"
    plain.write_text("a/clip one.mp4 2\nb.mp4 0\n")
    records = L.read_list_file(plain)
    assert records == [L.VideoRecord("a/clip one.mp4", None, 2), L.VideoRecord("b.mp4", None, 0)]
    assert records[1].where == f"{plain}:2"
    cases = {
        "a.mp4 30 2\nb.mp4 12\n": ":2: expected `path num_frames label`",
        "a.mp4 30 2\nb.mp4 x 1\n": ":2: num_frames and label must be integers",
        "a.mp4 0 2\n": ":1: num_frames must be at least 1",
        "a.mp4 3 12\n": ":1: label 12 is not below the 12 classes (DATA.NUM_CLASS)",
        "\n": ": the list file names no videos",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(L.ListFileError) as err:
            L.read_list_file(bad, num_classes=12)
        assert str(err.value).startswith(f"{bad}:") and message in str(err.value)


def test_missing_list_file_names_the_file_and_the_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_MINI_KINETICS_ROOT", str(tmp_path))
    (tmp_path / "val.txt").write_text("v.mp4 10 3\n")
    cfg = load_config(None, ["DATA.DATASET", "mini-kinetics"])
    resolved = resolve_dataset(cfg)
    assert resolved.root == tmp_path and resolved.num_classes == 200 and resolved.fmt == "video"
    with pytest.raises(ConfigError) as err:
        L.build_dataset(cfg, "train")
    assert str(err.value) == (
        f"mini-kinetics: training list file not found: {tmp_path / 'train.txt'} "
        "(set DATA.TRAIN_LIST, or DATA.ROOT / $S2D_MINI_KINETICS_ROOT for the folder)"
    )
    val = L.build_dataset(cfg, "val")  # evaluation needs only the validation list
    assert val.num_classes == 200 and val.records == [L.VideoRecord("v.mp4", 10, 3)]

    cfg = load_config(None, ["DATA.DATASET", "mini-kinetics", "DATA.VAL_LIST", str(tmp_path / "nope.txt"),
                             "DATA.NUM_CLASS", "5"])
    with pytest.raises(ConfigError, match=r"validation list file not found: .*nope.txt \(set by DATA.VAL_LIST\)"):
        L.build_dataset(cfg, "val")
    assert resolve_dataset(cfg).num_classes == 5


def test_unknown_dataset_names_the_key_and_the_nearest():
    with pytest.raises(ConfigError, match=r"'kinetics40' in DATA.DATASET; did you mean kinetics400\b"):
        resolve_dataset(load_config(None, ["DATA.DATASET", "kinetics40"]))
    with pytest.raises(ConfigError, match="somethingv1, somethingv2"):
        resolve_dataset(load_config(None, ["DATA.DATASET", "something"]))


# --- decoding and batches ---------------------------------------------------------------------

def test_loader_batches(tiny):
    cfg = _cfg(tiny)
    train = L.build_loader(cfg, "train")
    assert train.dataset.num_classes == 12 and len(train.dataset.records) == 6 and len(train) == 1
    batch = next(iter(train))
    assert batch["frames"].shape == (4, 8, 3, 56, 56) and batch["frames"].dtype == torch.uint8
    assert batch["n_valid"].tolist() == [8] * 4
    assert batch["label"].tolist() == [train.dataset.records[i].label for i in batch["index"].tolist()]
    val = L.build_loader(cfg, "val")
    batches = list(val)
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2]]  # in order, nothing dropped
    assert batches[0]["frames"].shape == (3, 8, 3, 56, 56)


def test_batches_do_not_depend_on_workers_and_change_with_epoch(tiny):
    def first_batches(workers, seed="0"):
        loader = L.build_loader(_cfg(tiny, "DATA.NUM_WORKERS", workers, "RNG_SEED", seed), "train")
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.append(next(iter(loader)))
        return out

    serial, parallel, other = first_batches("0"), first_batches("2"), first_batches("0", "1")
    for a, b in zip(serial, parallel):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["frames"], b["frames"])
    assert not torch.equal(serial[0]["frames"], serial[1]["frames"])
    assert not torch.equal(serial[0]["frames"], other[0]["frames"])



@pytest.mark.parametrize("split", ["train", "val"])
def test_the_decoded_cache_gives_the_decoders_samples_and_decodes_each_video_once(tiny, split, monkeypatch):
    from s2d_fast.data import dataset as D
    calls = []
    decode = D.decode_video
    monkeypatch.setattr(D, "decode_video", lambda path, indices, size: calls.append(path) or decode(path, indices, size))
    plain = L.build_dataset(_cfg(tiny), split)
    cached = L.build_dataset(_cfg(tiny, "DATA.DECODED_CACHE_MB", "64"), split)
    for epoch in range(3):
        for i in range(len(plain)):
            a, b = plain[(epoch, i)], cached[(epoch, i)]
            assert torch.equal(a["frames"], b["frames"]) and a["n_valid"] == b["n_valid"] and a["label"] == b["label"]
    assert len(calls) == 3 * len(plain) + len(plain)  # the plain set every epoch, the cached one once
    assert len(cached.decoded.entries) == len(plain)
    if split == "train":  # every frame kept, as the next epoch draws others
        assert cached.decoded.used == len(plain) * 16 * 64 * 64 * 3
    else:
        assert cached.decoded.used == len(plain) * 8 * 64 * 64 * 3


def test_a_full_decoded_cache_keeps_what_it_has_and_decodes_the_rest(tiny):
    plain = L.build_dataset(_cfg(tiny), "train")
    cached = L.build_dataset(_cfg(tiny, "DATA.DECODED_CACHE_MB", "1"), "train")  # 1 MiB: 5 of the 6 videos
    for epoch in range(2):
        for i in range(len(plain)):
            assert torch.equal(plain[(epoch, i)]["frames"], cached[(epoch, i)]["frames"])
    assert len(cached.decoded.entries) == 5 and cached.decoded.full
    assert cached.decoded.used <= 2**20


def test_the_decoded_cache_budget_cannot_be_negative_and_belongs_to_the_pyav_backend():
    with pytest.raises(ConfigError, match="DATA.DECODED_CACHE_MB"):
        load_config(None, ["DATA.DECODED_CACHE_MB", "-1"])
    with pytest.raises(ConfigError, match=r"DATA.DECODED_CACHE_MB \(64\) keeps frames the PyAV backend decoded"):
        load_config(None, ["DATA.DECODED_CACHE_MB", "64", "DATA.BACKEND", "dali"])
    assert L.choose_backend(load_config(None, ["DATA.DECODED_CACHE_MB", "64"])) == "pyav"  # auto

def test_eval_is_a_centre_crop_of_the_centre_frames(tiny):
    dataset = L.build_dataset(_cfg(tiny), "val")
    sample = dataset[1]
    video, label, _ = S.render_video(0, "val", 1, **SMALL)
    assert sample["label"] == label and sample["index"] == 1 and sample["n_valid"] == 8
    idx, _ = L.segment_indices(16, 8, train=False)
    expected = video[idx, 4:60, 4:60].transpose(0, 3, 1, 2)
    assert np.abs(sample["frames"].numpy().astype(int) - expected).mean() < 8
    assert torch.equal(dataset[1]["frames"], sample["frames"])


def test_frame_folder_with_fewer_frames_than_listed_repeats_the_last(tmp_path):
    root = S.generate_synthetic(tmp_path / "d", 1, 1, fmt="frames", progress=False, workers=1, **SMALL)
    rel = (root / "val.txt").read_text().split()[0]
    records = [L.VideoRecord(rel, 40, 0)]  # the list says 40 frames; there are 16
    dataset = L.VideoDataset(records, root, fmt="frames", num_segments=8,
                             scale_size=64, crop_size=64, train=False, flip=False, num_classes=12)
    sample = dataset[0]
    frames = sample["frames"]
    idx, _ = L.segment_indices(40, 8, train=False)
    full = L.VideoDataset([L.VideoRecord(rel, 16, 0)], root, fmt=dataset.fmt, num_segments=16, scale_size=64,
                          crop_size=64, train=False, flip=False, num_classes=12)[0]["frames"]
    for k, i in enumerate(idx):
        assert torch.equal(frames[k], full[min(i, 15)])
    assert sample["n_valid"] == 8


@pytest.mark.parametrize("fmt", ["webm", "mp4"])
def test_the_video_counts_its_frames_the_list_only_hints(tmp_path, fmt, caplog):
    """A row that lists 40 frames for a 16-frame video reads the 16 (once noted, naming the
    row), the same as a `path label` row and a row with the right count."""
    root = S.generate_synthetic(tmp_path / "d", 1, 1, fmt=fmt, progress=False, workers=1, **SMALL)
    rel = (root / "val.txt").read_text().split()[0]

    def first(num_frames, where=""):
        dataset = L.VideoDataset([L.VideoRecord(rel, num_frames, 0, where)], root, fmt="video",
                                 num_segments=8, scale_size=64, crop_size=64, train=False, flip=False, num_classes=12)
        return dataset, dataset[0]

    right, listed_none = first(16)[1], first(None)[1]
    dataset, wrong = first(40, "val.txt:1")
    for sample in (listed_none, wrong):
        assert torch.equal(sample["frames"], right["frames"]) and sample["n_valid"] == 8
    with caplog.at_level(logging.WARNING):
        dataset.notes.note_all(wrong["notes"], replaced=False)
        dataset.notes.note_all(wrong["notes"], replaced=False)
    said = [r.message for r in caplog.records if "the list says 40 frames" in r.message]
    assert len(said) == 1 and said[0].startswith("val.txt:1:") and "has 16" in said[0]
    assert json.loads(right["notes"]) == [] and dataset.bad_samples == []


def test_seeking_gives_the_same_frames_as_decoding_from_the_start(tmp_path):
    video, _, _ = S.render_video(0, "train", 0, frame_size=64, num_frames=120)
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:  # a keyframe every 16 frames, so a seek lands mid-video
        stream = container.add_stream("libx264", rate=12, options={"g": "16", "crf": "18", "threads": "1"})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        everything = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    wanted = np.array([70, 75, 75, 119])
    assert wanted[0] >= L.SEEK_MIN_FRAMES
    frames, available = L.decode_video(path, wanted, 64)
    assert available is None and np.array_equal(frames, everything[wanted])


def test_unreadable_inputs_name_the_path(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(L.VideoReadError, match="broken.mp4: cannot decode"):
        L.decode_video(bad, np.arange(4), 64)
    with pytest.raises(L.VideoReadError, match="missing: no such frame folder"):
        L.read_frames(tmp_path / "missing", np.arange(4), 64, "img_{:05d}.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(L.VideoReadError, match="no frames named like img_00001.jpg"):
        L.read_frames(tmp_path / "empty", np.arange(4), 64, "img_{:05d}.jpg")
