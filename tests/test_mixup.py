"""MIXUP: mixup blends each video with its partner, CutMix pastes the partner's box into every
frame, and the loss is weighted between the two labels by the share each video keeps."""

import pytest
import torch
import torch.nn.functional as F

from s2d_fast.config import ConfigError, load_config
from s2d_fast.engine.mixup import mix_batch, mixed_loss


def _mix(*pairs):
    return load_config(None, ["MIXUP.ENABLE", "True", *pairs]).MIXUP


def _frames(seed=0):
    return torch.randint(0, 256, (5, 3, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_mixup_blends_each_video_with_its_partner():
    frames = _frames()
    torch.manual_seed(1)
    mixed, order, lam = mix_batch(frames, _mix("MIXUP.CUTMIX_ALPHA", "0"))
    assert mixed.dtype == torch.uint8 and mixed.shape == frames.shape
    assert 0 < lam < 1 and sorted(order.tolist()) == list(range(5)) and not torch.equal(order, torch.arange(5))
    expected = (lam * frames.double() + (1 - lam) * frames[order].double()).round()
    assert (mixed.double() - expected).abs().max() <= 1  # float32 rounding at the half levels


def test_cutmix_pastes_one_box_of_the_partner_into_every_frame():
    frames = _frames()
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, order, lam = mix_batch(frames, _mix("MIXUP.ALPHA", "0"))
        if torch.equal(order, torch.arange(5)):
            continue  # every video its own partner: nothing to see
        assert ((mixed == frames).all(2) | (mixed == frames[order]).all(2)).all()
        changed = (mixed != frames).any(2).any(1).any(0)  # (H, W): where videos took their partner's pixels
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        if len(rows):  # one box, the same in every frame of every video
            assert changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert lam == pytest.approx(1 - changed.double().mean().item())  # the share each video keeps


def test_no_mixing_when_off_or_unlucky():
    frames = _frames()
    for cfg in (load_config(None, []).MIXUP, _mix("MIXUP.PROB", "0")):
        mixed, order, lam = mix_batch(frames, cfg)
        assert mixed is frames and order is None and lam == 1.0


def test_loss_is_weighted_between_the_two_labels():
    logits = torch.randn(5, 12)
    labels = torch.tensor([0, 3, 5, 7, 11])
    order = torch.tensor([2, 0, 1, 4, 3])

    def loss(out, y):
        value = F.cross_entropy(out["z"], y)
        return {"loss": value, "loss_detail": value.detach()}

    mixed = mixed_loss(loss, {"z": logits}, labels, order, 0.3)
    expected = 0.3 * F.cross_entropy(logits, labels) + 0.7 * F.cross_entropy(logits, labels[order])
    assert mixed["loss"] == pytest.approx(float(expected)) and mixed["loss_detail"] == pytest.approx(float(expected))
    assert mixed_loss(loss, {"z": logits}, labels, None, 1.0)["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))


@pytest.mark.parametrize("pairs, message", [
    (("MIXUP.ALPHA", "-0.1"), "MIXUP.ALPHA must be >= 0"),
    (("MIXUP.CUTMIX_ALPHA", "-1"), "MIXUP.CUTMIX_ALPHA must be >= 0"),
    (("MIXUP.PROB", "1.5"), "MIXUP.PROB is a probability, between 0 and 1; got 1.5"),
    (("MIXUP.SWITCH_PROB", "-0.5"), "MIXUP.SWITCH_PROB is a probability"),
    (("MIXUP.ENABLE", "True", "MIXUP.ALPHA", "0", "MIXUP.CUTMIX_ALPHA", "0"), "MIXUP.ENABLE True mixes nothing"),
])
def test_bad_mixup_settings_are_named(pairs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, list(pairs))
