"""S2DNet: synopsis network, synopsis, f_theta, detail sampler, f_m fusion, detail network.

Data flows one way: uint8 candidates -> SNet -> synopsis (top-k mask M and target s) -> f_theta
(where and how large to look) -> detail sampler (`sampler.py`) -> DNet (with the contextual
feature m fused in) -> prediction restricted to M. `tsm.py` is the uniform baseline it is
measured against.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import backbone_from_config
from .base import VideoModel
from .sampler import DetailSampler, linspace_indices, spatial_parameters, temporal_parameters, uniform_indices
from .theta import ThetaTrunk
from .weights import load_pretrained

logger = logging.getLogger("s2d_fast")


def synopsis(z_s: torch.Tensor, k: int, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k some-hot mask `M (B, A)` and the synopsis target `s`: softmax of z_s within M, or M."""
    top = z_s.topk(min(k, z_s.shape[1]), dim=1).indices
    mask = torch.zeros_like(z_s).scatter_(1, top, 1.0)
    if target == "mask":
        return mask, mask
    probs = torch.softmax(z_s.masked_fill(mask == 0, float("-inf")), dim=1)
    return mask, probs


class ThetaBody(nn.Module):
    """One of f_theta's stacks: 1x1x1 then 3x3x3 3-D convs with ReLU over `(B, C, T_s, h, w)`,
    pooled to a vector.

    `avg`: global average pooling, `(B, channels)`. It forgets where things were: convolutions
    commute with translation, so a head on the pooled vector cannot tell a detail in frame 3
    from the same detail in frame 5. `attention`: a softmax over the T_s x h x w positions
    weights both the features (then scaled to unit length) and the positions' coordinates,
    `(B, channels + 3)`; the head reads where the stack attends as `(t, y, x)`, each in the
    same pre-tanh units as the sampler's centre offsets (`atanh` of the position in [-1, 1]),
    so a unit weight maps the attended position straight onto the window's centre.
    """

    def __init__(self, in_channels: int, channels: int, pool: str = "avg"):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv3d(in_channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = pool
        self.out_features = channels + (3 if pool == "attention" else 0)
        if pool == "attention":
            self.attend = nn.Conv3d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.pool == "avg":
            return y.mean(dim=(2, 3, 4))
        attention = torch.softmax(self.attend(y).flatten(1).float(), dim=1).to(y.dtype)  # (B, N)
        # Unit length: the head sees the features' direction on the scale of the coordinates.
        # Raw ReLU features (128 of order one) made one SGD step move the centre by several
        # times what it moved the coordinates' weights: the sampler wandered and never learned.
        features = F.normalize(torch.einsum("bcn,bn->bc", y.flatten(2), attention), dim=1)
        where = attention @ position_grid(y.shape[2:], y.device, y.dtype)  # (B, 3)
        return torch.cat([features, where], dim=1)


def position_grid(shape, device, dtype) -> torch.Tensor:
    """`(N, 3)` pre-tanh coordinates `atanh(2 (i + 0.5) / n - 1)` of every (t, y, x) cell centre."""
    axes = [torch.atanh(torch.linspace(-1 + 1 / n, 1 - 1 / n, n, device=device, dtype=torch.float32)) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3).to(dtype)


def zero_head(in_features: int, out_features: int) -> nn.Linear:
    """A linear head that starts at zero, so that the initial sampling is the identity."""
    head = nn.Linear(in_features, out_features)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class Fusion(nn.Module):
    """f_m fused into a detail stage: a 1x1 conv over `[feat, m broadcast]` back to the stage's
    channels. m is the same at every pixel, so its half of the conv is a linear map computed
    once per video and added, the same arithmetic without the broadcast copy. Starts as the
    identity so that a pretrained detail network is undisturbed at the start of training."""

    def __init__(self, channels: int, context_dim: int):
        super().__init__()
        self.feat = nn.Conv2d(channels, channels, 1, bias=False)
        self.context = nn.Linear(context_dim, channels)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(channels)[:, :, None, None])
            self.context.weight.zero_()
            self.context.bias.zero_()

    def forward(self, feat: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        shift = self.context(m).repeat_interleave(feat.shape[0] // m.shape[0], dim=0)
        return self.feat(feat) + shift[:, :, None, None]


class ConcatFusion(nn.Module):
    """The authors' fusion (concat-multilevel-3d): `ReLU(W [feat, m broadcast])`, a 1x1 conv
    without bias over the concatenation, replacing the stage's output. Computed as Fusion is,
    the conv split into its feature and context halves (both 1x1 convs, so that every weight of
    it is a conv weight, as the authors' learning-rate groups see it), started as PyTorch starts
    the one conv."""

    def __init__(self, channels: int, context_dim: int):
        super().__init__()
        self.feat = nn.Conv2d(channels, channels, 1, bias=False)
        self.context = nn.Conv2d(context_dim, channels, 1, bias=False)
        whole = torch.empty(channels, channels + context_dim, 1, 1)
        nn.init.kaiming_uniform_(whole, a=math.sqrt(5))  # nn.Conv3d's own init of the whole conv
        with torch.no_grad():
            self.feat.weight.copy_(whole[:, :channels])
            self.context.weight.copy_(whole[:, channels:])

    def forward(self, feat: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        shift = self.context(m[:, :, None, None]).repeat_interleave(feat.shape[0] // m.shape[0], dim=0)
        return torch.relu(self.feat(feat) + shift)


_FUSIONS = {"additive": Fusion, "concat_relu": ConcatFusion}

# Parameter-name prefixes of f_theta's parts, for the sampling stage's learning-rate ratios. The
# trunk counts with time, as the authors file every sampler parameter not named spatial there.
_TIME_BRANCH = ("theta_time.", "time_head.", "theta.trunk.", "theta.time_")
_SPACE_BRANCH = ("theta_space.", "space_head.", "theta.space_")
_SAMPLER_PARTS = ("embed.", "theta_shared.") + _TIME_BRANCH + _SPACE_BRANCH


class S2DNet(VideoModel):
    """The whole model. `forward(frames uint8 (B, T, 3, H, W), n_valid (B,))` returns a dict:
    `z_s` synopsis logits, `z_d` detail logits, `mask` M, `log_prob` the final log-distribution
    over actions (restricted to M), `detail` the detail frames, and the sampler's placement.

    `set_stage` switches between warmup (the sampler fixed) and sampling. Warmup never
    trains f_theta (its heads are still zero there), so the sampling stage starts it fresh and
    one warmup serves every sampling variant, also those whose f_theta differs.
    """

    fresh_in_sampling = _SAMPLER_PARTS
    untrained_in_warmup = _SAMPLER_PARTS

    def __init__(self, cfg, num_classes: int, pretrained: bool = True):
        super().__init__(cfg, num_classes)
        s2d, snet_cfg, dnet_cfg = cfg.S2D, cfg.SNET, cfg.DNET
        self.topk = s2d.TOPK
        self.synopsis_target = s2d.SYNOPSIS_TARGET
        self.snet_loss_weight = s2d.SNET_LOSS_WEIGHT
        self.dnet_loss = s2d.DNET_LOSS
        self.label_smoothing = s2d.DNET_LABEL_SMOOTHING
        self.prediction = s2d.PREDICTION
        self.snet_frames = snet_cfg.NUM_FRAMES
        self.snet_size = snet_cfg.INPUT_SIZE
        self.snet_choice = snet_cfg.FRAME_CHOICE
        self.snet_resize = snet_cfg.RESIZE
        self.dnet_frames = dnet_cfg.NUM_FRAMES
        self.dnet_size = dnet_cfg.INPUT_SIZE
        self.snet_lr_ratio = s2d.SNET_LR_RATIO
        self.sampler_lr_ratio = s2d.SAMPLER_LR_RATIO
        self.stop_gradients = s2d.SAMPLER_STOP_GRADIENTS
        self.sampler_fp32 = s2d.SAMPLER_FP32
        self.temporal_sampling = s2d.TEMPORAL_SAMPLING
        self.spatial_sampling = s2d.SPATIAL_SAMPLING
        self.evidence_weight = s2d.EVIDENCE_LOSS_WEIGHT
        self.evidence_temperature = s2d.EVIDENCE_TEMPERATURE
        self.evidence_zoom = s2d.EVIDENCE_ZOOM
        self.evidence_map = s2d.EVIDENCE_MAP
        self.evidence_frame = s2d.EVIDENCE_FRAME
        self.anchored = s2d.SAMPLER_ANCHOR == "evidence"
        self.warmup_at_evidence = s2d.WARMUP_WINDOW == "evidence"
        # The window's stride at the identity, over the frame's side: the sampler's formulas.
        self.identity_stride = 1 / (self.dnet_size - 1 if s2d.PARAMETERISATION == "authors" else self.dnet_size)

        self.snet = backbone_from_config(snet_cfg, num_classes, self.kernel_backend)
        self.dnet = backbone_from_config(dnet_cfg, 0, self.kernel_backend)
        if pretrained:
            logger.info("SNet starts from %s", load_pretrained(self.snet, snet_cfg.PRETRAINED, prefix="snet.",
                                                              strict=snet_cfg.PRETRAINED_STRICT))
            logger.info("DNet starts from %s", load_pretrained(self.dnet, dnet_cfg.PRETRAINED, prefix="dnet.",
                                                              strict=dnet_cfg.PRETRAINED_STRICT))
        self._build_theta(cfg, num_classes)
        self.sampler = DetailSampler(cfg)
        c_e = self.snet.num_features
        self.context_dropout = nn.Dropout(s2d.CONTEXT_DROPOUT)
        self.context = nn.Sequential(nn.Linear(num_classes + c_e, s2d.CONTEXT_DIM), nn.ReLU(inplace=True))
        fusion = _FUSIONS[s2d.FUSION]
        self.fusion = nn.ModuleDict(
            {str(i): fusion(self.dnet.stage_channels[i - 1], s2d.CONTEXT_DIM) for i in s2d.FUSION_STAGES}
        )
        self.dnet_dropout = nn.Dropout(dnet_cfg.DROPOUT)
        self.dropout_features_only = s2d.CLASSIFIER == "authors"
        self.classifier = nn.Linear(self.dnet.num_features + s2d.CONTEXT_DIM + num_classes, num_classes)
        if s2d.CLASSIFIER == "tsm":
            nn.init.normal_(self.classifier.weight, 0.0, 0.001)
            nn.init.zeros_(self.classifier.bias)
        self.freeze_for_good()

    def _build_theta(self, cfg, num_classes: int) -> None:
        """f_theta: s2d-fast's 3-D conv stacks (an embedding of the synopsis, zero heads), or the
        authors' trunk over every position (the synopsis itself, small random heads)."""
        s2d, c_e = cfg.S2D, self.snet.num_features
        sigma_outputs = 1 if s2d.PREDICT_SIGMA else 0
        self.time_outputs = 2 + sigma_outputs
        self.space_outputs = 4 + sigma_outputs
        self.shared_theta = s2d.SHARED_THETA
        self.trunk_theta = s2d.THETA == "trunk"
        if self.trunk_theta:
            # The authors' sampling stage starts from the whole warmup, f_theta included.
            self.fresh_in_sampling = ()
            side = math.ceil(cfg.SNET.INPUT_SIZE / 32)  # the backbones' stride: ceil-halved five times
            self.theta = ThetaTrunk(c_e + num_classes, (cfg.SNET.NUM_FRAMES, side, side), s2d.THETA_HIDDEN,
                                    cfg.DNET.NUM_FRAMES, time_factor=s2d.TIME_PARAM_INIT_FACTOR,
                                    space_factor=s2d.SPACE_PARAM_INIT_FACTOR,
                                    space_follows_time=s2d.SPACE_FOLLOW_TIME)
            return
        if not (self.temporal_sampling or self.spatial_sampling):
            return
        theta_in, width, pool = c_e + s2d.EMBED_DIM, s2d.THETA_CHANNELS, s2d.THETA_POOL
        self.embed = nn.Linear(num_classes, s2d.EMBED_DIM)
        if self.shared_theta:
            self.theta_shared = ThetaBody(theta_in, width, pool)
        if self.temporal_sampling:
            if not self.shared_theta:
                self.theta_time = ThetaBody(theta_in, width, pool)
            body = self.theta_shared if self.shared_theta else self.theta_time
            self.time_head = zero_head(body.out_features, self.time_outputs)
        if self.spatial_sampling:
            if not self.shared_theta:
                self.theta_space = ThetaBody(theta_in, width, pool)
            body = self.theta_shared if self.shared_theta else self.theta_space
            self.space_head = zero_head(body.out_features, self.space_outputs * cfg.DNET.NUM_FRAMES)

    @property
    def uniform_input(self) -> tuple[int, int]:
        return self.snet_frames, self.snet_size

    # -- stages and what trains -------------------------------------------------------------

    @property
    def snet_frozen(self) -> bool:
        return self.snet_lr_ratio == 0

    @property
    def sampler_held(self) -> bool:
        """`S2D.SAMPLER_LR_RATIO 0`: f_theta does not train, so the sampling stage samples where
        its warmup did (with `S2D.SAMPLER_ANCHOR evidence`, at SNet's evidence) while the networks
        train on."""
        return self.stage == "sampling" and self.sampler_lr_ratio == 0

    def trains(self, name: str) -> bool:
        """warmup: the sampler is fixed and f_theta does not train. sampling: f_theta
        learns. In both, `S2D.SNET_LR_RATIO 0` freezes SNet (BN statistics included); in sampling
        `S2D.SAMPLER_LR_RATIO 0` holds f_theta, and `S2D.TRAIN_ONLY_PARAMS` limits training to
        the parameters whose names start so."""
        if not super().trains(name):
            return False
        if self.stage == "warmup":
            return not (name.startswith(_SAMPLER_PARTS) or (self.snet_frozen and name.startswith("snet.")))
        if self.sampler_held and name.startswith(_SAMPLER_PARTS):
            return False
        if self.train_only:  # the base class kept only their prefixes
            return True
        return not (self.snet_frozen and name.startswith("snet."))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.snet_frozen:
            self.snet.eval()
        return self

    def new_classifiers(self, cfg) -> tuple[str, ...]:
        return tuple(head for head, spec in (("snet.fc.", cfg.SNET.PRETRAINED), ("classifier.", cfg.DNET.PRETRAINED))
                     if spec != "none")

    def lr_ratio(self, name: str, cfg) -> float:
        """SNet at S2D.SNET_LR_RATIO in both stages (the authors multiply SNet's groups by it);
        in warmup otherwise as every model; in sampling f_theta at S2D.SAMPLER_LR_RATIO, times the
        spatial or temporal ratio for its branches."""
        s2d = cfg.S2D
        if self.stage != "sampling":
            ratio = super().lr_ratio(name, cfg)
            return ratio * s2d.SNET_LR_RATIO if name.startswith("snet.") else ratio
        if name.startswith("snet."):
            return s2d.SNET_LR_RATIO
        if not name.startswith(_SAMPLER_PARTS):
            return 1.0
        if name.startswith(_TIME_BRANCH):
            return s2d.SAMPLER_LR_RATIO * s2d.TEMPORAL_LR_RATIO
        if name.startswith(_SPACE_BRANCH):
            return s2d.SAMPLER_LR_RATIO * s2d.SPATIAL_LR_RATIO
        return s2d.SAMPLER_LR_RATIO

    def sampler_parameters(self) -> list[nn.Parameter]:
        """f_theta: what only the sampling stage trains."""
        return [p for n, p in self.named_parameters() if n.startswith(_SAMPLER_PARTS)]

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = s2d_loss(out, labels, self.snet_loss_weight, self.dnet_loss, self.label_smoothing)
        if "loss_evidence" in out:
            losses["loss"] = losses["loss"] + self.evidence_weight * out["loss_evidence"]
            losses["loss_evidence"] = out["loss_evidence"].detach()
        return losses

    # -- SNet's evidence of where the class is ----------------------------------------------------

    def _snet_with_saliency(self, x_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SNet's features and logits, and its saliency: `|gradient x input|` of the top class's
        logit over SNet's input frames, summed over colour and box-smoothed over a seventh of
        the side, `(B, T_s, H, W)`. A low-resolution network's saliency to steer where a sampler
        looks closer, as in Recasens et al. 2018 ("Learning to Zoom"). On the built-in tiles the
        sampler anchored there holds the cue's centre in 90% of its 1.5x windows on cue frames,
        where f_theta pulled toward the class activation map of SNet's 2x2 feature map holds it
        in 71% (bench/RESULTS.md). Costs a backward pass through SNet, also at inference."""
        x_s = x_s.detach().requires_grad_()
        with torch.enable_grad():
            e = self.snet.forward_features(x_s)
            z_s = self.snet.classify(e)
            top = z_s.detach().argmax(1, keepdim=True)
            # The loss reaches through SNet only where SNet trains; frozen, its graph would cost
            # a second backward pass through SNet for a gradient nothing uses.
            keep_graph = torch.is_grad_enabled() and not self.snet_frozen
            (grad,) = torch.autograd.grad(z_s.gather(1, top).sum(), x_s, retain_graph=keep_graph)
        saliency = (grad * x_s.detach()).abs().sum(1, keepdim=True).float()
        side = x_s.shape[-1]
        box = 2 * round(side / 14) + 1
        saliency = F.avg_pool2d(saliency, box, 1, box // 2, count_include_pad=False)
        if not keep_graph:  # only the saliency needed the graph
            e, z_s = e.detach(), z_s.detach()
        return e, z_s, saliency.view(z_s.shape[0], -1, *saliency.shape[-2:])

    def _saliency_evidence(self, saliency: torch.Tensor, n_valid: torch.Tensor, frame_hw: tuple[int, int],
                           frame_weight: torch.Tensor | None = None):
        """`evidence` from SNet's saliency: the comb on SNet's most salient frame (its peak times
        `frame_weight` `(B, T_s)` where given), half a candidate toward the more salient of its
        neighbours when K is even, so that at a stride of one candidate every detail frame is a
        whole candidate, not a blend of two; the window on that frame's most salient point."""
        b, t_s, h, w = saliency.shape
        peak = saliency.flatten(2).amax(2)  # (B, T_s)
        if frame_weight is not None:
            peak = peak * frame_weight
        best = peak.argmax(1)
        pick = uniform_indices if self.snet_choice == "segments" else linspace_indices
        index = pick(n_valid, t_s).to(saliency.dtype)
        rows = torch.arange(b, device=saliency.device)
        center = index[rows, best]
        if self.dnet_frames % 2 == 0:
            before = peak[rows, (best - 1).clamp(min=0)].masked_fill(best == 0, -1.0)
            after = peak[rows, (best + 1).clamp(max=t_s - 1)].masked_fill(best == t_s - 1, -1.0)
            center = center + torch.where(after >= before, 0.5, -0.5)
        flat = saliency[rows, best].flatten(1).argmax(1)
        (height, width) = frame_hw
        xy = torch.stack([((flat % w).to(saliency.dtype) + 0.5) * width / w - 0.5,
                          ((flat // w).to(saliency.dtype) + 0.5) * height / h - 0.5], dim=1)
        return center, torch.ones_like(center), xy

    def _top_class_cam(self, e: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
        """The class activation map of z_s's top class, `(B, T_s, h, w)` in float32: SNet's
        classifier at every (t, y, x) of its feature map `e`; its mean over them is z_s."""
        top = z_s.argmax(1)
        weight, bias = self.snet.fc.weight[top].float(), self.snet.fc.bias[top].float()
        feat = e.float().view(z_s.shape[0], -1, *e.shape[1:])  # (B, T_s, C, h, w)
        return torch.einsum("btchw,bc->bthw", feat, weight) + bias[:, None, None, None]

    def evidence(self, e: torch.Tensor, z_s: torch.Tensor, n_valid: torch.Tensor, frame_hw: tuple[int, int],
                 saliency: torch.Tensor | None = None):
        """Where SNet sees its top class, in the sampler's units (S2D.EVIDENCE_MAP `saliency`:
        from `saliency`, see `_saliency_evidence`, its frames weighed by the top class's
        per-frame logit under S2D.EVIDENCE_FRAME saliency-logit; `cam`:) the class activation
        map of z_s's top class (SNet's classifier at every (t, y, x) of its feature map; their
        mean is z_s), softmaxed over SNet's frames and, weighted by those, over positions.
        Returns the candidate index it centres on `(B,)`, the comb stride that spans its spread
        over time `(B,)` and the window centre on the candidate frames in pixels `(B, 2)` as (x, y)."""
        if saliency is not None:
            frame_weight = None
            if self.evidence_frame == "saliency-logit":
                # The frame SNet reads its class in, by the logit its classifier gives that frame
                # alone. On the built-in tasks it finds much of the cue of the colour group the
                # saliency misses (the one named by the others' absence: balls lime 37% -> 80%),
                # and the saliency finds the cues it misses (bench/RESULTS.md, "The comb's frame").
                frame_logit = self._top_class_cam(e, z_s).flatten(2).mean(2)
                frame_weight = torch.softmax(frame_logit / self.evidence_temperature, dim=1)
            return self._saliency_evidence(saliency, n_valid, frame_hw, frame_weight)
        cam = self._top_class_cam(e, z_s)
        when = torch.softmax(cam.flatten(2).amax(2) / self.evidence_temperature, dim=1)  # (B, T_s)
        pick = uniform_indices if self.snet_choice == "segments" else linspace_indices
        index = pick(n_valid, self.snet_frames).to(when.dtype)
        center = (when * index).sum(1)
        spread = (when * (index - center[:, None]).square()).sum(1).sqrt()
        stride = 2 * spread / max(self.dnet_frames - 1, 1)
        where = torch.softmax((when[:, :, None, None] * cam).sum(1).flatten(1) / self.evidence_temperature, dim=1)
        (h, w), (height, width) = cam.shape[-2:], frame_hw
        ys = (torch.arange(h, device=cam.device, dtype=cam.dtype) + 0.5) * height / h - 0.5
        xs = (torch.arange(w, device=cam.device, dtype=cam.dtype) + 0.5) * width / w - 0.5
        cells = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # (h*w, 2) as (x, y)
        return center, stride, where @ cells

    def _evidence_loss(self, evidence, n_valid, frame_hw, placement: dict) -> torch.Tensor:
        """The distance of f_theta's placement from SNet's evidence (`evidence`, a fixed
        target), as fractions of the video's length and the frame's side: smooth L1, so a far
        placement is pulled at a constant rate."""
        center, stride, xy = (v.float() for v in evidence)
        n = n_valid.float().clamp(min=1)
        terms = []
        if self.temporal_sampling:
            terms.append(F.smooth_l1_loss(placement["t_center"].float() / n, center / n, beta=0.05))
            terms.append(F.smooth_l1_loss(placement["t_stride"].float() / n, stride / n, beta=0.05))
        if self.spatial_sampling:
            centers = placement["centers"].float()
            terms.append(F.smooth_l1_loss(centers / frame_hw[1], xy[:, None, :].expand_as(centers) / frame_hw[1],
                                          beta=0.05))
            if self.evidence_zoom:
                sides = placement["strides"].new_tensor([frame_hw[1], frame_hw[0]]).float()  # (x, y)
                scale = placement["strides"].float() / (self.identity_stride * sides)  # 1 / zoom
                terms.append(F.smooth_l1_loss(scale.log(), torch.full_like(scale, -math.log(self.evidence_zoom)),
                                              beta=0.05))
        return sum(terms)

    # -- forward -------------------------------------------------------------------------------

    def _anchor(self, evidence, n_valid: torch.Tensor, frame_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """S2D.SAMPLER_ANCHOR evidence: the sampler's parameters `(dt, lt)` `(B, 2)` and
        `(dx, dy, lx, ly)` `(B, 4)` that put the comb and every window where SNet's evidence is,
        at S2D.EVIDENCE_ZOOM (at least 1): f_theta's outputs are added to them."""
        center, stride, xy = (v.float() for v in evidence)
        sampler, zoom = self.sampler, max(self.evidence_zoom, 1.0)
        time = temporal_parameters(center, stride, n_valid, self.dnet_frames, sampler.temporal_stride_ratio,
                                   sampler.stride_param)
        dx, lx = spatial_parameters(xy[:, 0], zoom, frame_hw[1], sampler.stride_param)
        dy, ly = spatial_parameters(xy[:, 1], zoom, frame_hw[0], sampler.stride_param)
        return time, torch.stack([dx, dy, lx, ly], dim=1)

    @staticmethod
    def _offset(params: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """`params` with `anchor` added to its leading entries (a log-sigma after them stays)."""
        n = anchor.shape[-1]
        return torch.cat([params[..., :n] + anchor.to(params.dtype), params[..., n:]], dim=-1)

    def _theta(self, e: torch.Tensor, s: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """f_theta: `(dt, lt[, log_sigma])` per video and `(dx, dy, lx, ly[, log_sigma])` per frame."""
        time_params = e.new_zeros(b, self.time_outputs)
        space_params = e.new_zeros(b, self.dnet_frames, self.space_outputs)
        if self.stage == "warmup" or self.sampler_held or not (self.temporal_sampling or self.spatial_sampling):
            return time_params, space_params  # the fixed placement (a trunk's random heads are not zero)
        if self.stop_gradients:
            e = e.detach()
        e5 = e.view(b, -1, *e.shape[1:]).transpose(1, 2)  # (B, C_e, T_s, h, w)
        if self.trunk_theta:
            grid = s[:, :, None, None, None].expand(-1, -1, *e5.shape[2:])
            trunk_time, trunk_space = self.theta(torch.cat([e5, grid.to(e5.dtype)], dim=1))
            return (trunk_time if self.temporal_sampling else time_params,
                    trunk_space if self.spatial_sampling else space_params)
        emb = self.embed(s)[:, :, None, None, None].expand(-1, -1, *e5.shape[2:])
        x = torch.cat([e5, emb], dim=1)
        shared = self.theta_shared(x) if self.shared_theta else None
        if self.temporal_sampling:
            time_params = self.time_head(shared if shared is not None else self.theta_time(x))
        if self.spatial_sampling:
            space = self.space_head(shared if shared is not None else self.theta_space(x))
            space_params = space.view(b, self.dnet_frames, self.space_outputs)
        return time_params, space_params

    def _details(self, frames, n_valid, e, s, b, evidence=None) -> tuple[torch.Tensor, dict]:
        """Where to look (f_theta) and the detail frames there (the sampler); in float32 under
        AMP with S2D.SAMPLER_FP32, as the authors run their sampler."""
        fp32 = torch.autocast(frames.device.type, enabled=False) if self.sampler_fp32 else contextlib.nullcontext()
        with fp32:
            if self.sampler_fp32:
                e, s = e.float(), s.float()
            time_params, space_params = self._theta(e, s, b)
            if evidence is not None:  # an axis f_theta does not learn (an ablation) stays at the anchor too
                time_anchor, space_anchor = self._anchor(evidence, n_valid, frames.shape[-2:])
                time_params = self._offset(time_params, time_anchor)
                space_params = self._offset(space_params, space_anchor[:, None, :])
            fixed = self.stage == "warmup" and evidence is None
            return self.sampler(frames, n_valid, time_params, space_params, fixed=fixed)

    def forward(self, frames: torch.Tensor, n_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        b = frames.shape[0]
        # Synopsis network on T_s uniform candidates at low resolution.
        x_s = self.uniform_frames(frames, n_valid, self.snet_frames, self.snet_size, self.snet_choice,
                                  self.snet_resize)
        samples = self.stage == "sampling" and (self.temporal_sampling or self.spatial_sampling)
        evidence_loss = bool(self.evidence_weight) and self.training and samples
        # The sampler placed at SNet's evidence: f_theta's start in the sampling stage, or the
        # warmup's whole sampling (S2D.WARMUP_WINDOW evidence), so DNet learns on such windows.
        at_evidence = (samples and self.anchored) or (self.stage == "warmup" and self.warmup_at_evidence)
        wants_evidence = evidence_loss or at_evidence
        if wants_evidence and self.evidence_map == "saliency" and not torch.jit.is_tracing():  # flops.saliency_flops
            e, z_s, saliency = self._snet_with_saliency(x_s)
        else:
            e, saliency = self.snet.forward_features(x_s), None
            z_s = self.snet.classify(e)
        g = self.snet.pool(e)
        mask, s = synopsis(z_s, self.topk, self.synopsis_target)
        s = s.detach()  # the synopsis is a target for the detail stage, not a path into SNet's logits

        evidence = None
        if wants_evidence:
            with torch.no_grad():
                evidence = self.evidence(e, z_s, n_valid, frames.shape[-2:], saliency)
        detail, placement = self._details(frames, n_valid, e, s, b, evidence if at_evidence else None)
        extra = {}
        if evidence_loss:
            extra["loss_evidence"] = self._evidence_loss(evidence, n_valid, frames.shape[-2:], placement)

        # Detail network with the contextual feature m fused between stages and at the classifier.
        m = self.context(torch.cat([s, self.context_dropout(g)], dim=1))

        def fuse(stage: int, feat: torch.Tensor) -> torch.Tensor:
            key = str(stage)
            return self.fusion[key](feat, m) if key in self.fusion else feat

        feat = self.dnet.forward_features(detail.flatten(0, 1), fuse)
        pooled = self.dnet.pool(feat)
        if self.dropout_features_only:
            z_d = self.classifier(torch.cat([self.dnet_dropout(pooled), m, s.to(m.dtype)], dim=1))
        else:
            z_d = self.classifier(self.dnet_dropout(torch.cat([pooled, m, s.to(m.dtype)], dim=1)))
        # The final distribution in float32 whatever the autocast: its sums and ranks are reported.
        logits = z_d.float()
        if self.prediction == "masked":
            logits = logits.masked_fill(mask == 0, float("-inf"))
        return {"z_s": z_s, "z_d": z_d, "mask": mask, "log_prob": torch.log_softmax(logits, dim=1), "detail": detail,
                **placement, **extra}


def s2d_loss(
    out: dict[str, torch.Tensor], labels: torch.Tensor, snet_weight: float, dnet_loss: str = "masked_nll",
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The detail loss plus the weighted CE of the synopsis.

    `masked_nll`: NLL of the top-k-restricted prediction. In training the ground truth joins
    the mask M, so that the detail network learns to pick the true action among the synopsis'
    candidates even when the synopsis missed it, and the loss stays finite. `ce`: plain
    cross-entropy on z_d, with `label_smoothing` (the authors': 0.1).
    """
    if dnet_loss == "ce":
        loss_detail = F.cross_entropy(out["z_d"], labels, label_smoothing=label_smoothing)
    else:
        mask = out["mask"].scatter(1, labels[:, None], 1.0)
        log_prob = torch.log_softmax(out["z_d"].masked_fill(mask == 0, float("-inf")), dim=1)
        loss_detail = F.nll_loss(log_prob, labels)
    loss_snet = F.cross_entropy(out["z_s"], labels)
    loss = loss_detail + snet_weight * loss_snet
    return {"loss": loss, "loss_detail": loss_detail.detach(), "loss_snet": loss_snet.detach()}
