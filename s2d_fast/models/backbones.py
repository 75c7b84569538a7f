"""TSM backbones (Lin et al., ICCV 2019) on top of torchvision's ResNets and MobileNetV2.

Every backbone maps `(B, T, 3, H, W)` to `(B, num_classes)` by averaging frame logits (TSM's
"avg" consensus) and exposes its stages, so that S2DNet can read the last feature map and fuse
contextual features between stages. `BACKBONES` is the one table of what each architecture is:
its builder, the widths of its stages, its ImageNet weights and how checkpoints name its layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from s2d_fast.config.checks import BACKBONE_STAGES
from s2d_fast.kernels import temporal_shift


class TemporalShift(nn.Module):
    """Shifts 1/fold_div of the channels one frame each way, then applies the wrapped layer.

    Named `net` inside, as in the TSM reference, so that its checkpoints' keys
    (`layer1.0.conv1.net.weight`) map one to one.
    """

    def __init__(self, net: nn.Module, num_segments: int, fold_div: int = 8, backend: str | None = None):
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.num_segments, self.fold_div, backend=self.backend))

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"


class TSMBackbone(nn.Module):
    """A 2-D CNN whose residual branches shift in time; frame logits are averaged per video.

    `num_classes=0` builds a feature extractor with no classifier. `temporal_pool` halves the
    frames after the first stage (max over time, as TSM); `partial_bn` keeps every BN layer but
    the first in eval mode with frozen affine parameters while training (TSM's partial BN).
    """

    def __init__(
        self,
        arch: str,
        stem: nn.Module,
        stages: list[nn.Module],
        stage_channels: list[int],
        num_segments: int,
        num_classes: int,
        dropout: float,
        temporal_pool: bool = False,
        partial_bn: bool = False,
    ):
        super().__init__()
        self.arch = arch
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(stage_channels)
        self.num_features = stage_channels[-1]
        self.num_segments = num_segments
        self.temporal_pool = temporal_pool
        self.out_segments = num_segments // 2 if temporal_pool else num_segments
        self.partial_bn = partial_bn
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else None
        if self.fc is not None:  # TSM's init of the new classifier
            nn.init.normal_(self.fc.weight, 0.0, 0.001)
            nn.init.zeros_(self.fc.bias)
        if partial_bn:
            for bn in self._frozen_bns():
                bn.weight.requires_grad_(False)
                bn.bias.requires_grad_(False)

    def _frozen_bns(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)][1:]

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.partial_bn:
            for bn in self._frozen_bns():
                bn.eval()
        return self

    def forward_features(
        self,
        x: torch.Tensor,
        after_stage: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`(B*T, 3, H, W)` frames to the last feature map `(B*T', C, h, w)` (T' = out_segments).

        `after_stage(i, feat)` (stages counted from 1) may replace a stage's output, which is how
        S2DNet fuses its contextual features into the detail network.
        """
        x = self.stem(x)
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i == 1 and self.temporal_pool:
                x = _pool_time(x, self.num_segments)
            if after_stage is not None:
                x = after_stage(i, x)
        return x

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        """`(B*T', C, h, w)` to per-video pooled features `(B, C)` (mean over space and time)."""
        pooled = feat.mean(dim=(2, 3))
        return pooled.view(-1, self.out_segments, pooled.shape[1]).mean(dim=1)

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        """`(B*T', C, h, w)` to video logits: frame logits averaged (linear, so pool first)."""
        return self.fc(self.dropout(self.pool(feat)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        if t != self.num_segments:
            raise ValueError(f"backbone built for {self.num_segments} frames, got {t}")
        return self.classify(self.forward_features(frames.flatten(0, 1)))


def _pool_time(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """TSM's temporal pooling: max over 3 frames with stride 2, so T frames become T // 2."""
    nt, c, h, w = x.shape
    x = x.view(nt // num_segments, num_segments, c, h, w).transpose(1, 2)
    x = F.max_pool3d(x, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
    return x.transpose(1, 2).reshape(-1, c, h, w)


def _shift_resnet(net: torchvision.models.ResNet, num_segments: int, shift_div: int, backend, temporal_pool: bool) -> None:
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]
    # TSM shifts every other block of ResNet-101 (its layer3 has 23 blocks) and every block
    # of the shallower ResNets; after temporal pooling the later stages see half the frames.
    every = 2 if len(net.layer3) >= 23 else 1
    for stage, layer in enumerate(layers):
        segments = num_segments // 2 if temporal_pool and stage > 0 else num_segments
        for i, block in enumerate(layer):
            if i % every == 0:
                block.conv1 = TemporalShift(block.conv1, segments, shift_div, backend)


def _resnet(arch: str):
    def build(num_segments, shift_div, shift, backend, temporal_pool):
        net = getattr(torchvision.models, arch)()
        if shift:
            _shift_resnet(net, num_segments, shift_div, backend, temporal_pool)
        return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), [net.layer1, net.layer2, net.layer3, net.layer4]

    return build


def _mobilenet_v2(num_segments, shift_div, shift, backend, temporal_pool):
    if temporal_pool:
        raise ValueError("temporal pooling is defined for the ResNet backbones only, as in TSM")
    features = torchvision.models.mobilenet_v2().features
    if shift:
        for block in features:
            # TSM shifts the input of the expansion conv of every block with a shortcut.
            if isinstance(block, torchvision.models.mobilenetv2.InvertedResidual) and block.use_res_connect:
                block.conv[0] = TemporalShift(block.conv[0], num_segments, shift_div, backend)
    # Stages end where the resolution halves next: strides 4, 8, 16, 32.
    bounds = [(2, 4), (4, 7), (7, 14), (14, 19)]
    return features[0:2], [features[a:b] for a, b in bounds]


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable  # (num_segments, shift_div, shift, backend, temporal_pool) -> (stem, stages)
    stage_channels: tuple[int, ...]  # output width of each stage
    imagenet: torchvision.models.WeightsEnum  # torchvision's ImageNet weights of the same network
    layout: str  # how torchvision and TSM name its layers: "resnet" or "mobilenetv2" (weights.py)


_W = torchvision.models
BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(_resnet("resnet18"), (64, 128, 256, 512), _W.ResNet18_Weights.IMAGENET1K_V1, "resnet"),
    "resnet34": BackboneSpec(_resnet("resnet34"), (64, 128, 256, 512), _W.ResNet34_Weights.IMAGENET1K_V1, "resnet"),
    "resnet50": BackboneSpec(_resnet("resnet50"), (256, 512, 1024, 2048), _W.ResNet50_Weights.IMAGENET1K_V1, "resnet"),
    "resnet101": BackboneSpec(_resnet("resnet101"), (256, 512, 1024, 2048), _W.ResNet101_Weights.IMAGENET1K_V1,
                              "resnet"),
    "mobilenetv2": BackboneSpec(_mobilenet_v2, (24, 32, 96, 1280), _W.MobileNet_V2_Weights.IMAGENET1K_V1,
                                "mobilenetv2"),
}
assert all(len(spec.stage_channels) == BACKBONE_STAGES for spec in BACKBONES.values())


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def build_backbone(
    arch: str,
    num_segments: int,
    num_classes: int,
    shift_div: int = 8,
    *,
    dropout: float = 0.5,
    shift: bool = True,
    backend: str | None = None,
    temporal_pool: bool = False,
    partial_bn: bool = False,
) -> TSMBackbone:
    """The TSM network `arch` for clips of `num_segments` frames, randomly initialised
    (`s2d_fast.models.tsm_backbone` also loads weights). `num_classes=0` gives a feature extractor."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; available: {', '.join(available_backbones())}")
    if temporal_pool and num_segments % 2:
        raise ValueError(f"temporal pooling halves the frames: num_segments must be even, got {num_segments}")
    spec = BACKBONES[arch]
    stem, stages = spec.build(num_segments, shift_div, shift, backend, temporal_pool)
    return TSMBackbone(arch, stem, stages, spec.stage_channels, num_segments, num_classes, dropout, temporal_pool,
                       partial_bn)


def backbone_from_config(net_cfg, num_classes: int, kernel_backend: str = "auto") -> TSMBackbone:
    """The SNET or DNET section of a config as a backbone (weights are loaded separately)."""
    return build_backbone(
        net_cfg.ARCH,
        net_cfg.NUM_FRAMES,
        num_classes,
        net_cfg.SHIFT_DIV,
        dropout=net_cfg.DROPOUT,
        shift=net_cfg.SHIFT,
        backend=kernel_backend,
        temporal_pool=net_cfg.TEMPORAL_POOL,
        partial_bn=net_cfg.PARTIAL_BN,
    )
