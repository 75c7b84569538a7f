"""Registered datasets and how a config resolves to a root folder and list files.

Each dataset has a root folder (DATA.ROOT, else `$S2D_<NAME>_ROOT`, else `data/<name>`) that
holds its TSN list files and the videos or frame folders the lists name. DATA.TRAIN_LIST and
DATA.VAL_LIST, when set, are paths of their own (absolute or relative to the working directory,
like any command-line path); the entries inside a list are relative to the root.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from s2d_fast.config import ConfigError

INPUT_FORMATS = ("video", "frames")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    train_list: str  # relative to the root
    val_list: str
    frame_template: str = "img_{:05d}.jpg"  # file names inside a frame folder, 1-based (TSN)
    input_format: str = "video"  # video | frames
    flip: bool = True  # False where left and right matter (something-something, synthetic)

    @property
    def env_var(self) -> str:
        return "S2D_" + self.name.upper().replace("-", "_") + "_ROOT"

    def default_root(self) -> Path:
        return Path(os.environ.get(self.env_var) or Path("data") / self.name)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        # Generated on first use under DATA.CACHE_DIR (synthetic.ensure_synthetic). No flip: its
        # markings are drawn pixel-exact and it stands in for datasets where direction matters.
        DatasetSpec("synthetic", 12, "train.txt", "val.txt", flip=False),
        DatasetSpec("kinetics400", 400, "train.txt", "val.txt"),
        DatasetSpec("mini-kinetics", 200, "train.txt", "val.txt"),
        # TSM's frame lists; v1 ships frames named 00001.jpg, TSM's v2 extraction 000001.jpg.
        DatasetSpec("somethingv1", 174, "train_videofolder.txt", "val_videofolder.txt",
                    frame_template="{:05d}.jpg", input_format="frames", flip=False),
        DatasetSpec("somethingv2", 174, "train_videofolder.txt", "val_videofolder.txt",
                    frame_template="{:06d}.jpg", input_format="frames", flip=False),
    )
}


@dataclass(frozen=True)
class ResolvedDataset:
    spec: DatasetSpec
    root: Path
    train_list: Path
    val_list: Path
    num_classes: int
    fmt: str  # video | frames
    list_hints: tuple[str, str]  # which keys set the train and val list paths, for error messages

    def list_file(self, split: str) -> Path:
        """The list file of `split`, checked to exist only now: evaluation never needs train."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        path = self.train_list if split == "train" else self.val_list
        if not path.is_file():
            what = "training" if split == "train" else "validation"
            hint = self.list_hints[SPLITS.index(split)]
            raise ConfigError(f"{self.spec.name}: {what} list file not found: {path} ({hint})")
        return path


def _nearest(name: str) -> str:
    near = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.6)
    if near:
        return f"did you mean {', '.join(near)}? "
    return ""


def _root(cfg, spec: DatasetSpec) -> tuple[Path, str]:
    """The root folder and the keys that choose it."""
    if cfg.DATA.ROOT:
        return Path(cfg.DATA.ROOT).expanduser(), "DATA.ROOT"
    if spec.name == "synthetic":
        from s2d_fast.data.synthetic import ensure_synthetic  # PyAV and the renderer only when needed

        return ensure_synthetic(cfg), "DATA.ROOT"
    return spec.default_root(), f"DATA.ROOT / ${spec.env_var}"


def _synthetic_format(cfg, root: Path) -> str:
    """A generated folder says what it holds (DATA.ROOT may name one `prepare synthetic` wrote)."""
    from s2d_fast.data.synthetic import read_meta

    meta = read_meta(root)
    written = meta["format"] if meta else cfg.SYNTHETIC.FORMAT
    return "frames" if written == "frames" else "video"


def resolve_dataset(cfg) -> ResolvedDataset:
    """The dataset DATA.DATASET names, with the DATA.* overrides applied; generates the built-in
    synthetic dataset on first use. List files are checked later, by `list_file`."""
    name = cfg.DATA.DATASET
    spec = DATASETS.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown dataset {name!r} in DATA.DATASET; {_nearest(name)}registered: {', '.join(DATASETS)}"
        )
    if cfg.DATA.INPUT_FORMAT not in INPUT_FORMATS + ("",):
        raise ConfigError(
            f"config key DATA.INPUT_FORMAT must be one of {', '.join(INPUT_FORMATS)} or ''; got {cfg.DATA.INPUT_FORMAT!r}"
        )
    if cfg.DATA.NUM_CLASS < 0:
        raise ConfigError(f"config key DATA.NUM_CLASS must be 0 (the dataset's count) or positive; got {cfg.DATA.NUM_CLASS}")
    root, root_keys = _root(cfg, spec)
    fmt = cfg.DATA.INPUT_FORMAT or spec.input_format
    if spec.name == "synthetic" and not cfg.DATA.INPUT_FORMAT:
        fmt = _synthetic_format(cfg, root)
    lists, hints = [], []
    for key, default in (("TRAIN_LIST", spec.train_list), ("VAL_LIST", spec.val_list)):
        if cfg.DATA[key]:
            lists.append(Path(cfg.DATA[key]).expanduser())
            hints.append(f"set by DATA.{key}")
        else:
            lists.append(root / default)
            hints.append(f"set DATA.{key}, or {root_keys} for the folder")
    return ResolvedDataset(
        spec=spec,
        root=root,
        train_list=lists[0],
        val_list=lists[1],
        num_classes=cfg.DATA.NUM_CLASS or spec.num_classes,
        fmt=fmt,
        list_hints=(hints[0], hints[1]),
    )
