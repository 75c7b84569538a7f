"""Multi-view testing: clip indices, crop boxes, batch shapes; the training crop and flip."""

import numpy as np
import pytest
import torch

from s2d_fast.config import ConfigError, load_config
from s2d_fast import data as L
from s2d_fast.data import synthetic as S
from s2d_fast.data import transforms as X


def test_one_clip_is_the_segment_centres():
    for n in (3, 8, 48, 301):
        assert np.array_equal(L.clip_indices(n, 8, 1)[0], L.segment_indices(n, 8, train=False)[0])


def test_clips_split_each_segment_evenly():
    idx, n_valid = L.clip_indices(48, 4, 2)  # segments of 12 frames: points 3 and 9 of each
    assert idx.tolist() == [3, 15, 27, 39, 9, 21, 33, 45] and n_valid == 4
    short, n_valid = L.clip_indices(3, 4, 2)
    assert short.tolist() == [0, 1, 2, 2, 0, 1, 2, 2] and n_valid == 3


def test_eval_boxes_centre_and_three_along_the_long_side():
    assert X.eval_boxes(80, 64, 56, 1) == ((4, 12, 56, 56),)
    assert X.eval_boxes(80, 64, 56, 3) == ((4, 0, 56, 56), (4, 24, 56, 56), (4, 12, 56, 56))
    assert X.eval_boxes(64, 80, 56, 3) == ((0, 4, 56, 56), (24, 4, 56, 56), (12, 4, 56, 56))


def test_multi_scale_crop_takes_tsm_sizes_and_grid_offsets():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        y, x, h, w = X.multi_scale_box(340, 256, 224, rng)
        assert h in (256, 224, 192, 168) and w in (256, 224, 192, 168)
        sizes = [256, 224, 192, 168]
        assert abs(sizes.index(h) - sizes.index(w)) <= X.MAX_DISTORT
        assert y % ((256 - h) // 4 or 1) == 0 and 0 <= y <= 256 - h and 0 <= x <= 340 - w
        seen.add((h, w))
    assert len(seen) == 10  # 4 + 2 * 3 pairs within one scale step


def test_apply_boxes_resizes_and_flips():
    frames = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    out = X.apply_boxes(frames, ((0, 0, 4, 4), (2, 2, 4, 4)), 4, flip=True)
    assert out.shape == (2, 2, 3, 4, 4) and out.dtype == torch.uint8
    assert torch.equal(out[1, 0], torch.from_numpy(frames[0, 2:6, 2:6]).permute(2, 0, 1).flip(-1))
    grown = X.apply_boxes(frames, ((0, 0, 4, 4),), 8, flip=False)
    assert grown.shape == (1, 2, 3, 8, 8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return S.generate_synthetic(tmp_path_factory.mktemp("v") / "d", 4, 2, progress=False, workers=1,
                                frame_size=64, num_frames=16)


def _cfg(root, *pairs):
    return load_config(None, ["DATA.ROOT", str(root), "DATA.NUM_CANDIDATES", "4", "SNET.NUM_FRAMES", "4",
                              "DNET.NUM_FRAMES", "4", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "48",
                              "DATA.NUM_WORKERS", "0", "DATA.BACKEND", "pyav", "TEST.BATCH_SIZE", "2", *pairs])


@pytest.mark.parametrize("clips,crops", [(1, 1), (2, 1), (1, 3), (2, 3)])
def test_multi_view_batches(tiny, clips, crops):
    batch = next(iter(L.build_loader(_cfg(tiny, "DATA.NUM_CLIPS", str(clips), "DATA.NUM_CROPS", str(crops)), "val")))
    views = clips * crops
    expected = (2, 4, 3, 48, 48) if views == 1 else (2, views, 4, 3, 48, 48)
    assert batch["frames"].shape == expected and batch["n_valid"].tolist() == [4, 4]
    if clips == 1 and crops == 3:  # views are clip-major; each clip's last crop is the centre crop
        single = L.build_dataset(_cfg(tiny), "val")[0]["frames"]
        assert torch.equal(batch["frames"][0, 2], single)
        assert not torch.equal(batch["frames"][0, 0], single)


def test_num_crops_must_be_one_or_three(tiny):
    with pytest.raises(ConfigError, match="DATA.NUM_CROPS must be 1 or 3; got 2"):
        L.build_dataset(_cfg(tiny, "DATA.NUM_CROPS", "2"), "val")


def test_flip_label_map_swaps_mirrored_classes(tiny, tmp_path):
    (tmp_path / "map.txt").write_text("0 3\n")
    dataset = L.build_dataset(_cfg(tiny, "DATA.FLIP_LABEL_MAP", str(tmp_path / "map.txt")), "train")
    assert dataset.flip and dataset.flip_label_map == {0: 3, 3: 0}  # synthetic does not flip, the map turns it on
    labels = {dataset[(epoch, 0)]["label"] for epoch in range(12)}
    assert labels == {0, 3}  # video 0 is class 0; flipped it is class 3
    off = L.build_dataset(_cfg(tiny, "DATA.FLIP", "off"), "train")
    assert not off.flip
