"""The authors' S2DNet as AUTHORS-S2DNET.md writes its formulas, written for the tests from that
text alone (no code of theirs), slowly and plainly: loops where the spec has sums, float64.

It reads the weights of an s2d-fast S2DNet built with the authors' components (configs/mini_kinetics)
and recomputes each stage of one video, so that a test can compare the model stage by stage.
The backbones' own layers are taken from the model (they are checked against TSM elsewhere);
everything S2DNet adds around them is recomputed here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def snet_frames(n: int, k: int) -> list[int]:
    """Section 3: floor((n - 1) i / (k - 1)), i = 0..k-1."""
    return [math.floor((n - 1) * i / (k - 1)) for i in range(k)]


def nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """Section 3: output pixel k reads input pixel floor(k * in / out), rows and columns."""
    rows = [math.floor(k * x.shape[-2] / size) for k in range(size)]
    cols = [math.floor(k * x.shape[-1] / size) for k in range(size)]
    return x[..., rows, :][..., cols]


def bn_eval(x, bn) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - bn.running_mean.double().view(shape)) / torch.sqrt(bn.running_var.double().view(shape) + bn.eps) \
        * bn.weight.double().view(shape) + bn.bias.double().view(shape)


def trunk(feature_map: torch.Tensor, somehot: torch.Tensor, theta) -> dict[str, torch.Tensor]:
    """Section 5: [features ; M] over (T, h, w) -> conv 1x1x1 + bias -> ReLU -> BN3d -> flatten
    (C, T, H, W) -> FC BN ReLU -> FC BN ReLU = h; bias-free heads, the spatial ones on [h, o_t, l_t]."""
    t_s, c, hh, ww = feature_map.shape
    x = torch.cat([feature_map.permute(1, 0, 2, 3), somehot.view(-1, 1, 1, 1).expand(-1, t_s, hh, ww)], 0)
    conv, _, bn3, _, fc1, bn1, _, fc2, bn2, _ = theta.trunk
    y = torch.einsum("oc,cthw->othw", conv.weight.double().flatten(1), x) + conv.bias.double().view(-1, 1, 1, 1)
    y = bn_eval(torch.relu(y)[None], bn3)[0]
    h = torch.relu(bn_eval((fc1.weight.double() @ y.reshape(-1) + fc1.bias.double())[None], bn1))
    h = torch.relu(bn_eval((fc2.weight.double() @ h[0] + fc2.bias.double())[None], bn2))[0]
    o_t = theta.time_offset.weight.double() @ h
    l_t = theta.time_stride.weight.double() @ h
    h_s = torch.cat([h, o_t, l_t])
    return {"h": h, "o_t": o_t, "l_t": l_t, "offsets": theta.space_offset.weight.double() @ h_s,
            "log_strides": theta.space_stride.weight.double() @ h_s}


def floored(weights: list[float]) -> list[float]:
    """Section 6: each weight over max(their sum, 1e-7)."""
    total = max(sum(weights), 1e-7)
    return [w / total for w in weights]


def temporal(o_t: float, l_t: float, n: int, k: int, sigma: float = 1.0, time_range: float = 1.0):
    """Section 6, time: centre, stride, positions and the weights F_t[i][j] over the n frames."""
    c = (n - 1) / 2 + math.tanh(o_t) * (n - 1) / 2
    d = time_range * n / (k - 1) * math.exp(l_t)
    mu = [c + (j - (k - 1) / 2) * d for j in range(k)]
    weights = [floored([math.exp(-((i - m) ** 2) / (2 * sigma**2)) for i in range(n)]) for m in mu]
    return c, d, mu, weights  # weights[j][i]


def spatial_bank(o: float, log_stride: float, size: int, out: int, sigma: float = 1.0, stride: float | None = None):
    """Section 6, space, one axis of one detail frame: F[k][a] over the size pixels. `stride`
    replaces the formula's (the warmup's fixed 1 px)."""
    c = (size - 1) / 2 + math.tanh(o) * (size - 1) / 2
    d = size / (out - 1) * math.exp(log_stride) if stride is None else stride
    mu = [c + (q - (out - 1) / 2) * d for q in range(out)]
    return c, d, torch.tensor([floored([math.exp(-((a - m) ** 2) / (2 * sigma**2)) for a in range(size)]) for m in mu],
                              dtype=torch.float64)


def detail_frames(video: torch.Tensor, t_weights, params, out: int, fixed: bool = False) -> torch.Tensor:
    """Z_j = sum_i F_t[i][j] X_i over the normalised frames, then Y_j = F_y Z_j F_x^T per channel.
    `params[j] = (o_x, o_y, l_x, l_y)`; `fixed`: the warmup's centre and 1-px stride."""
    n, _, h, w = video.shape
    details = []
    for j, frame_weights in enumerate(t_weights):
        z = sum(wt * video[i].double() for i, wt in enumerate(frame_weights))
        o_x, o_y, l_x, l_y = (0.0, 0.0, 0.0, 0.0) if fixed else params[j]
        _, _, fx = spatial_bank(o_x, l_x, w, out, stride=1.0 if fixed else None)
        _, _, fy = spatial_bank(o_y, l_y, h, out, stride=1.0 if fixed else None)
        details.append(torch.einsum("sh,chw,uw->csu", fy, z, fx))
    return torch.stack(details)


def fuse(feat: torch.Tensor, ctx: torch.Tensor, fusion) -> torch.Tensor:
    """Section 7: ReLU of the 1x1 conv without bias over [feature map ; ctx broadcast]."""
    weight = torch.cat([fusion.feat.weight.double().flatten(1), fusion.context.weight.double().flatten(1)], 1)
    c, hh, ww = feat.shape[1:]
    x = torch.cat([feat.double(), ctx.double().view(1, -1, 1, 1).expand(feat.shape[0], -1, hh, ww)], 1)
    return torch.relu(torch.einsum("oc,nchw->nohw", weight, x))


def classifier(per_frame: torch.Tensor, ctx: torch.Tensor, somehot: torch.Tensor, linear) -> torch.Tensor:
    """Section 8: per frame [feature ; ctx ; top-k] through the Linear, averaged over frames."""
    rows = torch.cat([per_frame.double(), ctx.double().expand(per_frame.shape[0], -1),
                      somehot.double().expand(per_frame.shape[0], -1)], 1)
    return (rows @ linear.weight.double().T + linear.bias.double()).mean(0)


def loss(dnet_logits: torch.Tensor, snet_logits: torch.Tensor, label: int, smoothing=0.1, snet_weight=0.1) -> float:
    """Section 10: CE with label smoothing on DNet + 0.1 x CE on SNet."""
    a = dnet_logits.shape[-1]
    logp = F.log_softmax(dnet_logits.double(), -1)
    target = torch.full((a,), smoothing / a, dtype=torch.float64)
    target[label] += 1 - smoothing
    return float(-(target * logp).sum() + snet_weight * -F.log_softmax(snet_logits.double(), -1)[label])
