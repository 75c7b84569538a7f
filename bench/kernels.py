"""Times each kernel against its reference at TSM-ResNet-50 / S2DNet shapes.

Shift inputs are the inputs of each bottleneck's conv1 (where TSM's residual shift sits) in
TSM-ResNet-50 at 224 px, batch 8, for 8 and 16 frames, i.e. `(8*T, C, H, W)` with
- 64 x 56 x 56: layer1 block 0 (after the stem),
- 256 x 56 x 56: layer1 blocks 1-2 and layer2 block 0 (stage entry),
- 512 x 28 x 28: layer2 blocks 1-3 and layer3 block 0,
- 1024 x 14 x 14: layer3 blocks 1-5 and layer4 block 0,
- 2048 x 7 x 7: layer4 blocks 1-2.
The gather picks 8 of 32 uint8 candidate frames at 224 px (B = 8) and normalises them to
float32; the detail sampler (CUDA only: on CPU its torch path is the reference) also zooms.

Floors: for the shift, `x.clone()` (forward) and `x.clone(); g.clone()` (forward plus backward:
each pass has to produce one new tensor of the same size); for the gather, converting the K
first candidates to float32. Each row's median over `repeats` runs, the candidates of a case
interleaved (in a rotating order) so that drifting clocks and caches hit them alike. On CUDA
also GB/s from the bytes each op must move (`*_bytes` in s2d_fast.kernels) and that rate as a
fraction of a measured device-to-device copy.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import click
import torch

from s2d_fast.cli_support import UserErrorCommand
from s2d_fast.kernels import (
    gather_frames,
    gather_frames_bytes,
    gather_frames_reference,
    sample_details,
    sample_details_bytes,
    sample_details_reference,
    temporal_shift,
    temporal_shift_bytes,
    temporal_shift_reference,
    topk_frame_index,
)

from .harness import interleaved_seconds, median, resolve_device

SHIFT_SHAPES = [(64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
SEGMENTS = (8, 16)
BATCH = 8
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _median_times(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each fn, called in a rotating order, after two warm-up rounds."""
    return {name: median(t) for name, t in interleaved_seconds(fns, repeats, device, warmup_rounds=2).items()}


def _copy_bandwidth(device: torch.device, repeats: int) -> float:
    """Bytes per second of a 256 MiB device-to-device copy (read plus write)."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = _median_times({"copy": lambda: dst.copy_(src)}, repeats, device)["copy"]
    return 2 * src.numel() * src.element_size() / seconds


def _fwd_bwd(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> Callable[[], object]:
    def run():
        xg = x.detach().requires_grad_()
        return torch.autograd.grad(op(xg), xg, grad)

    return run


def _shift_cases(device: torch.device, quick: bool):
    shapes = [(8, SHIFT_SHAPES[0]), (8, SHIFT_SHAPES[3])] if quick else [(t, s) for t in SEGMENTS for s in SHIFT_SHAPES]
    for t, (c, h, w) in shapes:
        x = torch.randn(BATCH * t, c, h, w, device=device)
        grad = torch.randn_like(x)
        one_pass = temporal_shift_bytes(tuple(x.shape), t, 8, x.element_size())
        candidates = {"reference": lambda v, t=t: temporal_shift_reference(v, t)}
        candidates["torch"] = lambda v, t=t: temporal_shift(v, t, backend="torch")
        if device.type == "cuda":
            candidates["triton"] = lambda v, t=t: temporal_shift(v, t, backend="triton")
        case = f"T={t} ({BATCH * t},{c},{h},{w}) f32"
        fwd = {name: (lambda op=op: op(x)) for name, op in candidates.items()}
        fwd["clone (floor)"] = x.clone
        both = {name: _fwd_bwd(op, x, grad) for name, op in candidates.items()}
        both["clone (floor)"] = lambda: (x.clone(), grad.clone())
        clone_bytes = 2 * x.numel() * x.element_size()
        yield "temporal_shift", case, "fwd", fwd, {"clone (floor)": clone_bytes}, one_pass
        yield "temporal_shift", case, "fwd+bwd", both, {"clone (floor)": 2 * clone_bytes}, 2 * one_pass


def _gather_cases(device: torch.device, quick: bool):
    b, t, k = (2 if quick else BATCH), 32, 8
    gen = torch.Generator(device=device).manual_seed(0)
    frames = torch.randint(0, 256, (b, t, 3, 224, 224), dtype=torch.uint8, device=device, generator=gen)
    index = topk_frame_index(torch.rand(b, t, device=device, generator=gen), k)
    mean, std = torch.tensor(MEAN, device=device), torch.tensor(STD, device=device)
    case = f"{k} of {t} ({b},{t},3,224,224) u8->f32"
    fns = {"reference": lambda: gather_frames_reference(frames, index, mean=mean, std=std)}
    fns["torch"] = lambda: gather_frames(frames, index, mean=mean, std=std, backend="torch")
    if device.type == "cuda":
        fns["triton"] = lambda: gather_frames(frames, index, mean=mean, std=std, backend="triton")
    fns["to float (floor)"] = lambda: frames[:, :k].float()
    nbytes = gather_frames_bytes(tuple(frames.shape), tuple(index.shape), 1, 4)
    yield "gather_frames", case, "fwd", fns, {}, nbytes
    if device.type == "cuda":
        s = 224
        centers = torch.full((b, k, 2), 111.5, device=device)
        strides = torch.full((b, k, 2), 0.75, device=device)
        args = (frames, index, None, centers, strides, s)
        zoom = {"reference": lambda: sample_details_reference(*args, mean=mean, std=std)}
        zoom["triton"] = lambda: sample_details(*args, mean=mean, std=std, backend="triton")
        nbytes = sample_details_bytes(tuple(frames.shape), tuple(index.shape), centers, strides, s, 1, 4)
        yield "sample_details", f"{k} of {t} -> {s}px zoom 0.75", "fwd", zoom, {}, nbytes


def bench_kernels(
    device: str = "auto", repeats: int = 20, json_path: str | None = None, quick: bool = False
) -> list[dict]:
    """Time every op against its reference (and floor); print a table, return (and optionally
    write as JSON) one dict per measured row. `device`: "auto" (CUDA if available), "cpu",
    "cuda"; `quick`: two shift shapes, a batch-2 gather and at most 3 repeats, for smoke tests."""
    dev = resolve_device(device)
    if quick:
        repeats = min(repeats, 3)
    copy_bw = _copy_bandwidth(dev, repeats) if dev.type == "cuda" else None
    rows: list[dict] = []
    # Cases are generated one at a time so that only one case's tensors are alive.
    for op, case, direction, fns, floor_bytes, op_bytes in itertools.chain(
        _shift_cases(dev, quick), _gather_cases(dev, quick)
    ):
        times = _median_times(fns, repeats, dev)
        floor = next((v for name, v in times.items() if name.endswith("(floor)")), times["reference"])
        for impl, seconds in times.items():
            nbytes = floor_bytes.get(impl, op_bytes)
            row = {
                "op": op, "case": case, "direction": direction, "impl": impl, "device": str(dev),
                "ms": seconds * 1e3, "vs_floor": seconds / floor, "vs_reference": seconds / times["reference"],
                "bytes": nbytes, "repeats": repeats,
            }
            if copy_bw is not None:
                row["gb_per_s"] = nbytes / seconds / 1e9
                row["of_copy_bw"] = nbytes / seconds / copy_bw
            rows.append(row)
    _print_table(rows, copy_bw)
    if json_path is not None:
        with open(json_path, "w") as f:
            json.dump({"copy_gb_per_s": None if copy_bw is None else copy_bw / 1e9, "rows": rows}, f, indent=1)
    return rows


def _print_table(rows: list[dict], copy_bw: float | None) -> None:
    header = f"{'op':<15} {'case':<34} {'pass':<8} {'impl':<17} {'ms':>9} {'x floor':>8} {'x ref':>7}"
    if copy_bw is not None:
        print(f"device-to-device copy: {copy_bw / 1e9:.0f} GB/s")
        header += f" {'GB/s':>7} {'of copy':>8}"
    print(header)
    for r in rows:
        line = (
            f"{r['op']:<15} {r['case']:<34} {r['direction']:<8} {r['impl']:<17} {r['ms']:>9.3f} "
            f"{r['vs_floor']:>8.3f} {r['vs_reference']:>7.3f}"
        )
        if copy_bw is not None:
            line += f" {r['gb_per_s']:>7.0f} {r['of_copy_bw']:>8.1%}"
        print(line)


@click.command(cls=UserErrorCommand)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--repeats", default=20, show_default=True, help="Timed repeats per case; medians are reported.")
@click.option("--quick", is_flag=True, help="Fewer shapes and repeats: a smoke run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def bench_kernels_command(device, repeats, quick, json_path):
    """Time temporal_shift, gather_frames and sample_details against their references.

    Shapes are TSM-ResNet-50's shift inputs for 8 and 16 frames at 224 (batch 8) and a gather
    of 8 of 32 uint8 candidates at 224. On CPU the torch paths are compared with the reference
    and with a clone of the same tensor (the floor for producing a new tensor); on CUDA the
    Triton kernels also report GB/s and the fraction of device-to-device copy bandwidth.
    """
    bench_kernels(device=device, repeats=repeats, json_path=json_path, quick=quick)
