"""FLOPs and parameters of S2DNet's parts, of the uniform baseline and of plain TSM backbones.

Counted with fvcore's `FlopCountAnalysis` on one video, in inference: one multiply-add is one
flop, as the TSM paper reports (TSM-ResNet-50, 8 frames at 224: 33 GFLOPs). S2DNet is counted
in its sampling-stage forward, f_theta active, in eval mode without gradients, so the detail
sampler takes its inference fast path.

fvcore traces with `torch.jit.trace`, which records each kernel as its custom op
(`s2d_fast::temporal_shift`, ...); `FLOP_HANDLES` tells fvcore what each costs, through its own
`set_op_handle`: the temporal shift and the index check move data and cost nothing; a frame
gather is one multiply-add per tap and value of the frames it reads; the fused inference
sampler is counted as that gather (its bilinear window, like `grid_sample`, has no handle).
`count_flops(model, inputs)` is `FlopCountAnalysis` with those handles. Ops fvcore has no
handle for (element-wise ops, softmax, top-k, means) count as zero and are listed under
`skipped_ops`.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections import Counter

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts a loss with torch.jit.script at import, which torch now deprecates.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

from s2d_fast.config import num_candidates

from .registry import build_model, model_name, tsm_backbone
from .s2dnet import S2DNet


def _gather_flop(inputs, outputs) -> int:
    """`s2d_fast::gather_frames` and `sample_details`: frames (B, T, C, H, W), index (B, K, P)."""
    b, _, c, h, w = get_shape(inputs[0])
    _, k, p = get_shape(inputs[1])
    return b * k * p * c * h * w


def _einsum_flop(inputs, outputs) -> int:
    """One MAC per point of the joint index space: exact for the two-operand einsums of the
    sampler (fvcore's own estimate asks numpy's einsum_path, which allocates every operand and
    is off by a few flops)."""
    equation = inputs[0].toIValue().replace(" ", "")
    sizes: dict[str, int] = {}
    for letters, value in zip(equation.split("->")[0].split(","), inputs[1].node().inputs()):
        for letter, size in zip(letters, get_shape(value)):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


FLOP_HANDLES = {
    "s2d_fast::temporal_shift": None,
    "s2d_fast::checked_index": None,
    "s2d_fast::gather_frames": _gather_flop,
    "s2d_fast::sample_details": _gather_flop,
    "aten::einsum": _einsum_flop,
    # The SNet input's antialiased resize, counted as fvcore counts a bilinear one.
    "aten::_upsample_bilinear2d_aa": elementwise_flop_counter(0, 4),
}


def count_flops(model: nn.Module, inputs: tuple) -> FlopCountAnalysis:
    """fvcore's analysis of `model` (put in eval mode) on `inputs`, with `FLOP_HANDLES`, traced
    and counted once without gradients; fvcore's and the tracer's warnings are silenced
    (`unsupported_ops()` lists what counted as zero)."""
    analysis = FlopCountAnalysis(model.eval(), inputs).set_op_handle(**FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis.total()
    return analysis


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tsm_counts(arch: str, num_frames: int, size: int, num_classes: int) -> tuple[int, int]:
    model = tsm_backbone(arch, num_frames, num_classes)
    analysis = count_flops(model, (torch.zeros(1, num_frames, 3, size, size),))
    return analysis.total(), _params(model)


def tsm_flops(arch: str, num_frames: int, size: int, num_classes: int) -> tuple[float, float]:
    """GFLOPs per video and parameters (millions) of TSM-`arch` on `num_frames` frames of
    `size` x `size`, its classifier included."""
    flops, params = _tsm_counts(arch, num_frames, size, num_classes)
    return flops / 1e9, params / 1e6


def _row(part: str, name: str, flops: float, params: float) -> dict:
    return {"part": part, "component": name, "gflops": flops / 1e9, "params_m": params / 1e6}


def _s2d_rows(cfg, model: S2DNet, analysis: FlopCountAnalysis) -> list[dict]:
    """SNet, f_theta, the sampling itself, f_m, DNet, and the root's own ops (the SNet's input frames).

    The classifier reads `[pooled DNet features, m, s]`: the columns on the pooled features are
    what a plain TSM classifier costs and count with DNet, the rest with f_m.
    """
    by_module = analysis.by_module()
    theta_params = {id(p) for p in model.sampler_parameters()}
    flops, params = Counter(), Counter()
    for name, child in model.named_children():
        child_params = list(child.parameters())
        if name == "snet":
            part = "snet"
        elif name == "dnet":
            part = "dnet"
        elif name == "sampler":
            part = "sampling"
        elif name == "classifier":
            dnet_share = model.dnet.num_features / child.in_features
            flops["dnet"] += by_module[name] * dnet_share
            flops["f_m"] += by_module[name] * (1 - dnet_share)
            params["dnet"] += model.dnet.num_features * child.out_features + child.out_features
            params["f_m"] += (child.in_features - model.dnet.num_features) * child.out_features
            continue
        elif child_params and all(id(p) in theta_params for p in child_params):
            part = "f_theta"
        else:  # context, fusion: what computes and fuses m
            part = "f_m"
        flops[part] += by_module[name]
        params[part] += _params(child)
    flops["snet_input"] = analysis.total() - sum(flops.values())
    flops["saliency"] = saliency_flops(model, analysis)
    snet, dnet = cfg.SNET, cfg.DNET
    names = {
        "snet": f"SNet (TSM-{snet.ARCH} {snet.NUM_FRAMES}x{snet.INPUT_SIZE})",
        "f_theta": "f_theta (trunk, heads)" if cfg.S2D.THETA == "trunk" else "f_theta (embed, 3-D conv stacks, heads)",
        "sampling": "sampling (temporal taps, spatial filters)",
        "f_m": "f_m (context, fusion, classifier on [m, s])",
        "dnet": f"DNet (TSM-{dnet.ARCH} {dnet.NUM_FRAMES}x{dnet.INPUT_SIZE})",
        "snet_input": "SNet input (uniform frames, resize)",
        "saliency": "saliency (SNet's backward to its input, as one SNet forward)",
    }
    return [_row(part, names[part], flops[part], params[part]) for part in names
            if part != "saliency" or flops[part]]


def _inputs(cfg, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One video of zeros shaped as the loader's candidates, and its valid count."""
    t, size = num_candidates(cfg), cfg.DATA.CROP_SIZE
    return torch.zeros(1, t, 3, size, size, dtype=torch.uint8, device=device), torch.tensor([t], device=device)


def saliency_flops(model: nn.Module, analysis: FlopCountAnalysis) -> float:
    """S2D.EVIDENCE_MAP saliency steering the sampler (S2D.SAMPLER_ANCHOR or WARMUP_WINDOW evidence) runs SNet
    backward to its input at inference too. The trace skips that pass (a traced graph holds no
    autograd call); it costs about one SNet forward (the input gradients' convolutions, without
    the weights'), counted as such."""
    placed = isinstance(model, S2DNet) and (
        (model.stage == "sampling" and model.anchored) or (model.stage == "warmup" and model.warmup_at_evidence))
    if not (placed and model.evidence_map == "saliency"):
        return 0.0
    return float(analysis.by_module()["snet"])


def gflops_per_video(model: nn.Module, cfg) -> float:
    """GFLOPs of one video through `model` as it is (its stage, its weights), on inputs shaped as
    `cfg`'s candidates; the model is left in eval mode."""
    device = next(model.parameters()).device
    analysis = count_flops(model, _inputs(cfg, device))
    return (analysis.total() + saliency_flops(model, analysis)) / 1e9


def _trained_form(cfg, num_classes: int) -> nn.Module:
    """The model `cfg` describes as it runs after training (S2DNet in the sampling stage, f_theta
    active), with random weights."""
    model = build_model(cfg, num_classes, pretrained=False)
    model.set_stage("sampling")
    return model


def config_gflops(cfg, num_classes: int) -> float:
    """GFLOPs per video of the model `cfg` describes as it runs after training."""
    return gflops_per_video(_trained_form(cfg, num_classes), cfg)


def _skipped(*analyses: FlopCountAnalysis) -> dict[str, int]:
    skipped = Counter()
    for analysis in analyses:
        skipped.update(analysis.unsupported_ops())
    return dict(sorted(skipped.items()))


def flops_report(cfg, num_classes: int, classes_from: str = "given") -> dict:
    """GFLOPs per video and parameters of S2DNet's parts for `cfg`, with the uniform baseline
    and TSM on the detail network's backbone at K and 2K uniform frames for comparison; the
    models are built with random weights.

    Returns `{"num_classes", "classes_from", "components": [rows], "total": row,
    "baselines": [rows], "skipped_ops": {op: count}}`, each row
    `{"part", "component", "gflops", "params_m"}` (`part` a short key, `component` its
    description); the components sum to the total. `classes_from` says where the class count
    came from, for the table.
    """
    analyses = []
    components, total = [], None
    if model_name(cfg) == "s2dnet":
        model = _trained_form(cfg, num_classes)
        analysis = count_flops(model, _inputs(cfg))
        analyses.append(analysis)
        components = _s2d_rows(cfg, model, analysis)
        total = _row("total", "S2DNet total", analysis.total() + saliency_flops(model, analysis), _params(model))

    uniform_cfg = cfg.clone()
    uniform_cfg.defrost()
    uniform_cfg.S2D.DETAIL_SAMPLING = False
    uniform = build_model(uniform_cfg, num_classes, pretrained=False)
    analysis = count_flops(uniform, _inputs(cfg))
    analyses.append(analysis)
    k, size, arch = cfg.DNET.NUM_FRAMES, cfg.DNET.INPUT_SIZE, cfg.DNET.ARCH
    name = f"uniform baseline (TSM-{arch} {k}x{size} + frame reads)"
    baselines = [_row("uniform", name, analysis.total(), _params(uniform))]
    # TSM at K and 2K frames of the detail size, and at K frames of the full crop (the paper's
    # TSM-R50 16x224 for the authors' recipe, whose details are 112 px).
    plain = [(k, size), (2 * k, size)] + ([(k, cfg.DATA.CROP_SIZE)] if cfg.DATA.CROP_SIZE != size else [])
    for frames, side in plain:
        counts = _tsm_counts(arch, frames, side, num_classes)
        baselines.append(_row(f"tsm_{frames}x{side}", f"TSM-{arch} {frames}x{side}", *counts))
    return {
        "num_classes": num_classes,
        "classes_from": classes_from,
        "components": components,
        "total": total,
        "baselines": baselines,
        "skipped_ops": _skipped(*analyses),
    }


def format_flops_table(report: dict) -> str:
    """The report as a plain-text table: component, GFLOPs per video, parameters (M)."""
    rows = report["components"] + ([report["total"]] if report["total"] else []) + report["baselines"]
    head = "component (fvcore: one multiply-add = one flop)"
    width = max(len(head), *(len(r["component"]) for r in rows))
    rule = "-" * (width + 26)

    def line(row: dict) -> str:
        return f"{row['component']:<{width}}  {row['gflops']:>12.3f}  {row['params_m']:>10.2f}"

    lines = [f"{head:<{width}}  {'GFLOPs/video':>12}  {'params (M)':>10}", rule]
    if report["total"]:
        lines += [line(r) for r in report["components"]] + [rule, line(report["total"]), ""]
    lines += ["baselines"] + [line(r) for r in report["baselines"]] + [""]
    lines.append(f"{report['num_classes']} classes ({report['classes_from']})")
    if report["skipped_ops"]:
        skipped = "counted as zero (no flop handle): " + ", ".join(report["skipped_ops"])
        lines.append(textwrap.fill(skipped, width=width + 26, subsequent_indent="  "))
    return "\n".join(lines)
