"""Pretrained weights: torchvision's ImageNet checkpoints from the local torch hub cache."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

_IMAGENET = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    "mobilenetv2": torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
}


def imagenet_file(arch: str) -> tuple[Path, str]:
    """Where torch hub caches `arch`'s ImageNet weights, and the URL they come from."""
    url = _IMAGENET[arch].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch`: from the hub cache, else downloaded into it.

    Offline with no cached file, the error says which file to place where.
    """
    path, url = imagenet_file(arch)
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except OSError as err:
            raise FileNotFoundError(
                f"ImageNet weights for {arch} are not cached and could not be downloaded ({err}); "
                f"download {url} and place it at {path}"
            ) from None
    return torch.load(path, map_location="cpu", weights_only=True)
