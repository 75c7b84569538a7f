"""Every rule that ties config keys together, in one place (PySlowFast's `assert_and_infer_cfg`).

`load_config` runs `assert_and_infer_cfg` on every merged config, so a config that reaches the
rest of the package is known to be usable: each error names the keys involved and the values
they have. The one rule that needs the run itself, the training batch against the number of
processes, is `check_batch_for_world`, called once the process group exists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fvcore.common.config import CfgNode

from s2d_fast.errors import UserError

from .defaults import CHOICES

# Every backbone of the model table has four stages after its stem (ResNets' layer1-4,
# MobileNetV2 cut where the resolution halves); S2D.FUSION_STAGES counts them from 1.
BACKBONE_STAGES = 4

# The smallest value of integer keys that count something.
_MINIMUMS = {
    "TRAIN.BATCH_SIZE": 1,
    "TRAIN.ACCUM_STEPS": 1,
    "TRAIN.EPOCHS": 0,
    "TRAIN.CHECKPOINT_PERIOD": 1,
    "TRAIN.EVAL_PERIOD": 0,
    "TRAIN.LOG_PERIOD": 1,
    "TEST.BATCH_SIZE": 1,
    "DATA.NUM_CANDIDATES": 1,
    "DATA.NUM_WORKERS": 0,
    "DATA.DECODED_CACHE_MB": 0,
    "SNET.NUM_FRAMES": 1,
    "DNET.NUM_FRAMES": 1,
    "DATA.MAX_FRAMES": 1,
    "DATA.FRAME_STRIDE": 1,
    "S2D.TOPK": 1,
}


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the key and, if any, the file."""


def value_of(cfg: CfgNode, key: str):
    """The value of the dotted key `key` (e.g. "TRAIN.BASE_LR")."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


# DATA.INPUT_FORMAT's choices; "" takes the dataset's own.
INPUT_FORMATS = ("video", "frames")


def _check_choices(cfg: CfgNode) -> None:
    for key, choices in CHOICES.items():
        value = value_of(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key {key} must be one of {', '.join(choices)}; got {value!r}")
    if cfg.DATA.INPUT_FORMAT not in INPUT_FORMATS + ("",):
        raise ConfigError(
            f"config key DATA.INPUT_FORMAT must be one of {', '.join(INPUT_FORMATS)} or ''; got {cfg.DATA.INPUT_FORMAT!r}"
        )


def _check_minimums(cfg: CfgNode) -> None:
    for key, low in _MINIMUMS.items():
        if value_of(cfg, key) < low:
            raise ConfigError(f"config key {key} must be at least {low}; got {value_of(cfg, key)}")
    if cfg.DATA.NUM_CLASS < 0:
        raise ConfigError(f"config key DATA.NUM_CLASS must be 0 (the dataset's count) or positive; got {cfg.DATA.NUM_CLASS}")
    if not 0 <= cfg.TRAIN.MOMENTUM < 1:
        raise ConfigError(f"config key TRAIN.MOMENTUM must be in [0, 1) (SGD momentum, AdamW beta1); got {cfg.TRAIN.MOMENTUM}")


def _check_frames(cfg: CfgNode) -> None:
    candidates = "DATA.MAX_FRAMES" if cfg.DATA.CANDIDATES == "all" else "DATA.NUM_CANDIDATES"
    if cfg.DATA.FRAME_STRIDE != 1 and cfg.DATA.CANDIDATES != "all":
        raise ConfigError(f"config key DATA.FRAME_STRIDE ({cfg.DATA.FRAME_STRIDE}) applies to DATA.CANDIDATES all; "
                          f"the segments spread over the whole video whatever the stride")
    for key in ("SNET.NUM_FRAMES", "DNET.NUM_FRAMES"):
        if value_of(cfg, key) > value_of(cfg, candidates):
            raise ConfigError(
                f"config key {key} ({value_of(cfg, key)}) exceeds {candidates} "
                f"({value_of(cfg, candidates)}): frames are chosen among the candidates"
            )


def _check_views(cfg: CfgNode) -> None:
    data = cfg.DATA
    if data.CROP_SIZE > data.SCALE_SIZE:
        raise ConfigError(f"DATA.CROP_SIZE ({data.CROP_SIZE}) must not exceed DATA.SCALE_SIZE ({data.SCALE_SIZE})")
    if data.NUM_CROPS not in (1, 3):
        raise ConfigError(f"DATA.NUM_CROPS must be 1 or 3; got {data.NUM_CROPS}")
    if data.NUM_CLIPS < 1:
        raise ConfigError(f"DATA.NUM_CLIPS must be at least 1; got {data.NUM_CLIPS}")
    for key in ("DATA.MEAN", "DATA.STD"):
        value = value_of(cfg, key)
        if len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"config key {key} needs three numbers, one per RGB channel; got {value!r}")
    if min(data.STD) <= 0:
        raise ConfigError(f"config key DATA.STD must be positive; got {list(data.STD)!r}")
    if data.DECODED_CACHE_MB and data.BACKEND == "dali":
        raise ConfigError(f"config key DATA.DECODED_CACHE_MB ({data.DECODED_CACHE_MB}) keeps frames the PyAV backend "
                          "decoded; with DATA.BACKEND dali set it to 0, or choose DATA.BACKEND pyav or auto")


def _check_backbones(cfg: CfgNode) -> None:
    for net in ("SNET", "DNET"):
        if cfg[net].TEMPORAL_POOL and cfg[net].ARCH == "mobilenetv2":
            raise ConfigError(f"config key {net}.TEMPORAL_POOL: temporal pooling is defined for the ResNet backbones "
                              f"only, as in TSM; {net}.ARCH is mobilenetv2")
        if cfg[net].TEMPORAL_POOL and cfg[net].NUM_FRAMES % 2:
            raise ConfigError(f"config key {net}.TEMPORAL_POOL halves the frames: {net}.NUM_FRAMES must be even, "
                              f"got {cfg[net].NUM_FRAMES}")
    if cfg.KERNELS.BACKEND == "triton" and importlib.util.find_spec("triton") is None:
        raise ConfigError("config key KERNELS.BACKEND triton: Triton is not installed (it exists for Linux only); "
                          "auto or torch runs the torch paths")


def _check_authors_parts(cfg: CfgNode) -> None:
    s2d = cfg.S2D
    if s2d.PARAMETERISATION == "authors":
        for key, wanted in (("S2D.TEMPORAL_METHOD", "gaussian"), ("S2D.SPATIAL_METHOD", "gaussian"),
                            ("S2D.STRIDE_PARAM", "exp"), ("S2D.PREDICT_SIGMA", False)):
            if value_of(cfg, key) != wanted:
                raise ConfigError(f"S2D.PARAMETERISATION authors is Gaussian with exp strides and fixed sigmas: "
                                  f"{key} must be {wanted!r}, got {value_of(cfg, key)!r}")
    if s2d.THETA == "trunk" and s2d.PREDICT_SIGMA:
        raise ConfigError("S2D.THETA trunk has no sigma heads (the authors' PREDICT_SIGMA does not run): "
                          "set S2D.PREDICT_SIGMA False")
    if cfg.DATA.CANDIDATES == "all" and cfg.DATA.NUM_CLIPS != 1:
        raise ConfigError(f"DATA.CANDIDATES all reads every frame once: DATA.NUM_CLIPS must be 1, got {cfg.DATA.NUM_CLIPS}")


def _check_model(cfg: CfgNode) -> None:
    for stage in cfg.S2D.FUSION_STAGES:
        if not (isinstance(stage, int) and 1 <= stage <= BACKBONE_STAGES):
            raise ConfigError(
                f"S2D.FUSION_STAGES: stage {stage} does not exist; DNet has stages 1-{BACKBONE_STAGES}"
            )
    if len(set(cfg.S2D.FUSION_STAGES)) != len(cfg.S2D.FUSION_STAGES):
        raise ConfigError(f"S2D.FUSION_STAGES names a stage twice: {list(cfg.S2D.FUSION_STAGES)}")
    if cfg.S2D.EVIDENCE_LOSS_WEIGHT < 0:
        raise ConfigError(f"S2D.EVIDENCE_LOSS_WEIGHT must be >= 0 (0 switches it off), got {cfg.S2D.EVIDENCE_LOSS_WEIGHT}")
    if cfg.S2D.EVIDENCE_ZOOM < 0:
        raise ConfigError(f"S2D.EVIDENCE_ZOOM must be >= 0 (0: no scale target), got {cfg.S2D.EVIDENCE_ZOOM}")
    if cfg.S2D.EVIDENCE_TEMPERATURE <= 0:
        raise ConfigError(f"S2D.EVIDENCE_TEMPERATURE must be positive, got {cfg.S2D.EVIDENCE_TEMPERATURE}")
    if cfg.S2D.EVIDENCE_FRAME != "saliency" and cfg.S2D.EVIDENCE_MAP != "saliency":
        raise ConfigError(f"S2D.EVIDENCE_FRAME {cfg.S2D.EVIDENCE_FRAME} weighs the saliency's frames: "
                          "set S2D.EVIDENCE_MAP saliency")
    placed = [f"S2D.{key}" for key in ("SAMPLER_ANCHOR", "WARMUP_WINDOW") if cfg.S2D[key] == "evidence"]
    if (cfg.S2D.EVIDENCE_LOSS_WEIGHT or placed) and cfg.SNET.TEMPORAL_POOL:
        raise ConfigError("SNet's evidence (S2D.EVIDENCE_LOSS_WEIGHT, S2D.SAMPLER_ANCHOR / S2D.WARMUP_WINDOW evidence) "
                          "reads its map frame by frame: set SNET.TEMPORAL_POOL False")
    if placed and cfg.S2D.PARAMETERISATION != "s2d-fast":
        raise ConfigError(f"{placed[0]} evidence moves the s2d-fast sampler's parameters: "
                          "set S2D.PARAMETERISATION s2d-fast")


def _check_mixup(cfg: CfgNode) -> None:
    mix = cfg.MIXUP
    for key in ("ALPHA", "CUTMIX_ALPHA"):
        if mix[key] < 0:
            raise ConfigError(f"MIXUP.{key} must be >= 0 (0 turns it off), got {mix[key]}")
    for key in ("PROB", "SWITCH_PROB"):
        if not 0 <= mix[key] <= 1:
            raise ConfigError(f"MIXUP.{key} is a probability, between 0 and 1; got {mix[key]}")
    if mix.ENABLE and mix.ALPHA == 0 and mix.CUTMIX_ALPHA == 0:
        raise ConfigError("MIXUP.ENABLE True mixes nothing with MIXUP.ALPHA and MIXUP.CUTMIX_ALPHA both 0: set one")


def read_flip_label_map(path: str) -> dict[int, int]:
    """DATA.FLIP_LABEL_MAP's `a b` lines: class a seen mirrored is class b (and b mirrored is a),
    e.g. Something-Something's "pushing left to right" and "pushing right to left"."""
    if not Path(path).is_file():
        raise ConfigError(f"DATA.FLIP_LABEL_MAP {path}: no such file")
    mapping: dict[int, int] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                a, b = (int(v) for v in fields)
            except ValueError:
                raise ConfigError(
                    f"DATA.FLIP_LABEL_MAP {path}:{lineno}: expected two class numbers `a b`, got {line.strip()!r}"
                ) from None
            mapping[a], mapping[b] = b, a
    return mapping


def assert_and_infer_cfg(cfg: CfgNode) -> CfgNode:
    """Check every rule between the keys of `cfg`; raise ConfigError naming the keys of the first
    one broken. Returns `cfg`."""
    _check_choices(cfg)
    _check_minimums(cfg)
    _check_frames(cfg)
    _check_views(cfg)
    _check_backbones(cfg)
    _check_authors_parts(cfg)
    _check_model(cfg)
    _check_mixup(cfg)
    if cfg.TRAIN.COMPILE and not uses_gpus(cfg):
        raise ConfigError(
            "TRAIN.COMPILE True: compiled training steps are no faster than eager ones on the CPU, after minutes "
            "of compiling (measured by `s2d-fast bench train`, bench/RESULTS.md), so it is offered on GPUs only "
            "(NUM_GPUS > 0); on the CPU, TRAIN.AMP bf16 is the switch that speeds training up")
    if cfg.DATA.FLIP_LABEL_MAP:
        read_flip_label_map(cfg.DATA.FLIP_LABEL_MAP)
    return cfg


def uses_gpus(cfg: CfgNode) -> bool:
    """Whether the run's processes use GPUs: NUM_GPUS > 0, unless DIST.DEVICE puts them on the CPU."""
    return cfg.NUM_GPUS > 0 and cfg.DIST.DEVICE != "cpu"


def num_candidates(cfg: CfgNode) -> int:
    """T, the candidates of every sample: DATA.NUM_CANDIDATES, or DATA.MAX_FRAMES for every frame."""
    return cfg.DATA.MAX_FRAMES if cfg.DATA.CANDIDATES == "all" else cfg.DATA.NUM_CANDIDATES


def process_batch_size(cfg: CfgNode, world: int) -> int:
    """The training batch of one of `world` processes: TRAIN.BATCH_SIZE itself
    (TRAIN.BATCH_SIZE_SCOPE process, the authors'), or its share of the whole batch."""
    if cfg.TRAIN.BATCH_SIZE_SCOPE == "process":
        return cfg.TRAIN.BATCH_SIZE
    if cfg.TRAIN.BATCH_SIZE % world:
        raise ConfigError(f"TRAIN.BATCH_SIZE ({cfg.TRAIN.BATCH_SIZE}) must be a multiple of the {world} processes")
    return cfg.TRAIN.BATCH_SIZE // world


def learning_rates(cfg: CfgNode, world: int) -> tuple[float, float, int]:
    """The run's base and ramp-start learning rates and its global batch (videos per optimiser
    step, every process and accumulated batch counted). TRAIN.BASE_LR_SCOPE video multiplies
    BASE_LR and WARMUP_LR by that batch, as the authors' LR scaling does."""
    batch = process_batch_size(cfg, world) * world * cfg.TRAIN.ACCUM_STEPS
    scale = batch if cfg.TRAIN.BASE_LR_SCOPE == "video" else 1
    return cfg.TRAIN.BASE_LR * scale, cfg.TRAIN.WARMUP_LR * scale, batch
