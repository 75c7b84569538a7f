"""The temporal shift inside the compiled network: TSM-ResNet-50 with each way of shifting,
against the same network unshifted and torchvision's, eager and compiled, on the same frames.

Rows (all on `B x T` frames of `size` px, random weights, eval mode, `torch.no_grad`):
- `torchvision`: torchvision's ResNet-50 on the frames, what a user has without us;
- `unshifted`: s2d-fast's backbone built with `shift=False` (the floor for any shift);
- `s2d-fast`: the backbone as it ships: the one-pass custom op in eager, the traceable form
  Inductor fuses under torch.compile;
- `slice writes`: the eager torch path's one-pass slice writes, given to torch.compile as they
  are (the compiled form before the traceable one);
- `opaque op`: the same custom op left opaque under torch.compile (a call Inductor cannot
  fuse or plan memory around): what compiling the eager kernel would give;
- `TSM reference`: TSM's own shift (zeros, then three slice copies) in every block.
Modes as in `bench eval` (`{eager|compiled}-{fp32|bf16|fp16}[-cl]`, compiled with Inductor's
weight freezing on the CPU). Each row x mode is built, compiled and warmed up once, then timed
in `repeats` interleaved rounds; the table gives median milliseconds per pass, GMAC/s (fvcore's
multiply-adds of the unshifted network, the same for every row) and the ratio to `unshifted`
in the same mode, next to a 4096^2 matmul's GMAC/s as the roofline.
"""

from __future__ import annotations

import time

import click
import torch
import torchvision
from torch import nn

from s2d_fast.cli_support import UserErrorCommand
from s2d_fast.engine.evaluate import write_json
from s2d_fast.engine.runtime import autocast, compile_model, device_name
from s2d_fast.kernels import temporal_shift_reference
from s2d_fast.kernels.temporal_shift import _shift_torch as shift_by_slice_writes
from s2d_fast.models import TemporalShift
from s2d_fast.models.backbones import build_backbone
from s2d_fast.models.flops import count_flops

from .harness import interleaved_seconds, matmul_gmacs, median, parse_mode, resolve_device, sync

ROWS = ("torchvision", "unshifted", "s2d-fast", "slice writes", "opaque op", "TSM reference")
DEFAULT_MODES = ("eager-bf16-cl", "compiled-bf16-cl")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _OpaqueShift(nn.Module):
    """A shifted conv whose shift is the custom op itself, even under torch.compile."""

    def __init__(self, shifted: TemporalShift):
        super().__init__()
        self.net, self.num_segments, self.fold_div = shifted.net, shifted.num_segments, shifted.fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = x.shape[1] // self.fold_div
        return self.net(torch.ops.s2d_fast.temporal_shift(x, self.num_segments, fold, False, False))


class _SliceWrites(nn.Module):
    """A shifted conv whose shift is the eager torch path's slice writes, even under compile."""

    def __init__(self, shifted: TemporalShift):
        super().__init__()
        self.net, self.num_segments, self.fold_div = shifted.net, shifted.num_segments, shifted.fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(shift_by_slice_writes(x, self.num_segments, x.shape[1] // self.fold_div, False))


class _ReferenceShift(nn.Module):
    """A shifted conv whose shift is TSM's reference code."""

    def __init__(self, shifted: TemporalShift):
        super().__init__()
        self.net, self.num_segments, self.fold_div = shifted.net, shifted.num_segments, shifted.fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift_reference(x, self.num_segments, self.fold_div))


def _replace_shifts(module: nn.Module, wrap) -> None:
    for name, child in module.named_children():
        if isinstance(child, TemporalShift):
            setattr(module, name, wrap(child))
        else:
            _replace_shifts(child, wrap)


class _Frames(nn.Module):
    """torchvision's network on `(B, T, 3, H, W)` frames, frame logits averaged, like the backbone."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        return self.net(frames.flatten(0, 1)).view(b, t, -1).mean(1)


def build_row(row: str, arch: str, frames: int, num_classes: int) -> nn.Module:
    """The network of one row, random weights (seeded alike), eval mode."""
    torch.manual_seed(0)
    if row == "torchvision":
        return _Frames(getattr(torchvision.models, arch)(num_classes=num_classes)).eval()
    net = build_backbone(arch, frames, num_classes, shift=row != "unshifted", backend="torch")
    if row == "opaque op":
        _replace_shifts(net, _OpaqueShift)
    elif row == "slice writes":
        _replace_shifts(net, _SliceWrites)
    elif row == "TSM reference":
        _replace_shifts(net, _ReferenceShift)
    return net.eval()


def bench_compiled(*, arch: str = "resnet50", videos: int = 4, frames: int = 8, size: int = 224,
                   repeats: int = 5, modes=DEFAULT_MODES, rows=ROWS, device: str = "auto",
                   json_path: str | None = None, roofline_size: int = 4096) -> dict:
    specs = {mode: parse_mode(mode) for mode in modes}
    unknown = [row for row in rows if row not in ROWS]
    if unknown or not rows:
        raise ValueError(f"unknown rows {unknown}: rows are {', '.join(ROWS)}")
    dev = resolve_device(device)
    num_classes = 400
    x = torch.randn(videos, frames, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
    gmac = count_flops(build_row("unshifted", arch, frames, num_classes), (x[:1].cpu(),)).total() / 1e9 * videos
    roofline = {p: matmul_gmacs(dev, _DTYPES[p], roofline_size)
                for p in {"fp32", *(s["amp"] for s in specs.values() if s["amp"] != "none")}}
    runners, compile_seconds = {}, {}
    for row in rows:
        for mode, spec in specs.items():
            net = build_row(row, arch, frames, num_classes).to(dev)
            inp = x
            if spec["channels_last"]:
                net = net.to(memory_format=torch.channels_last)
                inp = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(x.shape)
            fn = compile_model(net, True, "default", training=False) if spec["compiled"] else net

            def run(fn=fn, inp=inp, amp=spec["amp"]):
                with torch.no_grad(), autocast(dev, amp):
                    return fn(inp)

            start = time.perf_counter()
            run()  # compiles, and warms up
            sync(dev)
            compile_seconds[f"{row} {mode}"] = round(time.perf_counter() - start, 1)
            runners[row, mode] = run
    times = interleaved_seconds(runners, repeats, dev)
    table = {row: {mode: median(times[row, mode]) for mode in modes} for row in rows}
    result = {
        "device": device_name(dev), "torch": torch.__version__, "arch": arch, "input": [videos, frames, 3, size, size],
        "gmac_per_pass": gmac, "repeats": repeats, "modes": list(modes), "rows": list(rows),
        "seconds": {row: table[row] for row in rows}, "runs": {f"{r} {m}": t for (r, m), t in times.items()},
        "roofline_gmacs": roofline, "roofline_size": roofline_size, "compile_seconds": compile_seconds,
    }
    print(format_table(result))
    if json_path:
        write_json(result, json_path)
    return result


def format_table(result: dict) -> str:
    """One line per row: per mode, ms per pass, GMAC/s and the speed relative to `unshifted`."""
    modes, seconds, gmac = result["modes"], result["seconds"], result["gmac_per_pass"]
    roof_label = f"{result['roofline_size']}^2 matmul (roofline)"
    width = max(len(row) for row in [*result["rows"], roof_label])
    col = max(len(mode) for mode in modes + ["   ms  GMAC/s  x unshifted"])
    b, t, _, size, _ = result["input"]
    lines = [
        f"TSM-{result['arch']} on {b} videos x {t} frames of {size} px, {result['device']}, torch {result['torch']}",
        f"{gmac:.1f} GMAC per pass (fvcore multiply-adds); medians of {result['repeats']} interleaved repeats",
        "",
        f"{'':<{width}}  " + "  ".join(f"{mode:>{col}}" for mode in modes),
        f"{'shift':<{width}}  " + "  ".join(f"{'   ms  GMAC/s  x unshifted':>{col}}" for _ in modes),
    ]
    base = seconds.get("unshifted")
    for row in result["rows"]:
        cells = []
        for mode in modes:
            s = seconds[row][mode]
            ratio = f"{base[mode] / s:.2f}" if base else "-"
            cell = f"{s * 1e3:5.0f}  {gmac / s:6.0f}  {ratio:>11}"
            cells.append(f"{cell:>{col}}")
        lines.append(f"{row:<{width}}  " + "  ".join(cells))
    roof = result["roofline_gmacs"]
    precision = {m: "fp32" if parse_mode(m)["amp"] == "none" else parse_mode(m)["amp"] for m in modes}
    roof_cells = [f"{roof[precision[m]]:6.0f}" + " " * 13 for m in modes]
    lines.append(f"{roof_label:<{width}}  " + "  ".join(f"{cell:>{col}}" for cell in roof_cells))
    lines += ["", "compile + first pass (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["compile_seconds"].items())]
    return "\n".join(lines)


@click.command(cls=UserErrorCommand)
@click.option("--arch", default="resnet50", show_default=True, help="Backbone: resnet18/34/50/101.")
@click.option("--videos", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per video (TSM's segments).")
@click.option("--size", type=click.IntRange(min=32), default=224, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--modes", default=",".join(DEFAULT_MODES), show_default=True,
              help="Comma-separated {eager|compiled}-{fp32|bf16|fp16}[-cl].")
@click.option("--rows", default=",".join(ROWS), show_default=True, help="Comma-separated rows of the table.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
@click.option("--roofline-size", type=click.IntRange(min=1), default=4096, show_default=True)
def bench_compiled_command(arch, videos, frames, size, repeats, modes, rows, device, json_path, roofline_size):
    """The temporal shift inside TSM-ResNet: ours, slice writes, opaque, TSM's and none, eager and compiled."""
    try:
        bench_compiled(arch=arch, videos=videos, frames=frames, size=size, repeats=repeats,
                       modes=[m.strip() for m in modes.split(",") if m.strip()],
                       rows=[r.strip() for r in rows.split(",") if r.strip()], device=device,
                       json_path=json_path, roofline_size=roofline_size)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
