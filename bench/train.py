"""Training step throughput: the configured model's whole optimiser step (forward, loss,
backward, gradient clipping, SGD with the run's parameter groups) in each mode, same batches.

Modes as in `bench eval` (`{eager|compiled}-{fp32|bf16|fp16}[-cl]`); compiled is
`runtime.compile_model(training=True)` (Inductor, no freezing: the weights change). Every mode
starts from the same seeded weights and trains on the same fixed random uint8 batches of
TRAIN.BATCH_SIZE (per process) x the candidates at DATA.CROP_SIZE, in the stage TRAIN.STAGE
names. After `warmup` steps (which compile), `steps` steps are timed per repeat, the modes
interleaved in a rotating order; videos/s is the median over repeats.
"""

from __future__ import annotations

import time

import click
import torch
from torch import nn

from s2d_fast.cli_support import PAIRS_SETTINGS, UserErrorCommand, config_arguments, config_from_args
from s2d_fast.config import num_candidates, process_batch_size
from s2d_fast.data.datasets import resolve_num_classes
from s2d_fast.engine.evaluate import write_json
from s2d_fast.engine.optim import build_optimizer
from s2d_fast.engine.runtime import autocast, compile_model, device_name, to_device
from s2d_fast.models import build_model

from .harness import interleaved_seconds, median, parse_mode, resolve_device, sync

DEFAULT_MODES = ("eager-fp32", "eager-bf16", "compiled-fp32", "compiled-bf16")


class _Stepper:
    """One mode: its own model, optimiser and scaler, stepping like the Trainer does."""

    def __init__(self, cfg, num_classes: int, device: torch.device, spec: dict):
        torch.manual_seed(cfg.RNG_SEED)
        self.model = build_model(cfg, num_classes, pretrained=False)
        self.model.set_stage(cfg.TRAIN.STAGE)
        to_device(self.model, device, spec["channels_last"]).train()
        self.optimizer, _ = build_optimizer(self.model, cfg, steps_per_epoch=1)
        self.scaler = torch.amp.GradScaler(device.type, enabled=spec["amp"] == "fp16")
        self.forward = compile_model(self.model, spec["compiled"], cfg.TRAIN.COMPILE_MODE, training=True)
        self.device, self.amp, self.clip = device, spec["amp"], cfg.TRAIN.CLIP_GRAD_NORM

    def step(self, frames, n_valid, labels) -> float:
        with autocast(self.device, self.amp):
            losses = self.model.loss(self.forward(frames, n_valid), labels)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        if self.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return losses["loss"].item()


def bench_train(cfg, *, modes=DEFAULT_MODES, steps: int = 3, warmup: int = 2, repeats: int = 3,
                device: str = "auto", json_path: str | None = None) -> dict:
    specs = {mode: parse_mode(mode) for mode in modes}
    if steps < 1 or warmup < 1 or repeats < 1:
        raise ValueError("steps, warmup and repeats must be at least 1")
    dev = resolve_device(device)
    num_classes, _ = resolve_num_classes(cfg)
    batch = process_batch_size(cfg, 1)
    gen = torch.Generator().manual_seed(cfg.RNG_SEED)
    t, size = num_candidates(cfg), cfg.DATA.CROP_SIZE
    data = [(torch.randint(0, 256, (batch, t, 3, size, size), dtype=torch.uint8, generator=gen).to(dev),
             torch.full((batch,), t, device=dev), torch.randint(0, num_classes, (batch,), generator=gen).to(dev))
            for _ in range(steps)]
    steppers, first_seconds, losses = {}, {}, {}
    for mode, spec in specs.items():
        steppers[mode] = _Stepper(cfg, num_classes, dev, spec)
        start = time.perf_counter()
        for i in range(warmup):
            losses[mode] = steppers[mode].step(*data[i % steps])
        sync(dev)
        first_seconds[mode] = round(time.perf_counter() - start, 1)
    def steps_of(stepper):
        def run():
            for frames, n_valid, labels in data:
                stepper.step(frames, n_valid, labels)
        return run

    seconds = interleaved_seconds({mode: steps_of(steppers[mode]) for mode in modes}, repeats, dev)
    runs = {mode: [batch * steps / s for s in seconds[mode]] for mode in modes}
    result = {
        "device": device_name(dev), "torch": torch.__version__, "stage": cfg.TRAIN.STAGE, "batch_size": batch,
        "candidates": [t, 3, size, size], "steps": steps, "repeats": repeats, "modes": list(modes),
        "videos_per_s": {mode: median(runs[mode]) for mode in modes}, "runs": runs,
        "warmup_seconds": first_seconds, "last_warmup_loss": losses,
    }
    print(format_table(result))
    if json_path:
        write_json(result, json_path)
    return result


def format_table(result: dict) -> str:
    modes = result["modes"]
    base = result["videos_per_s"][modes[0]]
    width = max(len(mode) for mode in modes)
    lines = [
        f"training steps ({result['stage']} stage) on {result['device']}, torch {result['torch']}",
        f"batch {result['batch_size']} x {'x'.join(map(str, result['candidates']))} uint8 candidates; "
        f"{result['steps']} steps per repeat, median of {result['repeats']}",
        "",
        f"{'mode':<{width}}  {'videos/s':>9}  {'x ' + modes[0]:>{len(modes[0]) + 2}}  {'warm-up s':>9}",
    ]
    for mode in modes:
        v = result["videos_per_s"][mode]
        lines.append(f"{mode:<{width}}  {v:>9.2f}  {v / base:>{len(modes[0]) + 2}.2f}  {result['warmup_seconds'][mode]:>9.0f}")
    return "\n".join(lines)


@click.command(cls=UserErrorCommand, context_settings=PAIRS_SETTINGS)
@click.option("--modes", default=",".join(DEFAULT_MODES), show_default=True,
              help="Comma-separated {eager|compiled}-{fp32|bf16|fp16}[-cl].")
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True, help="Timed steps per repeat.")
@click.option("--warmup", type=click.IntRange(min=1), default=2, show_default=True, help="Untimed steps first (they compile).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
@config_arguments
def bench_train_command(modes, steps, warmup, repeats, device, json_path, config_file, args):
    """Training step videos/s of the configured model, eager and compiled, fp32 and bf16.

    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train` (TRAIN.STAGE picks the stage).
    """
    cfg = config_from_args(config_file, args)
    try:
        bench_train(cfg, modes=[m.strip() for m in modes.split(",") if m.strip()], steps=steps, warmup=warmup,
                    repeats=repeats, device=device, json_path=json_path)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
