"""What every run needs: seeds, logging, mixed precision, compilation, the device layout."""

from __future__ import annotations

import logging
import platform
import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("s2d_fast")

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (`lscpu`'s), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 inference
    beats float32; elsewhere it is emulated and slower."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


# TEST.COMPILE auto compiles an evaluation of at least this many multiply-adds (x 1e9) per
# process, videos x GFLOPs/video: measured on 2 cores (bench/RESULTS.md), compiling takes 40-55 s
# and then saves about a quarter of eager bf16's time at ~125 GMAC/s, which pays off from here.
AUTO_COMPILE_MIN_GMACS = 20_000


@dataclass(frozen=True)
class InferenceSettings:
    """How eval and predict run the model, TEST.AMP / CHANNELS_LAST / COMPILE / FOLD_BN resolved."""

    amp: str
    channels_last: bool
    compile: bool
    fold_bn: bool
    chosen: tuple[str, ...] = ()  # the keys that were `auto`

    def describe(self) -> str:
        parts = [f"{self.amp} autocast" if self.amp != "none" else "float32",
                 "channels_last" if self.channels_last else "contiguous",
                 "compiled with weight freezing" if self.compile else "eager"]
        if self.fold_bn:
            parts.append("BatchNorm folded")
        text = "inference: " + ", ".join(parts)
        if self.chosen:
            why = "this CPU has native bf16" if native_bf16() else "no native bf16 here"
            text += f" ({', '.join(self.chosen)} auto: {why}; set them to turn each off or on)"
        return text


def inference_settings(cfg, device: torch.device, gmacs_per_process: float | None = None) -> InferenceSettings:
    """TEST's speed switches for this device. `auto`: on a CPU with native bf16 (AVX512-BF16 or
    AMX), bf16 autocast and channels_last, and torch.compile for evaluations of at least
    AUTO_COMPILE_MIN_GMACS multiply-adds per process (`gmacs_per_process`, x 1e9: where the
    compilation is won back); float32, contiguous and eager elsewhere (GPUs included, where we
    have not measured)."""
    test = cfg.TEST
    fast_cpu = device.type == "cpu" and native_bf16()
    worth_compiling = fast_cpu and gmacs_per_process is not None and gmacs_per_process >= AUTO_COMPILE_MIN_GMACS
    chosen = tuple(key for key, value in (("TEST.AMP", test.AMP), ("TEST.CHANNELS_LAST", test.CHANNELS_LAST),
                                          ("TEST.COMPILE", test.COMPILE)) if value == "auto")
    return InferenceSettings(
        amp=("bf16" if fast_cpu else "none") if test.AMP == "auto" else test.AMP,
        channels_last={"on": True, "off": False, "auto": fast_cpu}[test.CHANNELS_LAST],
        compile={"on": True, "off": False, "auto": worth_compiling}[test.COMPILE],
        fold_bn=test.FOLD_BN,
        chosen=chosen,
    )


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(output_dir: str | Path | None = None, name: str = "log.txt", quiet: bool = False) -> None:
    """Log lines to stderr (unless `quiet`, as on ranks other than 0) and, with an output
    folder, to a file in it."""
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        logger.addHandler(console)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / name)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


def training_amp(cfg, device: torch.device) -> str:
    """TRAIN.AMP resolved for this device: `auto` is bf16 on a CPU with native bf16 (where a
    training step runs 1.6-1.8x float32's, `s2d-fast bench train`), float32 elsewhere (GPUs
    included, where we have not measured)."""
    if cfg.TRAIN.AMP != "auto":
        return cfg.TRAIN.AMP
    return "bf16" if device.type == "cpu" and native_bf16() else "none"


def autocast(device: torch.device, amp: str):
    """The autocast context of TRAIN.AMP / TEST.AMP: none, bf16 (CPU and GPU) or fp16."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[amp])


class FrozenInference(torch.nn.Module):
    """A compiled module run with Inductor's weight freezing switched on while it runs, and only
    then. Dynamo reads the setting when it traces (the weights become constants of the graph),
    which happens at the first call and at every recompilation, so it cannot travel with
    `torch.compile`'s options; outside the calls the process-wide setting is as it was."""

    def __init__(self, compiled):
        super().__init__()
        self.compiled = compiled

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)


def compile_model(model, enabled: bool, mode: str, *, training: bool):
    """`torch.compile(model, mode)` when enabled. For inference on the CPU, Inductor's weight
    freezing folds the (constant) weights into the graph: measured here on TSM-ResNet-50 8x224
    bf16 channels_last, compiled without freezing ran 0.87x eager, with freezing 1.35x."""
    if not enabled:
        return model
    compiled = torch.compile(model, mode=None if mode == "default" else mode)
    if not training and not torch.cuda.is_available():
        return FrozenInference(compiled)
    return compiled


def to_device(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """Move the model; with `channels_last`, its 2-D convolutions take that memory format (f_theta's
    3-D convolutions have no such format and stay as they are)."""
    model.to(device)
    if channels_last:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    return model
