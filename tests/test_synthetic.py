"""The built-in dataset: what the videos show, that the detail survives encoding, determinism."""

import colorsys
import json

import numpy as np
import pytest

from s2d_fast.config import CHOICES, load_config
from s2d_fast.data import synthetic as S
from s2d_fast.data.datasets import class_names, resolve_dataset
from s2d_fast.data import VideoDataset, read_list_file

SMALL = {"frame_size": 64, "num_frames": 16}  # tiny videos: the tile keeps its real 20-24 px size


def _whiteish(video: np.ndarray) -> np.ndarray:
    return video.min(axis=-1) >= 235


_PATTERNS = {"tiles": S._MARKS, "balls": S._BALL_MARKS}


def _classify_detail(patch: np.ndarray, task: str = "tiles") -> str:
    """Template match of the pattern at the centre of a cue's box (ink is white or black)."""
    side = patch.shape[0]
    lo = (side - S.MARK_SPAN) // 2 if task == "tiles" else side // 2 - S.MARK_SPAN // 2
    box = patch[lo:lo + S.MARK_SPAN, lo:lo + S.MARK_SPAN].astype(float).mean(-1)
    box -= box.mean()
    marks = _PATTERNS[task]
    scores = {d: abs((box * (m - m.mean())).sum()) for d, m in marks.items()}
    return max(scores, key=scores.get)


def _saturated(video: np.ndarray) -> np.ndarray:
    """Pixels vivid enough to be a group colour: no background or distractor pixel is."""
    rgb = video.astype(float) / 255
    top, bottom = rgb.max(-1), rgb.min(-1)
    return (top >= 0.7) & (top - bottom >= 0.6 * top)


def _decode_all(root, split, fmt, num_frames):
    records = read_list_file(root / f"{split}.txt", len(S.CLASSES))
    dataset = VideoDataset(records, root, fmt="frames" if fmt == "frames" else "video", num_segments=num_frames,
                           scale_size=SMALL["frame_size"], crop_size=SMALL["frame_size"], train=False, flip=False,
                           num_classes=len(S.CLASSES))
    return records, [dataset[i] for i in range(len(dataset))]


def test_classes_are_groups_times_details_and_balanced():
    assert len(S.CLASSES) == len(S.GROUPS) * len(S.DETAILS) == 12
    assert S.CLASSES[:3] == ("red-rows", "red-columns", "red-checks")
    counts = np.bincount([S.label_of(i) for i in range(100)], minlength=len(S.CLASSES))
    assert counts.max() - counts.min() <= 1
    # Every pattern is half ink: after a downscale only its shape, not its mass, differs.
    assert len({int(m.sum()) for m in S._MARKS.values()}) == 1


def test_render_is_pure_and_seeded():
    a, label, info = S.render_video(3, "train", 7, **SMALL)
    b, label_b, info_b = S.render_video(3, "train", 7, **SMALL)
    assert a.dtype == np.uint8 and a.shape == (16, 64, 64, 3)
    assert np.array_equal(a, b) and label == label_b == S.label_of(7) and info == info_b
    assert info["class_name"] == S.CLASSES[label]
    assert not np.array_equal(a, S.render_video(4, "train", 7, **SMALL)[0])
    assert not np.array_equal(a, S.render_video(3, "val", 7, **SMALL)[0])


@pytest.mark.parametrize("geometry", [SMALL, {}], ids=["64px-16f", "default"])
def test_cue_is_brief_small_and_the_only_white_thing(geometry):
    for index in range(4):
        video, _, info = S.render_video(0, "val", index, **geometry)
        frames, size = video.shape[0], video.shape[1]
        start, length = info["start"], info["length"]
        assert 2 <= length <= frames // 6  # a minority of frames: a uniform sample of 4 often misses it
        white = _whiteish(video)
        shown = np.zeros(frames, bool)
        shown[start:start + length] = True
        assert not white[~shown].any(), "only the cue tile is white, and it shows only in its window"
        for k, (y, x, side) in enumerate(info["boxes"]):
            frame_white = white[start + k]
            border = side * side - (side - 2 * S.BORDER) ** 2
            assert frame_white[y:y + side, x:x + side].sum() == frame_white.sum() >= border
        if not geometry:  # at 128 px: under 7% of the frame, and 7-8 px at synopsis resolution (1/4)
            side = info["boxes"][0][2]
            assert side * side / (size * size) < 0.07 and side / 4 <= 8


def test_quarter_resolution_shows_the_group_not_the_detail():
    """Area-averaged 4x down, tiles of one group differ far less than tiles of different groups."""
    def tile(label):
        group, detail = S.CLASSES[label].split("-")
        return S._cue_tile(np.random.default_rng(0), group, detail).astype(float)  # same size and jitter

    def down(t):
        n = t.shape[0] // 4 * 4
        return t[:n, :n].reshape(n // 4, 4, n // 4, 4, 3).mean((1, 3))

    tiles = [tile(label) for label in range(len(S.CLASSES))]
    pairs = [(a, b) for a in range(12) for b in range(a + 1, 12)]
    same = [p for p in pairs if p[0] // 3 == p[1] // 3]
    other = [p for p in pairs if p[0] // 3 != p[1] // 3]
    within = max(np.abs(down(tiles[a]) - down(tiles[b])).mean() for a, b in same)
    across = min(np.abs(down(tiles[a]) - down(tiles[b])).mean() for a, b in other)
    assert across > 2 * within
    # At full resolution the pattern is a clear, exact difference.
    for a, b in same:
        assert (np.abs(tiles[a] - tiles[b]).max(-1) > 150).sum() >= 20


def test_the_tasks_are_the_configs_choices_with_twelve_balanced_classes():
    assert tuple(S.TASKS) == CHOICES["SYNTHETIC.TASK"]
    assert S.TASKS["balls"][:3] == ("orange-slash", "orange-backslash", "orange-rings")
    assert all(len(classes) == 12 for classes in S.TASKS.values())
    assert not set(S.TASKS["tiles"]) & set(S.TASKS["balls"])
    with pytest.raises(ValueError, match="task must be one of tiles, balls; got 'squares'"):
        S.render_video(0, "val", 0, task="squares", **SMALL)


@pytest.mark.parametrize("task", list(S.TASKS))
def test_group_of_reads_the_colour_group_from_the_class_names(task):
    classes = S.TASKS[task]
    groups = [name.split("-")[0] for name in classes]
    names = list(dict.fromkeys(groups))  # the groups in label order
    assert S.group_of(np.arange(len(classes)), task).tolist() == [names.index(g) for g in groups]


@pytest.mark.parametrize("geometry", [SMALL, {}], ids=["64px-16f", "default"])
def test_balls_light_up_briefly_and_only_the_lit_ball_is_vivid(geometry):
    for index in range(4):
        video, label, info = S.render_video(0, "val", index, task="balls", **geometry)
        assert info["class_name"] == S.BALL_CLASSES[label] and info["detail"] in S.BALL_DETAILS
        start, length = info["start"], info["length"]
        assert 2 <= length <= video.shape[0] // 6
        vivid = _saturated(video)
        shown = np.zeros(video.shape[0], bool)
        shown[start:start + length] = True
        assert not vivid[~shown].any(), "the ball is muted like the others until it lights up"
        path = []
        for k, (y, x, side) in enumerate(info["boxes"]):
            assert 28 <= side <= 32
            frame_vivid = vivid[start + k]
            assert frame_vivid[y:y + side, x:x + side].sum() == frame_vivid.sum() >= side * side // 3
            assert _classify_detail(video[start + k, y:y + side, x:x + side], "balls") == info["detail"]
            path.append((y, x))
        assert np.abs(np.diff(path, axis=0)).max() <= 3  # it keeps moving while lit, at most 2.5 px a frame
    a, _, _ = S.render_video(3, "train", 7, task="balls", **SMALL)
    assert np.array_equal(a, S.render_video(3, "train", 7, task="balls", **SMALL)[0])
    assert not np.array_equal(a[:, :8], S.render_video(3, "train", 7, **SMALL)[0][:, :8])


def test_a_quarter_resolution_ball_shows_its_group_not_its_pattern():
    def ball(label):
        group, detail = S.BALL_CLASSES[label].split("-")
        return S._lit_ball(np.random.default_rng(0), 16, group, detail).astype(float)

    def down(t):
        return t.reshape(8, 4, 8, 4, 3).mean((1, 3))

    balls = [ball(label) for label in range(12)]
    pairs = [(a, b) for a in range(12) for b in range(a + 1, 12)]
    within = max(np.abs(down(balls[a]) - down(balls[b])).mean() for a, b in pairs if a // 3 == b // 3)
    across = min(np.abs(down(balls[a]) - down(balls[b])).mean() for a, b in pairs if a // 3 != b // 3)
    assert across > 2 * within
    assert len({colorsys.rgb_to_hsv(*(np.array(f) / 255))[0].round(1) for f, _ in S.BALL_GROUPS.values()}) == 4


@pytest.mark.parametrize("fmt,task", [(fmt, "tiles") for fmt in S.FORMATS] + [("webm", "balls")])
def test_every_format_decodes_to_the_rendered_frames(tmp_path, fmt, task):
    root = S.generate_synthetic(tmp_path / "d", 3, 2, seed=1, fmt=fmt, progress=False, workers=1, task=task,
                                **SMALL)
    assert (root / "classes.txt").read_text().split() == list(S.TASKS[task])
    meta = json.loads((root / "meta.json").read_text())
    assert meta["version"] == S.VERSION and meta["format"] == fmt and meta["num_frames"] == 16
    assert meta["task"] == task
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left"
    # DATA.ROOT naming a generated folder: its meta.json, not SYNTHETIC.FORMAT, says how to read it.
    resolved = resolve_dataset(load_config(None, ["DATA.ROOT", str(root), "SYNTHETIC.FORMAT", "mp4"]))
    assert resolved.fmt == ("frames" if fmt == "frames" else "video") and resolved.train_list == root / "train.txt"
    for split, n in (("train", 3), ("val", 2)):
        records, samples = _decode_all(root, split, fmt, SMALL["num_frames"])
        assert len(records) == n
        for index, (record, sample) in enumerate(zip(records, samples)):
            video, label, info = S.render_video(1, split, index, task=task, **SMALL)
            assert record.label == label and record.num_frames == 16
            decoded = sample["frames"].permute(0, 2, 3, 1).numpy()
            assert decoded.shape == video.shape and sample["n_valid"] == 16
            assert np.abs(decoded.astype(int) - video).mean() < 8
            # The 2-px pattern survives the codec: read back, it still names the detail.
            for k, (y, x, side) in enumerate(info["boxes"]):
                assert _classify_detail(decoded[info["start"] + k, y:y + side, x:x + side], task) == info["detail"]


def test_same_seed_same_decoded_videos(tmp_path):
    a = S.generate_synthetic(tmp_path / "a", 2, 1, seed=5, progress=False, workers=1, **SMALL)
    b = S.generate_synthetic(tmp_path / "b", 2, 1, seed=5, progress=False, workers=1, **SMALL)
    c = S.generate_synthetic(tmp_path / "c", 2, 1, seed=6, progress=False, workers=1, **SMALL)
    for name in ("train.txt", "val.txt", "classes.txt", "meta.json"):
        assert (a / name).read_text() == (b / name).read_text()
    frames = {k: [s["frames"].numpy() for s in _decode_all(root, "train", "webm", 16)[1]] for k, root in
              (("a", a), ("b", b), ("c", c))}
    assert all(np.array_equal(x, y) for x, y in zip(frames["a"], frames["b"]))
    assert not any(np.array_equal(x, y) for x, y in zip(frames["a"], frames["c"]))


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    real = S._make_one
    monkeypatch.setattr(S, "_make_one", failing)
    with pytest.raises(KeyboardInterrupt):
        S.generate_synthetic(tmp_path / "d", 3, 1, progress=False, workers=1, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        S.generate_synthetic(tmp_path, 1, 1, progress=False, workers=1, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_ensure_synthetic_generates_once_then_reuses(tmp_path, monkeypatch):
    cfg = load_config(None, [
        "DATA.CACHE_DIR", str(tmp_path), "SYNTHETIC.NUM_TRAIN", "3", "SYNTHETIC.NUM_VAL", "2",
        "SYNTHETIC.FORMAT", "frames", "SYNTHETIC.FRAME_SIZE", "64", "SYNTHETIC.NUM_FRAMES", "12",
    ])
    root = S.ensure_synthetic(cfg)
    assert root.parent == tmp_path and "frames" in root.name and (root / "meta.json").is_file()
    assert len(read_list_file(root / "train.txt")) == 3 and len(read_list_file(root / "val.txt")) == 2

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated a dataset that was already there")

    monkeypatch.setattr(S, "generate_synthetic", no_generation)
    assert S.ensure_synthetic(cfg) == root
    resolved = resolve_dataset(cfg)
    assert resolved.root == root and resolved.fmt == "frames" and resolved.num_classes == 12
    assert not resolved.spec.flip


def test_each_task_has_its_own_cache_and_old_tiles_folders_are_reused(tmp_path):
    pairs = ["DATA.CACHE_DIR", str(tmp_path), "SYNTHETIC.NUM_TRAIN", "2", "SYNTHETIC.NUM_VAL", "1",
             "SYNTHETIC.FORMAT", "frames", "SYNTHETIC.FRAME_SIZE", "64", "SYNTHETIC.NUM_FRAMES", "12"]
    tiles = S.ensure_synthetic(load_config(None, pairs))
    balls_cfg = load_config(None, pairs + ["SYNTHETIC.TASK", "balls"])
    assert not S.is_cached(balls_cfg)
    balls = S.ensure_synthetic(balls_cfg)
    assert balls != tiles and "balls" in balls.name and "balls" not in tiles.name
    assert (balls / "classes.txt").read_text().split() == list(S.BALL_CLASSES)
    assert class_names(balls_cfg, 12)[0] == "orange-slash" and class_names(load_config(None, pairs), 12)[0] == "red-rows"
    # A tiles folder written before there were two tasks has no "task" in its meta.json.
    meta = json.loads((tiles / "meta.json").read_text())
    del meta["task"]
    (tiles / "meta.json").write_text(json.dumps(meta))
    assert S.is_cached(load_config(None, pairs))


def test_prepare_synthetic_writes_the_task_asked_for(tmp_path):
    from click.testing import CliRunner
    from s2d_fast.cli import main

    out = tmp_path / "balls"
    result = CliRunner().invoke(main, ["prepare", "synthetic", "--out", str(out), "--num-train", "1", "--num-val", "1",
                                       "--format", "frames", "--task", "balls"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "meta.json").read_text())["task"] == "balls"
    assert (out / "classes.txt").read_text().split() == list(S.BALL_CLASSES)
    wrong = CliRunner().invoke(main, ["prepare", "synthetic", "--out", str(tmp_path / "x"), "--task", "squares"])
    assert wrong.exit_code == 2 and "'squares' is not one of 'tiles', 'balls'" in wrong.output
