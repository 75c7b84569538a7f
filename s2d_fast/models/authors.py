"""The authors' checkpoints (aliyun/Synopsis-to-Detail-Network): their `S2DNetwork`'s state dict
onto an S2DNet built from `configs/mini_kinetics/` (the trunk f_theta, the concat fusion).

Their keys, and ours:
- `SNet.model.base_model.*`, `SNet.model.new_fc.*`: TSM's MobileNetV2 (and its classifier), in
  TSM's layout -> `snet.*`, mapped by `weights.py` as a TSM checkpoint is;
- `DNet.model.base_model.*`: TSM-ResNet-50 -> `dnet.*`, likewise;
- `DNet.model.new_fc.*` (inputs [features, ctx, top-k]) -> `classifier.*` (the same order);
- `DNet.model.fusion_layers.{i}.0.weight` (C, C + ctx, 1, 1, 1) -> the i-th fused stage's
  `fusion.<stage>.feat.weight` and `.context.weight`, the conv split where the ctx channels begin;
- `DNet.ctx_feature_layer.0.*` -> `context.0.*`;
- `DNet.sampler.*` -> `theta.*`: the trunk's layers (their indices 0.0, 1, 3.0, 4, 6.0, 7 are our
  0, 2, 4, 5, 7, 8) and the four heads.
"""

from __future__ import annotations

import os

import torch

from s2d_fast.checkpoint import CheckpointError

from .weights import _Plan, _read, _state_dict_of

_TRUNK = {"space_time_convs.0.0": "trunk.0", "space_time_convs.1": "trunk.2", "space_time_convs.3.0": "trunk.4",
          "space_time_convs.4": "trunk.5", "space_time_convs.6.0": "trunk.7", "space_time_convs.7": "trunk.8",
          "fc_temporal_offset.0.0": "time_offset", "fc_temporal_stride.0.0": "time_stride",
          "fc_spatial_offset.0.0": "space_offset", "fc_spatial_stride.0.0": "space_stride"}


def _unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without DistributedDataParallel's `module.`."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _backbone(model_part, state: dict, prefix: str, source: str, mapped: dict) -> dict[str, torch.Tensor]:
    """Their TSN backbone under `prefix` (`base_model.*`, and `new_fc.*` where ours has a
    classifier) in our backbone's keys; every one must fit."""
    keys = {k: v for k, v in state.items() if k.startswith(prefix + "base_model.")
            or (model_part.fc is not None and k.startswith(prefix + "new_fc."))}
    plan = _Plan(model_part, {k[len(prefix):]: v for k, v in keys.items()}, source)
    if error := plan.error(with_classifier=True):
        raise error
    mapped.update({k: k[len(prefix):] for k in keys})
    return plan.load


def _fusions(model, state: dict, mapped: dict) -> dict[str, torch.Tensor]:
    out = {}
    for i, stage in enumerate(sorted(model.fusion, key=int)):
        key = f"DNet.model.fusion_layers.{i}.0.weight"
        if key not in state:
            raise CheckpointError(f"the authors' checkpoint has no {key} for fused stage {stage}")
        weight = state[key].flatten(2)[..., 0]  # (C, C + ctx)
        channels = model.fusion[stage].feat.weight.shape[0]
        out[f"fusion.{stage}.feat.weight"] = weight[:, :channels, None, None]
        out[f"fusion.{stage}.context.weight"] = weight[:, channels:, None, None]
        mapped[key] = f"fusion.{stage}"
    return out


def _renamed(state: dict, renames: dict[str, str], mapped: dict) -> dict[str, torch.Tensor]:
    out = {}
    for theirs, ours in renames.items():
        for key, value in state.items():
            if key.startswith(theirs + "."):
                target = ours + key[len(theirs):]
                out[target] = value
                mapped[key] = target
    return out


def load_authors_checkpoint(model, path_or_state_dict: str | os.PathLike | dict) -> dict:
    """Load the authors' `S2DNetwork` weights (a file, or its loaded state dict: bare, under
    `state_dict`, with or without `module.`) into `model`, strictly: every key of theirs lands in
    one of ours and every one of ours is filled, else CheckpointError naming the keys.

    Returns `{"source", "mapped": {their key: our key or module}, "count"}`.
    """
    if not getattr(model, "trunk_theta", False) or not all(type(f).__name__ == "ConcatFusion" for f in model.fusion.values()):
        raise CheckpointError("the authors' checkpoints fit the authors' model: S2D.THETA trunk and "
                              "S2D.FUSION concat_relu (configs/mini_kinetics/)")
    obj, source = _read(path_or_state_dict)
    state = _unwrapped(_state_dict_of(obj, source)[0])
    mapped: dict[str, str] = {}
    ours: dict[str, torch.Tensor] = {}
    ours.update({f"snet.{k}": v for k, v in _backbone(model.snet, state, "SNet.model.", source, mapped).items()})
    ours.update({f"dnet.{k}": v for k, v in _backbone(model.dnet, state, "DNet.model.", source, mapped).items()})
    ours.update(_fusions(model, state, mapped))
    ours.update(_renamed(state, {"DNet.model.new_fc": "classifier", "DNet.ctx_feature_layer.0": "context.0"}, mapped))
    ours.update(_renamed(state, {f"DNet.sampler.{k}": f"theta.{v}" for k, v in _TRUNK.items()}, mapped))
    unused = sorted(set(state) - set(mapped))
    missing = sorted(k for k in model.state_dict() if k not in ours)
    if unused or missing:
        raise CheckpointError(f"{source} does not map onto this model: " + "; ".join(
            part for part in (f"{len(unused)} of its keys unused ({', '.join(unused[:5])})" if unused else "",
                              f"{len(missing)} of the model's keys not given ({', '.join(missing[:5])})" if missing else "")
            if part))
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{source} does not fit this model: {str(err).splitlines()[1].strip()}") from None
    return {"source": source, "mapped": mapped, "count": len(mapped)}
