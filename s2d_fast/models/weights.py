"""Pretrained weights: torchvision's ImageNet checkpoints from the local torch hub cache, the
TSM reference implementation's checkpoints, and the backbones of s2d-fast checkpoints.

Every layout is matched through one canonical naming, torchvision's own (`conv1`, `layer1.0.conv1`,
`features.3.conv.0.0`, `fc`): our keys (`stem.0`, `stages.0.0.conv1.net`) and a checkpoint's
(`module.base_model.layer1.0.conv1.net`, `new_fc`) are both brought to it, so that a missing or
unexpected key is named as its own file names it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from s2d_fast.checkpoint import CheckpointError, load_checkpoint

from .backbones import BACKBONES

# Names shown in an error before the rest is summarised by a count.
_SHOWN = 20


class IncompatibleCheckpointError(CheckpointError):
    """A readable checkpoint whose weights do not fit the model; `missing` and `unexpected` name them."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected


def imagenet_file(arch: str) -> tuple[Path, str]:
    """Where torch hub caches `arch`'s ImageNet weights, and the URL they come from."""
    url = BACKBONES[arch].imagenet.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch`: from the hub cache, else downloaded into it.

    Offline with no cached file, the error says which file to place where.
    """
    path, url = imagenet_file(arch)
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except OSError as err:
            raise FileNotFoundError(
                f"ImageNet weights for {arch} are not cached and could not be downloaded ({err}); "
                f"download {url} and place it at {path}"
            ) from None
    return torch.load(path, map_location="cpu", weights_only=True)


def _is_resnet(backbone: nn.Module) -> bool:
    return BACKBONES[backbone.arch].layout == "resnet"


def canonical_key(key: str, resnet: bool) -> str:
    """One of our backbone's state-dict keys under torchvision's name (shift wrappers dropped)."""
    key = key.replace(".net.", ".")
    if resnet:
        key = re.sub(r"^stem\.0\.", "conv1.", key)
        key = re.sub(r"^stem\.1\.", "bn1.", key)
        return re.sub(r"^stages\.(\d+)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
    # Our MobileNetV2 slices torchvision's `features`, and a slice keeps the layer indices.
    return re.sub(r"^(stem|stages\.\d+)\.", "features.", key)


def _checkpoint_key(key: str, resnet: bool) -> str:
    """A TSM, torchvision or s2d-fast key under the canonical name: no DataParallel `module.`,
    no TSN `base_model.`, no shift wrapper `.net`, our `stem`/`stages` as torchvision's layers;
    every classifier (TSM's `new_fc`, TSM's or torchvision's MobileNetV2 `classifier`) as `fc`."""
    key = canonical_key(re.sub(r"^(module\.)?(base_model\.)?", "", key), resnet)
    return re.sub(r"^(new_fc|classifier(\.1)?)\.", "fc.", key)


def _block_layers(keys) -> dict[str, list[str]]:
    """Each MobileNetV2 block's `conv` layers (`features.3.conv.0.0`), in order of appearance."""
    blocks: dict[str, list[str]] = {}
    for key in keys:
        m = re.match(r"^(features\.\d+\.conv)\.", key)
        if m:
            layer = key.rsplit(".", 1)[0]
            if layer not in blocks.setdefault(m.group(1), []):
                blocks[m.group(1)].append(layer)
    return blocks


def _layer_order(layer: str) -> tuple[int, ...]:
    return tuple(int(p) for p in layer.split(".") if p.isdigit())


def _flat_block_renames(keys: list[str], ours: list[str]) -> dict[str, str]:
    """TSM's MobileNetV2 flattens each inverted residual's `conv` into one Sequential (conv, bn,
    relu6, ...) where torchvision nests conv-bn-relu6 triples: pair the block's layers in order.

    Only blocks whose layer names differ from ours and whose layer counts agree are renamed, so
    a torchvision-layout checkpoint passes through and a wrong one is reported key by key.
    """
    our_blocks = _block_layers(ours)
    renames = {}
    for block, layers in _block_layers(keys).items():
        own = our_blocks.get(block, [])
        if set(layers) != set(own) and len(layers) == len(own):
            renames.update(zip(sorted(layers, key=_layer_order), own))
    return renames


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


class _Plan:
    """Which checkpoint tensor goes into which of the model's keys, and what does not fit.

    A parameter of the wrong shape raises at once (another architecture), except for the
    classifier, whose class count may differ: its checkpoint keys land in `classifier`.
    """

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True):
        resnet = _is_resnet(model)
        own = model.state_dict()
        by_canonical = {canonical_key(k, resnet): k for k in own}
        canonical = {k: _checkpoint_key(k, resnet) for k in state}
        renames = _flat_block_renames(list(canonical.values()), list(by_canonical))

        self.source = source
        self.load: dict[str, torch.Tensor] = {}
        self.unexpected: list[str] = []
        self.classifier: list[str] = []
        self.classifier_note = ""
        self.reshaped: list[str] = []  # not strict: the model's keys whose checkpoint tensor has another shape
        for orig, value in state.items():
            layer, param = canonical[orig].rsplit(".", 1)
            target = by_canonical.get(f"{renames.get(layer, layer)}.{param}")
            if target is None:
                self.unexpected.append(orig)
            elif own[target].shape == value.shape:
                self.load[target] = value
            elif layer == "fc":
                self.classifier.append(orig)
                self.classifier_note = (
                    f"the checkpoint's classifier {orig.rsplit('.', 1)[0]} has {value.shape[0]} classes, the model's "
                    f"{own[target].shape[0]}"
                )
            elif not strict:
                self.reshaped.append(target)
            else:
                raise IncompatibleCheckpointError(
                    f"{source}: {orig} has shape {tuple(value.shape)}, the model's {target} "
                    f"{tuple(own[target].shape)}: a checkpoint of another architecture?",
                    [target], [orig],
                )
        # BN layers of old checkpoints lack the counter; BatchNorm fills it in on load.
        self.missing = [k for k in own if k not in self.load and not k.endswith("num_batches_tracked")]

    def error(self, with_classifier: bool) -> IncompatibleCheckpointError | None:
        """What does not fit, or None; `with_classifier=False` tolerates a classifier that is
        missing or of another class count."""
        missing = self.missing if with_classifier else [k for k in self.missing if not k.startswith("fc.")]
        mismatch = with_classifier and bool(self.classifier)
        if not (missing or self.unexpected or mismatch):
            return None
        parts = []
        if mismatch:
            parts.append(self.classifier_note + " (strict=False skips it, to fine-tune on another dataset)")
            missing = [k for k in missing if not k.startswith("fc.")]
        if missing:
            parts.append(f"{len(missing)} missing keys: {_names(missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys: {_names(self.unexpected)}")
        message = f"{self.source} does not fit the model: " + "; ".join(parts)
        return IncompatibleCheckpointError(message, missing, self.unexpected)


def _state_dict_of(obj, source: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """The tensors of a bare state dict or of TSM's `{'state_dict', 'epoch', ...}`, and the epoch."""
    epoch = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        epoch = obj.get("epoch")
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(
            f"{source}: not a state dict (a mapping of names to tensors, bare or under 'state_dict')"
        )
    return obj, epoch


def _read(path_or_state_dict) -> tuple[object, str]:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict).expanduser()
        return load_checkpoint(path), str(path)
    return path_or_state_dict, "state dict"


def load_tsm_checkpoint(model: nn.Module, path_or_state_dict, *, strict: bool = True) -> dict:
    """Load a checkpoint of the TSM reference implementation (mit-han-lab/temporal-shift-module)
    into a `TSMBackbone` of the same architecture.

    Takes a file (read with `weights_only=True`: a file that needs code to unpickle is refused)
    or its loaded contents: a state dict, bare or under `state_dict` with `epoch`, with or without
    DataParallel's `module.`. ResNets and TSM's own MobileNetV2 layout are recognised by their keys.
    `strict`: any missing or unexpected key, or a classifier of another class count, raises
    `IncompatibleCheckpointError` naming them and nothing is loaded; otherwise what fits is loaded,
    a mismatched classifier is skipped (fine-tuning on another dataset) and left at its init.
    Returns `{"missing", "unexpected", "skipped", "epoch", "source"}` (key names as in the model,
    the checkpoint, the checkpoint).
    """
    obj, source = _read(path_or_state_dict)
    state, epoch = _state_dict_of(obj, source)
    plan = _Plan(model, state, source)
    if strict and (error := plan.error(with_classifier=True)):
        raise error
    model.load_state_dict(plan.load, strict=False)
    return {
        "missing": plan.missing,
        "unexpected": plan.unexpected,
        "skipped": plan.classifier,
        "epoch": epoch,
        "source": source,
    }


def _load_body(backbone: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> str:
    """Load every body weight (all must fit, unless not `strict`: then what fits, the rest
    keeping its init, as the authors load SNET_RESUME / DNET_RESUME), and the classifier only
    where it fits: a backbone with no classifier (S2DNet's DNet) or another class count keeps
    its own.

    Returns what became of the classifier and of what did not fit, for the log line.
    """
    if backbone.fc is None:
        state = _without_classifier(state, backbone)
    plan = _Plan(backbone, state, source, strict)
    if strict and (error := plan.error(with_classifier=False)):
        raise error
    backbone.load_state_dict(plan.load, strict=False)
    kept = [k for k in plan.missing if not k.startswith("fc.")]
    note = f"; {len(kept)} keys kept their init ({_names(kept)})" if kept else ""
    if plan.unexpected and not strict:
        note += f"; {len(plan.unexpected)} checkpoint keys unused ({_names(plan.unexpected)})"
    if backbone.fc is None:
        return "no classifier" + note
    if plan.classifier:
        return f"classifier not loaded: {plan.classifier_note}" + note
    if "fc.weight" in plan.missing:
        return "classifier not in the checkpoint" + note
    return "classifier loaded" + note


def _without_classifier(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    resnet = _is_resnet(backbone)
    return {k: v for k, v in state.items() if not _checkpoint_key(k, resnet).startswith("fc.")}


def load_pretrained(backbone: nn.Module, spec: str, *, prefix: str | None = None, strict: bool = True) -> str:
    """Initialise a `TSMBackbone` as `SNET.PRETRAINED` / `DNET.PRETRAINED` say.

    `none`: nothing. `imagenet`: torchvision's ImageNet weights of the same architecture (the
    ImageNet classifier is never loaded). A path: a TSM reference checkpoint, a state dict in
    torchvision's or our own naming, or an s2d-fast checkpoint (`{"model", "stage", ...}`), of
    which the keys under `prefix` (`snet.` or `dnet.`) are taken. Every body weight must fit;
    the classifier is loaded only when its class count matches. A checkpoint of the uniform
    baseline (`S2D.DETAIL_SAMPLING False`) holds one plain TSM, which either prefix takes: so a
    TSM trained on the dataset can start the synopsis network. Not `strict`
    (SNET/DNET.PRETRAINED_STRICT False): what does not fit keeps its init and is named in the
    description. Returns a one-line description for the log; errors (`CheckpointError`,
    `FileNotFoundError`) name the file and what is wrong.
    """
    if spec.lower() == "none":
        return "random initialisation"
    if spec.lower() == "imagenet":
        arch = backbone.arch
        state = _without_classifier(imagenet_state_dict(arch), backbone)
        path = imagenet_file(arch)[0]
        _load_body(backbone, state, str(path))
        return f"ImageNet weights of torchvision {arch} from {path}"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"pretrained weights {spec}: no such file (expected none, imagenet or a checkpoint path)"
        )
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "model" in obj and "stage" in obj:
        if prefix is None:
            raise CheckpointError(f"{path} is an s2d-fast checkpoint: say which network to take (snet. or dnet.)")
        tops = {k.split(".")[0] + "." for k in obj["model"]}
        plain_tsm = tops == {"dnet."}  # the uniform baseline: its one network starts either
        if plain_tsm:
            prefix = "dnet."
        state = {k[len(prefix):]: v for k, v in obj["model"].items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(
                f"{path}: no weights under {prefix!r} in this s2d-fast checkpoint (it has {', '.join(sorted(tops))})"
            )
        classifier = _load_body(backbone, state, str(path), strict)
        network = "the plain TSM" if plain_tsm else prefix.rstrip(".")
        return f"{network} of s2d-fast checkpoint {path} (stage {obj['stage']}, epoch {obj.get('epoch')}); {classifier}"
    state, epoch = _state_dict_of(obj, str(path))
    classifier = _load_body(backbone, state, str(path), strict)
    arch = f"{obj['arch']}, " if "arch" in obj else ""
    return f"TSM checkpoint {path} ({arch}epoch {epoch}); {classifier}"
