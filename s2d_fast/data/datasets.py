"""Registered datasets: how a config resolves to a root folder, list files, frame names and
class names.

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

from . import synthetic
from .decoders import TSN_FRAME_TEMPLATE

SPLITS = ("train", "val")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    train_list: str  # relative to the root
    val_list: str
    frame_template: str = TSN_FRAME_TEMPLATE  # file names inside a frame folder, 1-based
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
        DatasetSpec("synthetic", len(synthetic.CLASSES), "train.txt", "val.txt", synthetic.FRAME_TEMPLATE, flip=False),
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
    frame_template: str
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


def _root(cfg, spec: DatasetSpec, generate: bool) -> tuple[Path, str]:
    """The root folder and the keys that choose it."""
    if cfg.DATA.ROOT:
        return Path(cfg.DATA.ROOT).expanduser(), "DATA.ROOT"
    if spec.name == "synthetic":
        if not generate and not synthetic.is_cached(cfg):
            raise ConfigError(f"the built-in dataset is not generated yet under DATA.CACHE_DIR ({cfg.DATA.CACHE_DIR})")
        return synthetic.ensure_synthetic(cfg), "DATA.ROOT"
    return spec.default_root(), f"DATA.ROOT / ${spec.env_var}"


def _synthetic_format(cfg, root: Path) -> str:
    """A generated folder says what it holds (DATA.ROOT may name one `prepare synthetic` wrote)."""
    meta = synthetic.read_meta(root)
    written = meta["format"] if meta else cfg.SYNTHETIC.FORMAT
    return "frames" if written == "frames" else "video"


def dataset_spec(cfg) -> DatasetSpec:
    """The registered dataset DATA.DATASET names; an unknown name fails with the nearest ones."""
    spec = DATASETS.get(cfg.DATA.DATASET)
    if spec is None:
        name = cfg.DATA.DATASET
        raise ConfigError(
            f"unknown dataset {name!r} in DATA.DATASET; {_nearest(name)}registered: {', '.join(DATASETS)}"
        )
    return spec


def frame_template(cfg) -> str:
    """How frame files are named: DATA.FRAME_TEMPLATE, else the dataset's own names (TSN's for
    a dataset that is not registered)."""
    spec = DATASETS.get(cfg.DATA.DATASET)
    return cfg.DATA.FRAME_TEMPLATE or (spec.frame_template if spec else TSN_FRAME_TEMPLATE)


def resolve_dataset(cfg, *, generate: bool = True) -> ResolvedDataset:
    """The dataset DATA.DATASET names, with the DATA.* overrides applied; generates the built-in
    synthetic dataset on first use (unless `generate` is False: then a dataset not yet generated
    is a ConfigError). List files are checked later, by `list_file`."""
    spec = dataset_spec(cfg)
    root, root_keys = _root(cfg, spec, generate)
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
        frame_template=frame_template(cfg),
        list_hints=(hints[0], hints[1]),
    )


# Classes assumed when neither DATA.NUM_CLASS nor a registered DATA.DATASET gives a count.
DEFAULT_CLASSES = 400


def resolve_num_classes(cfg, num_classes: int | None = None) -> tuple[int, str]:
    """The class count of a model for `cfg` when no data is read, and where it came from."""
    if num_classes is not None:
        return num_classes, "given"
    if cfg.DATA.NUM_CLASS > 0:
        return cfg.DATA.NUM_CLASS, "DATA.NUM_CLASS"
    spec = DATASETS.get(cfg.DATA.DATASET)
    if spec is not None:
        return spec.num_classes, f"dataset {spec.name}"
    return DEFAULT_CLASSES, (
        f"assumed: DATA.NUM_CLASS is 0 and {cfg.DATA.DATASET!r} is not a registered dataset"
    )


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class name per line, line i naming class i (trailing blank lines ignored)."""
    names = [line.strip() for line in Path(path).read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


def class_names(cfg, num_classes: int, label_map: str | None = None) -> list[str] | None:
    """Names by class id: from `label_map`, else the built-in dataset's (its `classes.txt` under
    DATA.ROOT, else the generator's CLASSES), else None (classes are shown by id)."""
    if label_map:
        names = read_class_names(label_map)
        if len(names) != num_classes:
            raise ConfigError(f"{label_map}: {len(names)} class names, but the checkpoint has {num_classes} classes")
        return names
    if cfg.DATA.DATASET != "synthetic":
        return None
    listed = Path(cfg.DATA.ROOT).expanduser() / "classes.txt" if cfg.DATA.ROOT else None
    names = (read_class_names(listed) if listed is not None and listed.is_file()
             else list(synthetic.TASKS[cfg.SYNTHETIC.TASK]))
    # DATA.NUM_CLASS may have changed the count: then the names are not these classes'.
    return names if len(names) == num_classes else None
