"""What every run needs before it starts: a device, seeds, logging, and where checkpoints live."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import numpy as np
import torch

from s2d_fast.config import ConfigError

logger = logging.getLogger("s2d_fast")


def select_device(cfg) -> torch.device:
    if cfg.NUM_GPUS == 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"NUM_GPUS {cfg.NUM_GPUS} asks for GPUs, but CUDA is not available on this machine; "
            "set NUM_GPUS 0 to run on the CPU"
        )
    if cfg.NUM_GPUS > 1:
        raise ConfigError(
            f"NUM_GPUS {cfg.NUM_GPUS}: training on several GPUs needs distributed data parallel, "
            "which this version does not have yet; set NUM_GPUS 1"
        )
    return torch.device("cuda", 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(output_dir: str | Path | None = None, name: str = "log.txt") -> None:
    """Log lines to stderr and, with an output folder, to a file in it."""
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / name)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)


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
