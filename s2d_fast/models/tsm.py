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
        self.mil_weight = cfg.DNET.MIL_LOSS_WEIGHT
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
        feat = self.dnet.forward_features(x)
        z_d = self.dnet.classify(feat)
        out = {"z_d": z_d, "log_prob": torch.log_softmax(z_d.float(), dim=1)}
        if self.mil_weight and self.training:
            # The classifier at every (frame, cell): linear, so their mean is z_d (without dropout).
            cells = feat.view(z_d.shape[0], -1, *feat.shape[1:]).permute(0, 1, 3, 4, 2).flatten(1, 3)
            out["z_best_cell"] = self.dnet.fc(cells).amax(1)
        return out

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(out["z_d"], labels)
        losses = {"loss": loss, "loss_detail": loss.detach()}
        if "z_best_cell" in out:
            z = out["z_best_cell"].float()
            target = F.one_hot(labels, z.shape[1]).to(z.dtype)
            mil = F.binary_cross_entropy_with_logits(z, target, reduction="sum") / z.shape[0]
            losses["loss"] = loss + self.mil_weight * mil
            losses["loss_mil"] = mil.detach()
        return losses
