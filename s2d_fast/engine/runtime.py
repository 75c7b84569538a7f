"""What every run needs: seeds, logging, mixed precision, compilation, checkpoint paths."""

from __future__ import annotations

import logging
import random
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from s2d_fast.config import ConfigError

logger = logging.getLogger("s2d_fast")

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def autocast(device: torch.device, amp: str):
    """The autocast context of TRAIN.AMP / TEST.AMP: none, bf16 (CPU and GPU) or fp16."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[amp])


def compile_model(model, enabled: bool, mode: str, *, training: bool):
    """`torch.compile(model, mode)` when enabled. For inference on the CPU, Inductor's weight
    freezing folds the (constant) weights into the graph: measured here on TSM-ResNet-50 8x224
    bf16 channels_last, compiled without freezing ran 0.87x eager, with freezing 1.35x."""
    if not enabled:
        return model
    if not training and not torch.cuda.is_available():
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    return torch.compile(model, mode=None if mode == "default" else mode)


def to_device(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """Move the model; with `channels_last`, its 2-D convolutions take that memory format (f_theta's
    3-D convolutions have no such format and stay as they are)."""
    model.to(device)
    if channels_last:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    return model


def checkpoint_path(output_dir: str | Path, stage: str, which: str = "last") -> Path:
    """`OUTPUT_DIR/checkpoints/{stage}-{last|best}.pt`."""
    return Path(output_dir) / "checkpoints" / f"{stage}-{which}.pt"


def newest_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint evaluation takes when none is named: sampling's over warmup's, best over last."""
    for stage in ("sampling", "warmup"):
        for which in ("best", "last"):
            path = checkpoint_path(output_dir, stage, which)
            if path.is_file():
                return path
    raise ConfigError(
        f"no checkpoint in {Path(output_dir) / 'checkpoints'}; train first, or name one with "
        "--checkpoint (or TRAIN.RESUME)"
    )
