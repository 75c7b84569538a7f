"""End-to-end evaluation throughput: S2DNet against TSM with uniform frames, on the same input.

Every model reads the same fixed set of uint8 candidate batches `(B, T, 3, H, W)` (T =
DATA.NUM_CANDIDATES, H = W = DATA.CROP_SIZE), already on the device, and runs its whole
evaluation forward: frame reads and normalisation, resizes, backbones, the log-distribution.
- `s2dnet`: the configured S2DNet in the sampling stage (f_theta active), random weights, eval
  mode under `torch.no_grad`, so that the detail sampler takes its inference fast path.
- `tsmN`: TSM on DNET.ARCH with N uniform whole frames at DNET.INPUT_SIZE, the registered `tsm`
  model (the uniform baseline, `S2D.DETAIL_SAMPLING False`) with `DNET.NUM_FRAMES N`, so it
  reads the same candidates; `tsm8` and `tsm16` are K and 2K at paper scale.
- `tvN`, the anchor: torchvision's own network for DNET.ARCH on the frames `tsmN` reads, what
  a user would run without us; every row's GMAC/s is also given as a share of its GMAC/s.
The roofline is a 4096^2 matmul in each mode's precision, timed in the same run.

Modes are `{eager|compiled}-{fp32|bf16|fp16}[-cl]`: fp32 runs without autocast, bf16 / fp16
under `runtime.autocast`; `compiled` is `runtime.compile_model` (Inductor, with weight freezing
for CPU inference), compiled once per model and mode and warmed up before any timing; `-cl`
puts the 2-D convolutions in channels_last (`runtime.to_device`).

GFLOPs per video are fvcore's counts (one multiply-add = one flop): `config_gflops` for the
configured model and `tsm_flops` (the backbone with its classifier) for TSM. Timing: one warm-up pass
over all batches per model and mode, then `repeats` repeats; in each repeat every model x mode
runs all batches once, in an order rotated from repeat to repeat, so that drifting clocks and
neighbours' load hit them alike. videos/s = B * batches / seconds of a repeat; the table shows
medians. On CUDA the clock reads after `torch.cuda.synchronize`. Host-to-device copies and
decoding are not timed (see `s2d-fast bench data` for loading).
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Iterable

import click
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from s2d_fast.cli_support import PAIRS_SETTINGS, UserErrorCommand, config_arguments, config_from_args
from s2d_fast.config import ConfigError, num_candidates
from s2d_fast.data.datasets import resolve_num_classes
from s2d_fast.data.loader import build_dataset
from s2d_fast.engine.evaluate import write_json
from s2d_fast.engine.runtime import autocast, compile_model, device_name, to_device
from s2d_fast.models import build_model, fold_batchnorm
from s2d_fast.models.flops import config_gflops, count_flops, tsm_flops

from .harness import interleaved_seconds, matmul_gmacs, median, parse_mode, resolve_device, sync

DEFAULT_MODES = ("eager-fp32", "eager-bf16", "compiled-bf16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_GMACS_HEAD = "GMAC/s (fvcore multiply-adds x videos/s)"
DEFAULT_MODELS = ("s2dnet", "tsm8", "tsm16", "tv8")
INPUTS = ("auto", "random", "dataset")
_TSM = re.compile(r"^tsm([1-9][0-9]*)$")
_ANCHOR = re.compile(r"^tv([1-9][0-9]*)$")
# Our backbone names -> torchvision's builders.
_TORCHVISION = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
                "mobilenetv2": "mobilenet_v2"}
_clock = {"start": time.perf_counter()}


def _progress(message: str) -> None:
    elapsed = time.perf_counter() - _clock["start"]
    print(f"[bench eval {elapsed:7.1f} s] {message}", file=sys.stderr, flush=True)


class TorchvisionAnchor(nn.Module):
    """The anchor: torchvision's own network for DNET.ARCH (no shift, nothing of ours) on the
    N uniform frames TSM reads (TSN's segment centres of the valid candidates), normalised and
    resized as TSM's are, frame logits averaged per video."""

    def __init__(self, cfg, num_frames: int, num_classes: int):
        super().__init__()
        self.net = getattr(torchvision.models, _TORCHVISION[cfg.DNET.ARCH])(num_classes=num_classes)
        self.num_frames, self.size = num_frames, cfg.DNET.INPUT_SIZE
        self.register_buffer("mean", torch.tensor(cfg.DATA.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.DATA.STD).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor, n_valid: torch.Tensor) -> dict:
        b, k = frames.shape[0], self.num_frames
        t = torch.arange(k, device=frames.device)
        index = (2 * t + 1) * n_valid[:, None] // (2 * k)
        x = frames[torch.arange(b, device=frames.device)[:, None], index].flatten(0, 1).float()
        x = (x / 255 - self.mean) / self.std
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        logits = self.net(x).view(b, k, -1).mean(1)
        return {"log_prob": torch.log_softmax(logits.float(), dim=1)}


def _model_cfg(cfg, model: str):
    """The config of a benchmarked model: the configured S2DNet, or its uniform baseline (or
    the torchvision anchor) on N frames."""
    if model == "s2dnet":
        return cfg
    anchor = _ANCHOR.match(model)
    if anchor is not None and cfg.DNET.ARCH not in _TORCHVISION:
        raise ValueError(f"model {model!r}: torchvision has no {cfg.DNET.ARCH}")
    match = _TSM.match(model) or anchor
    if match is None:
        raise ValueError(f"unknown model {model!r}: models are s2dnet, tsmN (N uniform frames, e.g. tsm8) and "
                         "tvN (torchvision's DNET.ARCH on the same frames, the anchor)")
    out = cfg.clone()
    out.defrost()
    out.S2D.DETAIL_SAMPLING = False
    out.DNET.NUM_FRAMES = int(match.group(1))
    out.freeze()
    return out


def _model_name(cfg, model: str) -> str:
    dnet = cfg.DNET
    if model == "s2dnet":
        if not cfg.S2D.DETAIL_SAMPLING:
            return f"uniform baseline (TSM-{dnet.ARCH} {dnet.NUM_FRAMES}x{dnet.INPUT_SIZE})"
        snet = cfg.SNET
        return (f"S2DNet ({snet.ARCH} {snet.NUM_FRAMES}x{snet.INPUT_SIZE} + "
                f"{dnet.ARCH} {dnet.NUM_FRAMES}x{dnet.INPUT_SIZE})")
    if _ANCHOR.match(model):
        return f"torchvision {_TORCHVISION[dnet.ARCH]} {dnet.NUM_FRAMES}x{dnet.INPUT_SIZE} (anchor)"
    return f"TSM-{dnet.ARCH} {_TSM.match(model).group(1)}x{dnet.INPUT_SIZE}"


def _gflops(cfg, models: list[str], num_classes: int, data) -> dict[str, float]:
    """GFLOPs per video of each model: the configured model's as it runs after training, TSM's
    backbone (with its classifier) on N frames for tsmN, the anchor as it runs on `data`."""
    out = {}
    for model in models:
        _progress(f"counting GFLOPs of {model}")
        if model == "s2dnet":
            out[model] = config_gflops(cfg, num_classes)
        elif _ANCHOR.match(model):
            frames, n_valid = data[0]
            anchor = TorchvisionAnchor(_model_cfg(cfg, model), int(_ANCHOR.match(model).group(1)), num_classes).eval()
            out[model] = count_flops(anchor, (frames[:1].cpu(), n_valid[:1].cpu())).total() / 1e9
        else:
            out[model] = tsm_flops(cfg.DNET.ARCH, int(_TSM.match(model).group(1)), cfg.DNET.INPUT_SIZE, num_classes)[0]
    return out


def _cached_val_dataset(cfg):
    """The validation dataset if it is on disk, else None: the built-in synthetic dataset is
    not generated for a benchmark."""
    try:
        return build_dataset(cfg, "val", generate=False)
    except (ConfigError, FileNotFoundError):
        return None


def _input_batches(cfg, batch_size: int, batches: int, inputs: str, device: torch.device):
    """`batches` fixed `(frames uint8 (B, T, 3, H, W), n_valid (B,))` on `device`, and what they are."""
    t, size, needed = num_candidates(cfg), cfg.DATA.CROP_SIZE, batch_size * batches
    dataset = None
    if inputs != "random":
        one_view = cfg.clone()
        one_view.defrost()
        one_view.DATA.NUM_CLIPS, one_view.DATA.NUM_CROPS = 1, 1
        if inputs == "dataset":
            dataset = build_dataset(one_view, "val")  # generates the built-in dataset if need be
        else:
            dataset = _cached_val_dataset(one_view)
    if dataset is not None and len(dataset) > 0:
        _progress(f"decoding {needed} validation videos of {cfg.DATA.DATASET} ({dataset.root})")
        samples = [dataset[i % len(dataset)] for i in range(needed)]
        frames = torch.stack([s["frames"] for s in samples])
        n_valid = torch.tensor([int(s["n_valid"]) for s in samples])
        unreadable = sum(not s["valid"] for s in samples)
        what = f"{needed} validation videos of {cfg.DATA.DATASET}, decoded ({dataset.root})"
        if len(dataset) < needed:
            what += f"; its {len(dataset)} videos repeat"
        if unreadable:
            what += f"; {unreadable} unreadable (zeros)"
    else:
        gen = torch.Generator().manual_seed(cfg.RNG_SEED)
        frames = torch.randint(0, 256, (needed, t, 3, size, size), dtype=torch.uint8, generator=gen)
        n_valid = torch.full((needed,), t, dtype=torch.long)
        what = "random uint8 frames"
    frames, n_valid = frames.to(device), n_valid.to(device)
    return list(zip(frames.split(batch_size), n_valid.split(batch_size))), what


def _build(cfg, model: str, num_classes: int, device: torch.device, channels_last: bool) -> nn.Module:
    torch.manual_seed(cfg.RNG_SEED)
    if _ANCHOR.match(model):
        anchor = TorchvisionAnchor(_model_cfg(cfg, model), int(_ANCHOR.match(model).group(1)), num_classes)
        return to_device(anchor, device, channels_last).eval()
    net = build_model(_model_cfg(cfg, model), num_classes, pretrained=False)
    net.set_stage("sampling")
    net.eval()
    if cfg.TEST.FOLD_BN:  # as `s2d-fast eval` runs it
        fold_batchnorm(net)
    return to_device(net, device, channels_last)


class _Runner:
    """One model in one mode: its module (compiled or not) and the autocast it runs under."""

    def __init__(self, module, device: torch.device, amp: str):
        self.module, self.device, self.amp = module, device, amp

    def __call__(self, batches, check: bool = False) -> None:
        with torch.no_grad(), autocast(self.device, self.amp):
            for frames, n_valid in batches:
                out = self.module(frames, n_valid)
                if check and not bool(torch.isfinite(out["log_prob"]).any()):
                    raise RuntimeError("the model's log_prob is not finite anywhere")


def _split(items: Iterable[str] | str) -> list[str]:
    if isinstance(items, str):
        items = items.split(",")
    return [item.strip() for item in items if item.strip()]


def check_args(cfg, batch_size, batches, repeats, modes, models, inputs) -> tuple[list[str], list[str], dict]:
    """The modes and models as lists, and each mode parsed; ValueError on anything unknown,
    before anything slow."""
    modes, models = _split(modes), _split(models)
    if not modes or not models:
        raise ValueError("name at least one mode and one model")
    specs = {mode: parse_mode(mode) for mode in modes}
    for model in models:
        _model_cfg(cfg, model)
    if len(set(modes)) != len(modes) or len(set(models)) != len(models):
        raise ValueError("a mode or model is named twice")
    if batch_size < 1 or batches < 1 or repeats < 1:
        raise ValueError("batch size, batches and repeats must be at least 1")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}; got {inputs!r}")
    return modes, models, specs


def bench_eval(
    cfg,
    *,
    batch_size: int = 4,
    batches: int = 3,
    repeats: int = 3,
    modes: Iterable[str] = DEFAULT_MODES,
    models: Iterable[str] = DEFAULT_MODELS,
    json_path: str | None = None,
    device: str = "auto",
    inputs: str = "auto",
    roofline_size: int = 4096,
) -> dict:
    """Videos/s of each model in each mode on the same inputs, with GFLOPs per video and the
    ratios of S2DNet to every TSM row; prints a table, returns (and optionally writes as JSON)
    the result. `inputs`: `random`, `dataset` (the validation list of DATA.DATASET, generating
    the built-in dataset if need be) or `auto` (the dataset if it is on disk, else random)."""
    modes, models, specs = check_args(cfg, batch_size, batches, repeats, modes, models, inputs)
    dev = resolve_device(device)
    num_classes, classes_from = resolve_num_classes(cfg)
    started = _clock["start"] = time.perf_counter()
    _progress(f"{len(models)} models x {len(modes)} modes on {device_name(dev)}")

    data, inputs_what = _input_batches(cfg, batch_size, batches, inputs, dev)
    gflops = _gflops(cfg, models, num_classes, data)
    _progress(f"timing a {roofline_size}^2 matmul: the roofline")
    roofline = {"fp32": matmul_gmacs(dev, torch.float32, roofline_size)}
    for spec in specs.values():
        if spec["amp"] != "none" and spec["amp"] not in roofline:
            roofline[spec["amp"]] = matmul_gmacs(dev, _DTYPES[spec["amp"]], roofline_size)

    import torch._dynamo.config as dynamo_config

    # The models' forwards share recompile limits (two classes, compiled once per mode), past
    # which Dynamo would silently run eager. Room for all of them, and an error rather than a fallback.
    saved = (dynamo_config.recompile_limit, dynamo_config.fail_on_recompile_limit_hit)
    n_compiled = sum(spec["compiled"] for spec in specs.values()) * len(models)
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, n_compiled + 8)
    dynamo_config.fail_on_recompile_limit_hit = True
    runners: dict[tuple[str, str], _Runner] = {}
    compile_seconds: dict[str, dict[str, float]] = {model: {} for model in models}
    try:
        for model in models:
            base: dict[bool, nn.Module] = {}
            for mode, spec in specs.items():
                cl = spec["channels_last"]
                if cl not in base:
                    base[cl] = _build(cfg, model, num_classes, dev, cl)
                module = base[cl]
                if spec["compiled"]:
                    # A module of its own per compiled mode: one compilation each, and the
                    # eager modes keep running the plain module.
                    module = compile_model(module, True, cfg.TEST.COMPILE_MODE, training=False)
                runners[model, mode] = _Runner(module, dev, spec["amp"])
                what = "compiling and warming up" if spec["compiled"] else "warming up"
                _progress(f"{model} {mode}: {what}")
                sync(dev)
                start = time.perf_counter()
                runners[model, mode](data, check=True)
                sync(dev)
                if spec["compiled"]:
                    compile_seconds[model][mode] = round(time.perf_counter() - start, 1)
                    _progress(f"{model} {mode}: compiled in {compile_seconds[model][mode]:.0f} s")

        videos = batch_size * batches
        seconds = interleaved_seconds({pair: functools.partial(run, data) for pair, run in runners.items()}, repeats,
                                      dev, after_round=lambda r: _progress(f"repeat {r + 1}/{repeats} done"))
        runs = {pair: [videos / s for s in times] for pair, times in seconds.items()}
    finally:
        dynamo_config.recompile_limit, dynamo_config.fail_on_recompile_limit_hit = saved

    rows = []
    for model in models:
        model_cfg = _model_cfg(cfg, model)
        rows.append({
            "model": model,
            "name": _model_name(model_cfg, model),
            "gflops": gflops[model],
            "videos_per_s": {mode: median(runs[model, mode]) for mode in modes},
            "gmacs": {mode: gflops[model] * median(runs[model, mode]) for mode in modes},
            "best_videos_per_s": {mode: max(runs[model, mode]) for mode in modes},
            "runs": {mode: runs[model, mode] for mode in modes},
        })
    ratios = _ratios(rows, modes)
    result = {
        "device": device_name(dev),
        "torch": torch.__version__,
        "inputs": inputs_what,
        "num_classes": num_classes,
        "classes_from": classes_from,
        "batch_size": batch_size,
        "batches": batches,
        "repeats": repeats,
        "candidates": [num_candidates(cfg), 3, cfg.DATA.CROP_SIZE, cfg.DATA.CROP_SIZE],
        "modes": modes,
        "rows": rows,
        "ratios": ratios,
        "anchor": next((model for model in models if _ANCHOR.match(model)), None),
        "roofline_gmacs": roofline,
        "roofline_size": roofline_size,
        "mode_precision": {mode: "fp32" if spec["amp"] == "none" else spec["amp"] for mode, spec in specs.items()},
        "compile_seconds": compile_seconds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(format_table(result))
    if json_path is not None:
        write_json(result, json_path)
    return result


def _ratios(rows: list[dict], modes: list[str]) -> list[dict]:
    """S2DNet against each TSM row: how many times fewer GFLOPs, how many times more videos/s,
    and the second over the first (1.0: throughput follows the flop count exactly)."""
    s2d = next((row for row in rows if row["model"] == "s2dnet"), None)
    if s2d is None:
        return []
    out = []
    for row in rows:
        if row is s2d or _ANCHOR.match(row["model"]):
            continue
        expected = row["gflops"] / s2d["gflops"]
        measured = {mode: s2d["videos_per_s"][mode] / row["videos_per_s"][mode] for mode in modes}
        out.append({
            "against": row["model"],
            "against_name": row["name"],
            "gflops_ratio": expected,
            "videos_per_s_ratio": measured,
            "measured_over_gflops": {mode: measured[mode] / expected for mode in modes},
        })
    return out


def format_table(result: dict) -> str:
    modes = result["modes"]
    width = max([len(row["name"]) for row in result["rows"]] + [len("model"), len(_GMACS_HEAD)])
    col = max([len(mode) for mode in modes] + [9])
    lines = [
        f"end-to-end evaluation throughput on {result['device']}, torch {result['torch']}",
        f"input: {result['batches']} batches of {result['batch_size']} x "
        f"{'x'.join(map(str, result['candidates']))} uint8 candidates ({result['inputs']}); "
        f"{result['num_classes']} classes ({result['classes_from']})",
        f"videos/s: median of {result['repeats']} interleaved repeats",
        "",
        f"{'model':<{width}}  {'GFLOPs/video':>12}  " + "  ".join(f"{mode:>{col}}" for mode in modes),
        "-" * (width + 14 + (col + 2) * len(modes)),
    ]
    for row in result["rows"]:
        lines.append(f"{row['name']:<{width}}  {row['gflops']:>12.2f}  "
                     + "  ".join(f"{row['videos_per_s'][mode]:>{col}.3f}" for mode in modes))
    lines += ["", f"{_GMACS_HEAD:<{width}}  {'':>12}  "
              + "  ".join(f"{mode:>{col}}" for mode in modes)]
    for row in result["rows"]:
        lines.append(f"{row['name']:<{width}}  {'':>12}  " + "  ".join(f"{row['gmacs'][mode]:>{col}.0f}" for mode in modes))
    roof = result["roofline_gmacs"]
    lines.append(f"{'  ' + str(result['roofline_size']) + '^2 matmul (the roofline)':<{width}}  {'':>12}  "
                 + "  ".join(f"{roof[result['mode_precision'][mode]]:>{col}.0f}" for mode in modes))
    anchor = next((row for row in result["rows"] if row["model"] == result["anchor"]), None)
    if anchor is not None:
        lines += ["", f"{'GMAC/s over the anchor':<{width}}  {'':>12}  " + "  ".join(f"{mode:>{col}}" for mode in modes)]
        for row in result["rows"]:
            if row is not anchor:
                lines.append(f"{row['name']:<{width}}  {'':>12}  "
                             + "  ".join(f"{row['gmacs'][mode] / anchor['gmacs'][mode]:>{col}.2f}" for mode in modes))
    for ratio in result["ratios"]:
        label = f"S2DNet vs {ratio['against_name']}"
        lines += [
            "",
            f"{label:<{width}}  {'GFLOPs':>12}  " + "  ".join(f"{mode:>{col}}" for mode in modes),
            f"{'  GFLOPs ratio (TSM / S2DNet)':<{width}}  {ratio['gflops_ratio']:>12.2f}",
            f"{'  videos/s ratio (S2DNet / TSM)':<{width}}  {'':>12}  "
            + "  ".join(f"{ratio['videos_per_s_ratio'][mode]:>{col}.2f}" for mode in modes),
            f"{'  videos/s ratio / GFLOPs ratio':<{width}}  {'':>12}  "
            + "  ".join(f"{ratio['measured_over_gflops'][mode]:>{col}.2f}" for mode in modes),
        ]
    spread = max(max(runs) / min(runs) for row in result["rows"] for runs in row["runs"].values())
    if spread > 1.25:
        lines += ["", f"noisy: the repeats of a row differ by up to {spread:.1f}x (other load on the machine?); "
                      "the JSON holds every repeat and the best of each row"]
    compiled = {model: s for model, s in result["compile_seconds"].items() if s}
    if compiled:
        lines.append("")
        lines.append("compile + first pass (s): " + "; ".join(
            f"{model} " + ", ".join(f"{mode} {s:.0f}" for mode, s in per.items()) for model, per in compiled.items()
        ))
    lines.append(f"total {result['seconds']:.0f} s")
    return "\n".join(lines)


@click.command(cls=UserErrorCommand, context_settings=PAIRS_SETTINGS)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
@click.option("--batch-size", default=4, show_default=True, help="Videos per batch.")
@click.option("--batches", default=3, show_default=True, help="Batches per timed pass (the same ones every pass).")
@click.option("--repeats", default=3, show_default=True, help="Timed passes per model and mode; medians are reported.")
@click.option("--modes", default=",".join(DEFAULT_MODES), show_default=True,
              help="Comma-separated {eager|compiled}-{fp32|bf16|fp16}[-cl] (-cl: channels_last).")
@click.option("--models", default=",".join(DEFAULT_MODELS), show_default=True,
              help="Comma-separated: s2dnet (the configured model), tsmN (TSM-DNET.ARCH on N uniform frames), "
                   "tvN (torchvision's DNET.ARCH on those frames).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--inputs", type=click.Choice(INPUTS), default="auto", show_default=True,
              help="random frames, the validation videos of DATA.DATASET, or auto (the dataset if on disk).")
@click.option("--roofline-size", type=click.IntRange(min=1), default=4096, show_default=True, help="Side of the square matmul timed as the roofline.")
@config_arguments
def bench_eval_command(json_path, batch_size, batches, repeats, modes, models, device, inputs, roofline_size,
                       config_file, args):
    """End-to-end evaluation videos/s of S2DNet, TSM and torchvision on the same input.

    \b
    Every model reads the same uint8 candidate batches (DATA.NUM_CANDIDATES at DATA.CROP_SIZE):
    S2DNet as configured (sampling stage, random weights, inference fast path) and TSM on
    DNET.ARCH with N uniform frames (tsm8, tsm16: K and 2K at paper scale), and torchvision's
    DNET.ARCH on those frames (tv8, the anchor). Prints GFLOPs per video, videos/s and GMAC/s
    per mode next to a matmul's (the roofline), each row's share of the anchor's GMAC/s, and
    S2DNet's GFLOPs and videos/s ratios to each TSM row.
    Compiling ResNet-50 with weight freezing takes minutes on a few CPU cores.
    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train`.
    """
    cfg = config_from_args(config_file, args)
    try:
        check_args(cfg, batch_size, batches, repeats, modes, models, inputs)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    bench_eval(cfg, batch_size=batch_size, batches=batches, repeats=repeats, modes=modes,
               models=models, json_path=json_path, device=device, inputs=inputs, roofline_size=roofline_size)
    if json_path:
        click.echo(f"wrote {json_path}")
