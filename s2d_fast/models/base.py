"""What the engine asks of every registered model, and the parts S2DNet and plain TSM share.

A model maps uint8 candidates `(B, T, 3, H, W)` and their valid counts `n_valid (B,)` to a dict
with at least `log_prob` (B, A), the final log-distribution over actions. It knows its own
loss, which of its parameters each training stage trains and at which learning-rate ratio, and
which uniform frames it reads first (for the pictures of where it looked).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s2d_fast.kernels import gather_frames

from .sampler import uniform_indices


class VideoModel(nn.Module):
    """The common interface; subclasses build their networks and define `forward` and `loss`."""

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.kernel_backend = cfg.KERNELS.BACKEND
        self.stage = "warmup"
        self.register_buffer("mean", torch.tensor(cfg.DATA.MEAN, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.DATA.STD, dtype=torch.float32), persistent=False)
        self._always_frozen: frozenset[str] = frozenset()

    def freeze_for_good(self) -> None:
        """Record the parameters the backbones froze at construction (partial BN): no stage trains them."""
        self._always_frozen = frozenset(n for n, p in self.named_parameters() if not p.requires_grad)

    # -- stages and what trains ----------------------------------------------------------------

    @property
    def uniform_input(self) -> tuple[int, int]:
        """(frames, side) of the uniform frames the model reads first."""
        raise NotImplementedError

    def trains(self, name: str) -> bool:
        """Whether the parameter `name` trains in the current stage."""
        return name not in self._always_frozen

    def set_stage(self, stage: str) -> None:
        """Switch to the warmup or the sampling stage: sets which parameters train."""
        self.stage = stage
        for name, p in self.named_parameters():
            p.requires_grad_(self.trains(name))
        self.train(self.training)

    def lr_ratio(self, name: str, cfg) -> float:
        """Learning-rate factor of the parameter `name` in the current stage (before TSM's bias
        and BN rules)."""
        return 1.0

    def lr_ratios(self, cfg) -> dict[str, float]:
        return {name: self.lr_ratio(name, cfg) for name, _ in self.named_parameters()}

    def load_warmup(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Start the sampling stage from a warmup checkpoint of the same model."""
        self.load_state_dict(state_dict)

    def sampler_parameters(self) -> list[nn.Parameter]:
        """What only the sampling stage trains (none for a model without a sampler)."""
        return []

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """`{"loss": the scalar to minimise, ...: detached parts to log}`."""
        raise NotImplementedError

    # -- the shared first step of every forward -------------------------------------------------

    def uniform_frames(self, frames: torch.Tensor, n_valid: torch.Tensor, k: int, size: int) -> torch.Tensor:
        """k uniform candidates, normalised and resized to `size`: `(B*k, 3, size, size)`."""
        index = uniform_indices(n_valid, k)
        x = gather_frames(frames, index, mean=self.mean, std=self.std, backend=self.kernel_backend).flatten(0, 1)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x
