"""S2DNet: synopsis network, synopsis, f_theta, detail sampler, f_m fusion, detail network.

Data flows one way (DESIGN.md section 1): uint8 candidates -> SNet -> synopsis (top-k mask M
and target s) -> f_theta (where and how large to look) -> detail sampler -> DNet (with the
contextual feature m fused in) -> prediction restricted to M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s2d_fast.kernels import gather_frames

from .sampler import DetailSampler, uniform_indices
from .tsm import TSMBackbone, tsm_backbone


def synopsis(z_s: torch.Tensor, k: int, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k some-hot mask `M (B, A)` and the synopsis target `s`: softmax of z_s within M, or M."""
    top = z_s.topk(min(k, z_s.shape[1]), dim=1).indices
    mask = torch.zeros_like(z_s).scatter_(1, top, 1.0)
    if target == "mask":
        return mask, mask
    probs = torch.softmax(z_s.masked_fill(mask == 0, float("-inf")), dim=1)
    return mask, probs


class ThetaStack(nn.Module):
    """f_theta's 3-D conv stack: 1x1x1 then 3x3x3, ReLU, global pool, then a zero-init head."""

    def __init__(self, in_channels: int, channels: int, out_features: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv3d(in_channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(channels, out_features)
        # Zero heads make the initial sampling the identity: uniform frames, whole images.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


class Fusion(nn.Module):
    """Concatenate m over a feature map, 1x1 conv back to its channels; starts as the identity
    so that a pretrained detail network is undisturbed at the start of training."""

    def __init__(self, channels: int, context_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + context_dim, channels, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :channels, 0, 0] = torch.eye(channels)
            self.conv.bias.zero_()

    def forward(self, feat: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        m = m.repeat_interleave(feat.shape[0] // m.shape[0], dim=0)
        m = m[:, :, None, None].expand(-1, -1, feat.shape[2], feat.shape[3])
        return self.conv(torch.cat([feat, m], dim=1))


class S2DNet(nn.Module):
    """The whole model. `forward(frames uint8 (B, T, 3, H, W), n_valid (B,))` returns a dict:
    `z_s` synopsis logits, `z_d` detail logits, `mask` M, `log_prob` the final log-distribution
    over actions (restricted to M), `detail` the detail frames, and sampler statistics.

    With `detail_sampling=False` it is the uniform baseline: plain TSM on K uniform whole frames.
    """

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        s2d, snet_cfg, dnet_cfg = cfg.S2D, cfg.SNET, cfg.DNET
        self.num_classes = num_classes
        self.detail_sampling = s2d.DETAIL_SAMPLING
        self.topk = s2d.TOPK
        self.synopsis_target = s2d.SYNOPSIS_TARGET
        self.snet_frames = snet_cfg.NUM_FRAMES
        self.snet_size = snet_cfg.INPUT_SIZE
        self.dnet_frames = dnet_cfg.NUM_FRAMES
        self.dnet_size = dnet_cfg.INPUT_SIZE
        self.sampler_frozen = True  # set_stage("sampling") lets f_theta move the sampler
        self.register_buffer("mean", torch.tensor(cfg.DATA.MEAN, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.DATA.STD, dtype=torch.float32), persistent=False)

        if not self.detail_sampling:
            self.dnet = tsm_backbone(
                dnet_cfg.ARCH, dnet_cfg.NUM_FRAMES, num_classes, dnet_cfg.SHIFT_DIV, dropout=dnet_cfg.DROPOUT
            )
            return

        self.snet = tsm_backbone(
            snet_cfg.ARCH, snet_cfg.NUM_FRAMES, num_classes, snet_cfg.SHIFT_DIV, dropout=snet_cfg.DROPOUT
        )
        self.dnet = tsm_backbone(dnet_cfg.ARCH, dnet_cfg.NUM_FRAMES, 0, dnet_cfg.SHIFT_DIV)
        c_e = self.snet.num_features
        self.embed = nn.Linear(num_classes, s2d.EMBED_DIM)
        self.theta_time = ThetaStack(c_e + s2d.EMBED_DIM, s2d.THETA_CHANNELS, 2)
        self.theta_space = ThetaStack(c_e + s2d.EMBED_DIM, s2d.THETA_CHANNELS, 4 * dnet_cfg.NUM_FRAMES)
        self.sampler = DetailSampler(
            dnet_cfg.NUM_FRAMES, dnet_cfg.INPUT_SIZE, cfg.DATA.MEAN, cfg.DATA.STD,
            s2d.TEMPORAL_SIGMA, s2d.SPATIAL_SIGMA, s2d.TEMPORAL_STRIDE_RATIO,
        )
        self.context = nn.Sequential(nn.Linear(num_classes + c_e, s2d.CONTEXT_DIM), nn.ReLU(inplace=True))
        self.fusion = nn.ModuleDict(
            {str(i): Fusion(self.dnet.stage_channels[i - 1], s2d.CONTEXT_DIM) for i in s2d.FUSION_STAGES}
        )
        self.dnet_dropout = nn.Dropout(dnet_cfg.DROPOUT)
        self.classifier = nn.Linear(self.dnet.num_features + s2d.CONTEXT_DIM + num_classes, num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)
        nn.init.zeros_(self.classifier.bias)

    def set_stage(self, stage: str) -> None:
        """warmup: the sampler sits at the identity and f_theta does not train; sampling: it learns."""
        self.sampler_frozen = stage == "warmup"
        for p in self.sampler_parameters():
            p.requires_grad_(not self.sampler_frozen)

    def sampler_parameters(self) -> list[nn.Parameter]:
        """f_theta: what the sampling stage trains with its own learning rate."""
        if not self.detail_sampling:
            return []
        return [*self.embed.parameters(), *self.theta_time.parameters(), *self.theta_space.parameters()]

    def _uniform_frames(self, frames, n_valid, k: int, size: int) -> torch.Tensor:
        """k uniform candidates, normalised and resized to `size`: `(B*k, 3, size, size)`."""
        index = uniform_indices(n_valid, k)
        x = gather_frames(frames, index, mean=self.mean, std=self.std).flatten(0, 1)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward(self, frames: torch.Tensor, n_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        b = frames.shape[0]
        if not self.detail_sampling:
            x = self._uniform_frames(frames, n_valid, self.dnet_frames, self.dnet_size)
            z_d = self.dnet.classify(self.dnet.forward_features(x))
            return {"z_d": z_d, "log_prob": torch.log_softmax(z_d, dim=1)}

        # Synopsis network on T_s uniform candidates at low resolution.
        x_s = self._uniform_frames(frames, n_valid, self.snet_frames, self.snet_size)
        e = self.snet.forward_features(x_s)
        z_s = self.snet.classify(e)
        g = self.snet.pool(e)
        mask, s = synopsis(z_s, self.topk, self.synopsis_target)
        s = s.detach()  # the synopsis is a target for the detail stage, not a path into SNet's logits

        # f_theta: where and at which scale to look.
        if self.sampler_frozen:
            time_params = z_s.new_zeros(b, 2)
            space_params = z_s.new_zeros(b, self.dnet_frames, 4)
        else:
            e5 = e.view(b, self.snet_frames, *e.shape[1:]).transpose(1, 2)  # (B, C_e, T_s, h, w)
            emb = self.embed(s)[:, :, None, None, None].expand(-1, -1, *e5.shape[2:])
            theta_in = torch.cat([e5, emb], dim=1)
            time_params = self.theta_time(theta_in)
            space_params = self.theta_space(theta_in).view(b, self.dnet_frames, 4)
        detail, stats = self.sampler(frames, n_valid, time_params, space_params)

        # Detail network with the contextual feature m fused between stages and at the classifier.
        m = self.context(torch.cat([s, g], dim=1))

        def fuse(stage: int, feat: torch.Tensor) -> torch.Tensor:
            key = str(stage)
            return self.fusion[key](feat, m) if key in self.fusion else feat

        feat = self.dnet.forward_features(detail.flatten(0, 1), fuse)
        pooled = self.dnet.pool(feat)
        z_d = self.classifier(self.dnet_dropout(torch.cat([pooled, m, s], dim=1)))
        log_prob = torch.log_softmax(z_d.masked_fill(mask == 0, float("-inf")), dim=1)
        return {
            "z_s": z_s,
            "z_d": z_d,
            "mask": mask,
            "log_prob": log_prob,
            "detail": detail,
            **stats,
        }


def s2d_loss(out: dict[str, torch.Tensor], labels: torch.Tensor, snet_weight: float) -> dict[str, torch.Tensor]:
    """Masked NLL of the final prediction plus the weighted CE of the synopsis.

    In training the ground truth joins the mask M: the detail network learns to pick the true
    action among the synopsis' candidates even when the synopsis missed it, and the loss stays
    finite.
    """
    if "mask" not in out:  # the uniform baseline
        loss = F.cross_entropy(out["z_d"], labels)
        return {"loss": loss, "loss_detail": loss.detach()}
    mask = out["mask"].scatter(1, labels[:, None], 1.0)
    log_prob = torch.log_softmax(out["z_d"].masked_fill(mask == 0, float("-inf")), dim=1)
    loss_detail = F.nll_loss(log_prob, labels)
    loss_snet = F.cross_entropy(out["z_s"], labels)
    loss = loss_detail + snet_weight * loss_snet
    return {"loss": loss, "loss_detail": loss_detail.detach(), "loss_snet": loss_snet.detach()}


def build_model(cfg, num_classes: int) -> S2DNet:
    return S2DNet(cfg, num_classes)


__all__ = ["S2DNet", "TSMBackbone", "build_model", "s2d_loss", "synopsis"]
