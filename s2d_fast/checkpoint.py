"""Checkpoints: where a run keeps them, written atomically, read back with
`torch.load(weights_only=True)`, exported as safetensors."""

from __future__ import annotations

import json
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


def _first_line_with(text: str, word: str) -> str:
    return next((line.strip() for line in text.splitlines() if word in line), "")


def _load_torch(path: Path, map_location, mmap: bool):
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"{path}: not a checkpoint written by torch.save ({err})") from None
        detail = _first_line_with(str(err), "Unsupported")
        raise CheckpointError(
            f"{path}: refused to load: it holds objects that need arbitrary code to unpickle "
            f"(only tensors and plain Python containers are accepted){'; ' + detail if detail else ''}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError) as err:
        # The first sentence of torch's reason; a bare key or index (what pickle says of a text
        # file) says nothing worth showing.
        reason = str(err).splitlines()[0].split(". ")[0] if isinstance(err, (RuntimeError, EOFError)) else ""
        raise CheckpointError(f"{path}: not a checkpoint written by torch.save{f' ({reason})' if reason else ''}") from None


def _load_safetensors(path: Path, map_location) -> dict:
    """A file `export` wrote: the weights, and the stage, epoch, class count and config it
    carries as metadata, in a training checkpoint's keys."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if not meta.get("num_classes"):
        raise CheckpointError(f"{path}: a safetensors file without s2d-fast's metadata (written by `s2d-fast export`?)")
    return {"model": tensors, "stage": meta.get("stage") or "sampling", "epoch": int(meta.get("epoch") or 0),
            "num_classes": int(meta["num_classes"]), "config": meta.get("config", ""),
            "class_names": json.loads(meta["class_names"]) if meta.get("class_names") else None}


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, mmap: bool = False) -> dict:
    """A training checkpoint (read with `weights_only=True`: tensors and plain containers only,
    no code runs; `mmap` maps the tensors instead of reading them) or a `.safetensors` export."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    return _load_torch(path, map_location, mmap)


def stored_config(path: str | os.PathLike) -> str:
    """The YAML config a checkpoint was trained with ("" if it has none), read without loading
    its weights."""
    state = load_checkpoint(path, mmap=Path(path).suffix != ".safetensors")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an s2d-fast checkpoint")
    return state.get("config") or ""


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The model weights of a training checkpoint as plain safetensors, with the stage, class
    count, class names and config as metadata: no optimiser, no pickle. `eval` and `predict`
    read it as they read the checkpoint."""
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
        "class_names": json.dumps(state.get("class_names")) if state.get("class_names") else "",
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    return out
