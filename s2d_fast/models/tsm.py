"""The uniform baseline: plain TSM on the K detail frames a uniform sampler would take, whole.

It reads the same uint8 candidates as S2DNet and spends the same detail budget (DNET.ARCH on
DNET.NUM_FRAMES frames of DNET.INPUT_SIZE), so that the two compare at equal cost.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .backbones import backbone_from_config
from .base import VideoModel
from .weights import load_pretrained

logger = logging.getLogger("s2d_fast")


class TSM(VideoModel):
    """`forward(frames uint8 (B, T, 3, H, W), n_valid (B,))` -> `{"z_d", "log_prob"}`."""

    def __init__(self, cfg, num_classes: int, pretrained: bool = True):
        super().__init__(cfg, num_classes)
        self.dnet_frames = cfg.DNET.NUM_FRAMES
        self.dnet_size = cfg.DNET.INPUT_SIZE
        self.dnet = backbone_from_config(cfg.DNET, num_classes, self.kernel_backend)
        if pretrained:
            logger.info("DNet starts from %s", load_pretrained(self.dnet, cfg.DNET.PRETRAINED, prefix="dnet."))
        self.freeze_for_good()

    @property
    def uniform_input(self) -> tuple[int, int]:
        return self.dnet_frames, self.dnet_size

    def new_classifiers(self, cfg) -> tuple[str, ...]:
        return ("dnet.fc.",) if cfg.DNET.PRETRAINED != "none" else ()

    def forward(self, frames: torch.Tensor, n_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.uniform_frames(frames, n_valid, self.dnet_frames, self.dnet_size)
        z_d = self.dnet.classify(self.dnet.forward_features(x))
        return {"z_d": z_d, "log_prob": torch.log_softmax(z_d.float(), dim=1)}

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(out["z_d"], labels)
        return {"loss": loss, "loss_detail": loss.detach()}
