"""Models: TSM backbones, S2DNet and the uniform baseline, created through one registry."""

from .authors import load_authors_checkpoint
from .backbones import BACKBONES, TemporalShift, TSMBackbone, available_backbones
from .base import VideoModel
from .fold import fold_batchnorm
from .registry import build_model, list_models, model_name, register_model, tsm_backbone
from .s2dnet import S2DNet, s2d_loss, synopsis
from .tsm import TSM

__all__ = [
    "BACKBONES",
    "S2DNet",
    "TSM",
    "TSMBackbone",
    "TemporalShift",
    "VideoModel",
    "available_backbones",
    "build_model",
    "fold_batchnorm",
    "list_models",
    "load_authors_checkpoint",
    "model_name",
    "register_model",
    "s2d_loss",
    "synopsis",
    "tsm_backbone",
]
