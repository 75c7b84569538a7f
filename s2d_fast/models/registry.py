"""The registry of models (timm's way): a name per model, one `build_model(cfg)` to create any.

`s2dnet` is S2DNet, `tsm` the uniform baseline; `S2D.DETAIL_SAMPLING` chooses between them.
`tsm_backbone` builds a bare TSM backbone, with ImageNet weights if asked.
"""

from __future__ import annotations

from typing import Callable

from .backbones import TSMBackbone, build_backbone
from .base import VideoModel
from .s2dnet import S2DNet
from .tsm import TSM
from .weights import load_pretrained

_MODELS: dict[str, Callable[..., VideoModel]] = {}


def register_model(name: str, builder: Callable[..., VideoModel]) -> None:
    """Make `builder(cfg, num_classes, pretrained=...)` the model called `name`."""
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is registered already")
    _MODELS[name] = builder


register_model("s2dnet", S2DNet)
register_model("tsm", TSM)


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_name(cfg) -> str:
    """The registered model a config describes."""
    return "s2dnet" if cfg.S2D.DETAIL_SAMPLING else "tsm"


def build_model(cfg, num_classes: int, *, pretrained: bool = True) -> VideoModel:
    """The model of `cfg` for `num_classes` actions. `pretrained=False` skips SNET.PRETRAINED /
    DNET.PRETRAINED: for a model whose backbones are about to come from a checkpoint of it
    (resume, the sampling stage, evaluation), so that those files are neither read for nothing
    nor needed where the checkpoint is used."""
    return _MODELS[model_name(cfg)](cfg, num_classes, pretrained=pretrained)


def tsm_backbone(
    arch: str,
    num_segments: int,
    num_classes: int,
    shift_div: int = 8,
    pretrained: bool = False,
    **options,
) -> TSMBackbone:
    """The TSM network `arch` for clips of `num_segments` frames (`build_backbone`'s options:
    dropout, shift, backend, temporal_pool, partial_bn). `num_classes=0` gives a feature
    extractor. `pretrained` loads torchvision's ImageNet weights (from the local torch hub cache
    when offline) into it, the classifier excepted."""
    net = build_backbone(arch, num_segments, num_classes, shift_div, **options)
    if pretrained:
        load_pretrained(net, "imagenet")
    return net
