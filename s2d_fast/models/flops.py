"""FLOPs and parameters of S2DNet's parts, of the uniform baseline and of plain TSM backbones.

Counted with fvcore's `FlopCountAnalysis` on one video, in inference: one multiply-add is one
flop, as the TSM paper reports (TSM-ResNet-50, 8 frames at 224: 33 GFLOPs). S2DNet is counted
in its sampling-stage forward, f_theta active, in eval mode without gradients, so the detail
sampler takes its inference fast path.

fvcore traces with `torch.jit`, which cannot count the kernels as they run: the shift's torch
path is an autograd Function the tracer rejects, the gather's torch path mixes every candidate
(a `(K, T)` matrix product) where the kernel reads only the taps, and the Triton paths run on
CUDA only. So the count swaps in plain-torch equivalents of the kernels' arithmetic: the
temporal shift moves data and costs nothing; a frame gather is an einsum over its taps, one
multiply-add per output element and tap. Ops fvcore has no handle for (element-wise ops,
softmax, top-k, means) count as zero and are listed under `skipped_ops`.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import warnings
from collections import Counter
from unittest import mock

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts a loss with torch.jit.script at import, which torch now deprecates.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

from s2d_fast.data.datasets import DATASETS
from s2d_fast.kernels import temporal_shift_reference

from . import s2dnet, sampler, tsm
from .s2dnet import S2DNet

# Classes assumed when neither DATA.NUM_CLASS nor a registered DATA.DATASET gives a count.
DEFAULT_CLASSES = 400


def _shift(x, n_segment, fold_div=8, backend=None):
    return temporal_shift_reference(x, n_segment, fold_div)


def _gather(frames, index, weight=None, *, mean=None, std=None, out_dtype=None, backend=None):
    """`gather_frames` as a traceable einsum over the taps: one MAC per output element and tap."""
    if index.dim() == 2:
        index = index.unsqueeze(-1)
        weight = None if weight is None else weight.unsqueeze(-1)
    if weight is None:
        weight = torch.ones(index.shape, device=frames.device)
    batch = torch.arange(frames.shape[0], device=frames.device)[:, None, None]
    taps = frames[batch, index].float()
    if frames.dtype == torch.uint8:
        taps = taps / 255
    out = torch.einsum("bkp,bkpchw->bkchw", weight.float(), taps)
    if mean is not None:
        out = (out - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    return out.to(out_dtype or torch.float32)


def _sample_details(frames, index, weight, centers, strides, out_size, *, mean=None, std=None, out_dtype=None,
                    backend=None):
    """The fused inference sampler as its two steps: the tap gather, then the bilinear window."""
    mixed = _gather(frames, index, weight, mean=mean, std=std)
    return sampler.bilinear_window(mixed, centers, strides, out_size).to(out_dtype or torch.float32)


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


@contextlib.contextmanager
def _traceable_kernels():
    """While tracing, the kernels' names in the model modules point to the equivalents above."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(tsm, "temporal_shift", _shift))
        stack.enter_context(mock.patch.object(s2dnet, "gather_frames", _gather))
        stack.enter_context(mock.patch.object(sampler, "gather_frames", _gather))
        stack.enter_context(mock.patch.object(sampler, "sample_details", _sample_details))
        yield


def _analyse(model: nn.Module, inputs: tuple) -> FlopCountAnalysis:
    """Trace and count once; fvcore's and the tracer's warnings are silenced (skipped ops are
    reported instead)."""
    analysis = FlopCountAnalysis(model.eval(), inputs)
    # The SNet input's antialiased resize, counted as fvcore counts a bilinear one.
    analysis.set_op_handle("aten::_upsample_bilinear2d_aa", elementwise_flop_counter(0, 4))
    analysis.set_op_handle("aten::einsum", _einsum_flop)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings(), torch.no_grad(), _traceable_kernels():
        warnings.simplefilter("ignore")
        analysis.total()
    return analysis


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tsm_counts(arch: str, num_frames: int, size: int, num_classes: int) -> tuple[int, int]:
    model = tsm.tsm_backbone(arch, num_frames, num_classes)
    analysis = _analyse(model, (torch.zeros(1, num_frames, 3, size, size),))
    return analysis.total(), _params(model)


def tsm_flops(arch: str, num_frames: int, size: int, num_classes: int) -> tuple[float, float]:
    """GFLOPs per video and parameters (millions) of TSM-`arch` on `num_frames` frames of
    `size` x `size`, its classifier included."""
    flops, params = _tsm_counts(arch, num_frames, size, num_classes)
    return flops / 1e9, params / 1e6


def resolve_num_classes(cfg, num_classes: int | None = None) -> tuple[int, str]:
    """The class count to count with, and where it came from (for the report)."""
    if num_classes is not None:
        return num_classes, "given"
    if cfg.DATA.NUM_CLASS > 0:
        return cfg.DATA.NUM_CLASS, "DATA.NUM_CLASS"
    spec = DATASETS.get(cfg.DATA.DATASET)
    if spec is not None:
        return spec.num_classes, f"dataset {spec.name}"
    return DEFAULT_CLASSES, (
        f"assumed: DATA.NUM_CLASS is 0 and {cfg.DATA.DATASET!r} is not a registered dataset"
    )


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
    snet, dnet = cfg.SNET, cfg.DNET
    names = {
        "snet": f"SNet (TSM-{snet.ARCH} {snet.NUM_FRAMES}x{snet.INPUT_SIZE})",
        "f_theta": "f_theta (embed, 3-D conv stacks, heads)",
        "sampling": "sampling (temporal taps, spatial filters)",
        "f_m": "f_m (context, fusion, classifier on [m, s])",
        "dnet": f"DNet (TSM-{dnet.ARCH} {dnet.NUM_FRAMES}x{dnet.INPUT_SIZE})",
        "snet_input": "SNet input (uniform frames, resize)",
    }
    return [_row(part, names[part], flops[part], params[part]) for part in names]


def _inputs(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    t, size = cfg.DATA.NUM_CANDIDATES, cfg.DATA.CROP_SIZE
    return torch.zeros(1, t, 3, size, size, dtype=torch.uint8), torch.tensor([t])


def _skipped(*analyses: FlopCountAnalysis) -> dict[str, int]:
    skipped = Counter()
    for analysis in analyses:
        skipped.update(analysis.unsupported_ops())
    return dict(sorted(skipped.items()))


def flops_report(cfg, num_classes: int | None = None) -> dict:
    """GFLOPs per video and parameters of S2DNet's parts for `cfg`, with the uniform baseline
    and TSM on the detail network's backbone at K and 2K uniform frames for comparison.

    Returns `{"num_classes", "classes_from", "components": [rows], "total": row,
    "baselines": [rows], "skipped_ops": {op: count}}`, each row
    `{"part", "component", "gflops", "params_m"}` (`part` a short key, `component` its
    description); the components sum to the total.
    """
    num_classes, classes_from = resolve_num_classes(cfg, num_classes)
    analyses = []
    components, total = [], None
    if cfg.S2D.DETAIL_SAMPLING:
        model = S2DNet(cfg, num_classes)
        model.set_stage("sampling")
        analysis = _analyse(model, _inputs(cfg))
        analyses.append(analysis)
        components = _s2d_rows(cfg, model, analysis)
        total = _row("total", "S2DNet total", analysis.total(), _params(model))

    uniform_cfg = cfg.clone()
    uniform_cfg.defrost()
    uniform_cfg.S2D.DETAIL_SAMPLING = False
    uniform = S2DNet(uniform_cfg, num_classes)
    analysis = _analyse(uniform, _inputs(cfg))
    analyses.append(analysis)
    k, size, arch = cfg.DNET.NUM_FRAMES, cfg.DNET.INPUT_SIZE, cfg.DNET.ARCH
    name = f"uniform baseline (TSM-{arch} {k}x{size} + frame reads)"
    baselines = [_row("uniform", name, analysis.total(), _params(uniform))]
    for frames in (k, 2 * k):
        counts = _tsm_counts(arch, frames, size, num_classes)
        baselines.append(_row(f"tsm_{frames}", f"TSM-{arch} {frames}x{size}", *counts))
    return {
        "num_classes": num_classes,
        "classes_from": classes_from,
        "components": components,
        "total": total,
        "baselines": baselines,
        "skipped_ops": _skipped(*analyses),
    }


def model_gflops(report: dict) -> float:
    """The configured model's GFLOPs per video from a `flops_report`: S2DNet's total, or for the
    uniform baseline (which has no total row) its first baseline row, the model itself."""
    return (report["total"] or report["baselines"][0])["gflops"]


def format_flops_table(report: dict) -> str:
    """The report as a plain-text table: component, GFLOPs per video, parameters (M)."""
    rows = report["components"] + ([report["total"]] if report["total"] else []) + report["baselines"]
    width = max(len(r["component"]) for r in rows)
    rule = "-" * (width + 26)

    def line(row: dict) -> str:
        return f"{row['component']:<{width}}  {row['gflops']:>12.3f}  {row['params_m']:>10.2f}"

    lines = [f"{'component':<{width}}  {'GFLOPs/video':>12}  {'params (M)':>10}", rule]
    if report["total"]:
        lines += [line(r) for r in report["components"]] + [rule, line(report["total"]), ""]
    lines += ["baselines"] + [line(r) for r in report["baselines"]] + [""]
    lines.append(f"{report['num_classes']} classes ({report['classes_from']}); one multiply-add = one flop")
    if report["skipped_ops"]:
        skipped = "counted as zero (no flop handle): " + ", ".join(report["skipped_ops"])
        lines.append(textwrap.fill(skipped, width=width + 26, subsequent_indent="  "))
    return "\n".join(lines)
