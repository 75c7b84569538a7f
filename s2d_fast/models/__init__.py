"""Models: TSM backbones (a registry of builders) and S2DNet on top of them."""

from .s2dnet import S2DNet, build_model, s2d_loss, synopsis
from .tsm import TemporalShift, TSMBackbone, available_backbones, tsm_backbone

__all__ = [
    "S2DNet",
    "TSMBackbone",
    "TemporalShift",
    "available_backbones",
    "build_model",
    "s2d_loss",
    "synopsis",
    "tsm_backbone",
]
