"""A minimal re-implementation of the TSM reference network's module layout (Lin et al., ICCV
2019, mit-han-lab/temporal-shift-module), written for the tests from the paper and the layout
its checkpoints show: a TSN wrapper whose `base_model` is a torchvision ResNet (or TSM's own
MobileNetV2) with the shifted convs wrapped as `.net`, the last layer replaced by dropout and a
`new_fc` on top, frame logits averaged. Its state dicts have the keys of TSM's checkpoints.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    """Channels [0, fold) take frame t+1, [fold, 2 fold) frame t-1, zeros beyond the clip."""
    nt, c, h, w = x.shape
    x = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    out = x.clone()
    out[:, :, : 2 * fold] = 0
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    return out.view(nt, c, h, w)


class Shifted(nn.Module):
    """Shift the input in time, then apply `net` (the name TSM's checkpoints carry)."""

    def __init__(self, net: nn.Module, num_segments: int, fold_div: int = 8):
        super().__init__()
        self.net, self.num_segments, self.fold_div = net, num_segments, fold_div

    def forward(self, x):
        return self.net(shift(x, self.num_segments, self.fold_div))


def conv_bn(inp, oup, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


def conv_1x1_bn(inp, oup):
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """TSM's block: `conv` is one flat Sequential, not torchvision's nested conv-bn-relu6."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        dw = [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
        ]
        pw_linear = [nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        if expand_ratio == 1:
            self.conv = nn.Sequential(*dw, *pw_linear)
        else:
            pw = [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
            self.conv = nn.Sequential(*pw, *dw, *pw_linear)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """TSM's MobileNetV2 (width 1): conv_bn, 17 inverted residuals, conv_1x1_bn, classifier."""

    # expand ratio t, channels c, repeats n, first stride s
    SETTINGS = [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
    ]

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, inp = [conv_bn(3, 32, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(conv_1x1_bn(inp, 1280))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(3).mean(2))


class TSN(nn.Module):
    """TSM's TSN wrapper: `(B, T, 3, H, W)` to `(B, num_classes)`, frame logits averaged."""

    def __init__(self, arch: str, num_segments: int, num_classes: int, fold_div: int = 8, dropout: float = 0.5):
        super().__init__()
        self.num_segments = num_segments
        if arch == "mobilenetv2":
            self.base_model = MobileNetV2()
            for block in self.base_model.features:
                # Expanding blocks with a shortcut shift the input of their first (1x1) conv.
                if isinstance(block, InvertedResidual) and len(block.conv) == 8 and block.use_res_connect:
                    block.conv[0] = Shifted(block.conv[0], num_segments, fold_div)
            self.base_model.classifier = nn.Dropout(dropout)
            features = 1280
        else:
            self.base_model = getattr(torchvision.models, arch)()
            # A ResNet whose third stage has 23 or more blocks (ResNet-101) shifts every other
            # block of every stage.
            every = 2 if len(self.base_model.layer3) >= 23 else 1
            for name in ("layer1", "layer2", "layer3", "layer4"):
                for i, block in enumerate(getattr(self.base_model, name)):
                    if i % every == 0:
                        block.conv1 = Shifted(block.conv1, num_segments, fold_div)
            features = self.base_model.fc.in_features
            self.base_model.fc = nn.Dropout(dropout)
        self.new_fc = nn.Linear(features, num_classes)

    def forward(self, video):
        b = video.shape[0]
        logits = self.new_fc(self.base_model(video.flatten(0, 1)))
        return logits.view(b, self.num_segments, -1).mean(1)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BN statistics and affine terms included, so that any tensor
    loaded into the wrong place changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def checkpoint(model: TSN, epoch: int = 50, arch: str = "resnet50") -> dict:
    """What TSM's training script saves after DataParallel: `module.`-prefixed, with metadata."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    return {"epoch": epoch, "arch": arch, "state_dict": state, "best_prec1": 71.2}
