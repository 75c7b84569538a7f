"""BatchNorm folded into the layer before it, for inference: the network computes the same
function (in eval mode, up to rounding) with one pass less over every normalised activation.

A BN is folded where the code that runs it is known to apply it straight to one layer's output:
a `Conv2d` (possibly inside a `TemporalShift`, which shifts the conv's input, not its output)
or a `Linear` followed by the BN in an `nn.Sequential`, and the `convN` -> `bnN` pairs of
torchvision's residual blocks. The BN becomes an `nn.Identity`. Under torch.compile with weight
freezing Inductor folds the same pairs itself; eager inference needs this.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from .backbones import TemporalShift

_BLOCK_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _fused(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """`layer` with `bn` folded in, or None where the pair does not fold."""
    if isinstance(layer, TemporalShift):
        inner = _fused(layer.net, bn)
        if inner is None:
            return None
        layer.net = inner
        return layer
    if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == layer.out_channels:
        return fuse_conv_bn_eval(layer, bn)
    if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and bn.num_features == layer.out_features:
        return fuse_linear_bn_eval(layer, bn)
    return None


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every foldable BN of `model` (which must be in eval mode: the folded layers use the
    running statistics); returns how many were folded."""
    if model.training:
        raise RuntimeError("fold_batchnorm needs the model in eval mode: it folds the running statistics")
    folded = 0
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                fused = _fused(module._modules[first], module._modules[second])
                if fused is not None:
                    module._modules[first], module._modules[second] = fused, nn.Identity()
                    folded += 1
        elif isinstance(module, (BasicBlock, Bottleneck)):
            for conv, bn in _BLOCK_PAIRS:
                if hasattr(module, conv):
                    fused = _fused(getattr(module, conv), getattr(module, bn))
                    if fused is not None:
                        setattr(module, conv, fused)
                        setattr(module, bn, nn.Identity())
                        folded += 1
    return folded
