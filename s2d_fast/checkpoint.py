"""Checkpoints: where a run keeps them, written atomically, read back with
`torch.load(weights_only=True)`, exported as safetensors."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch

from s2d_fast.config import ConfigError
from s2d_fast.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing or cannot be read safely."""


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


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to `path` through a temporary file in the same folder, fsync, rename: a
    crash mid-write leaves the previous checkpoint intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def link_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give the checkpoint `source` a second name `path`, atomically, without writing it again:
    a hard link where the file system allows one, a copy otherwise. Later saves replace `source`
    by a new file, so `path` keeps the state it was given."""
    source, path = Path(source), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.link"
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (another device, some network file systems)
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with `weights_only=True`: tensors and plain containers only, no code runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects that need arbitrary code to unpickle "
            f"(only tensors and plain Python containers are accepted): {err}"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint: {err}") from None


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The model weights of a training checkpoint as plain safetensors, with the stage, class
    count and config as metadata: no optimiser, no pickle."""
    from safetensors.torch import save_file

    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{checkpoint}: not an s2d-fast training checkpoint (no 'model' weights)")
    tensors = {k: v.contiguous() for k, v in state["model"].items()}
    metadata = {
        "stage": str(state.get("stage", "")),
        "epoch": str(state.get("epoch", "")),
        "num_classes": str(state.get("num_classes", "")),
        "config": state.get("config", ""),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    return out
