"""Evaluation: score every video once (across processes too), compute the metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from s2d_fast.checkpoint import CheckpointError, load_checkpoint, newest_checkpoint
from s2d_fast.config import ConfigError, all_keys, load_config
from s2d_fast.config.checks import value_of
from s2d_fast.errors import UserError
from s2d_fast.data.loader import build_loader
from s2d_fast.models import VideoModel, build_model, fold_batchnorm
from s2d_fast.models.flops import config_gflops

from .distributed import DistContext, Outcome, all_gather_objects, init_distributed, launch, shutdown_distributed
from .metrics import compute_metrics
from .runtime import (
    InferenceSettings,
    autocast,
    compile_model,
    device_name,
    inference_settings,
    seed_everything,
    setup_logging,
    to_device,
)

logger = logging.getLogger("s2d_fast")

class NothingScoredError(UserError):
    """Evaluation could read none of the validation videos: there is no accuracy to report."""


# Batches before the throughput clock starts: the first ones pay for allocation and compilation.
WARMUP_BATCHES = 1


@torch.no_grad()
def predict_scores(model, loader, device: torch.device, *, amp_dtype: str = "none", is_main: bool = True) -> dict:
    """Class probabilities `(N, A)`, labels and list indices of this process's videos, and the
    throughput after the warm-up batches. Several views per video (clips x crops, a
    `(B, V, T, 3, H, W)` batch) are averaged."""
    model.eval()
    amp = autocast(device, amp_dtype)
    scores, snet_scores, labels, indices, valid = [], [], [], [], []
    timed_videos, start, model_seconds, first_batch_seconds = 0, None, 0.0, None
    for i, batch in enumerate(tqdm(loader, desc="eval", leave=False, disable=None if is_main else True, dynamic_ncols=True)):
        if i == WARMUP_BATCHES:
            _sync(device)
            start = time.perf_counter()
        tic = time.perf_counter()
        frames = batch["frames"].to(device, non_blocking=True)
        n_valid = batch["n_valid"].to(device, non_blocking=True)
        views = frames.shape[1] if frames.dim() == 6 else 1
        if views > 1:
            frames = frames.flatten(0, 1)
            n_valid = n_valid.flatten(0, 1) if n_valid.dim() == 2 else n_valid.repeat_interleave(views)
        with amp:
            out = model(frames, n_valid)
        probs = out["log_prob"].float().exp()
        _sync(device)
        if start is None:
            first_batch_seconds = time.perf_counter() - tic  # a compiled model compiles here
        else:
            model_seconds += time.perf_counter() - tic
        scores.append(probs.view(-1, views, probs.shape[-1]).mean(1).cpu())
        if "z_s" in out:  # the synopsis network's own guess, reported beside the model's
            snet = out["z_s"].float().softmax(1)
            snet_scores.append(snet.view(-1, views, snet.shape[-1]).mean(1).cpu())
        labels.append(batch["label"])
        indices.append(batch["index"])
        valid.append(batch["valid"])
        if start is not None:
            timed_videos += len(batch["label"])
    _sync(device)
    seconds = time.perf_counter() - start if start is not None else 0.0
    return {
        "scores": torch.cat(scores).numpy() if scores else np.zeros((0, 0)),
        "snet_scores": torch.cat(snet_scores).numpy() if snet_scores else None,
        "labels": torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64),
        "indices": torch.cat(indices).numpy() if indices else np.zeros(0, dtype=np.int64),
        "valid": torch.cat(valid).numpy() if valid else np.zeros(0, dtype=bool),
        "unreadable": list(getattr(loader.dataset, "bad_samples", [])),
        "timed_videos": timed_videos,
        "seconds": seconds,
        "model_seconds": model_seconds,
        "first_batch_seconds": first_batch_seconds,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    pred = scores.argmax(1)
    return {int(c): float(100.0 * (pred[labels == c] == c).mean()) for c in np.unique(labels)}


def evaluate(
    model, loader, device: torch.device, ctx: DistContext | None = None, *, amp_dtype: str = "none"
) -> tuple[dict, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Top-1, top-5, mAP (percent), per-class accuracy and throughput over the whole validation
    list: each process scores its shard, the shards are gathered and every video counted once.
    Also returns the gathered `(indices, scores, labels)`, in list order."""
    ctx = ctx or DistContext(0, 1, 0, device)
    part = predict_scores(model, loader, device, amp_dtype=amp_dtype, is_main=ctx.is_main)
    parts = all_gather_objects(part, ctx)
    indices = np.concatenate([p["indices"] for p in parts])
    order = np.argsort(indices, kind="stable")
    indices = indices[order]
    if len(np.unique(indices)) != len(indices):
        raise RuntimeError("evaluation scored some videos twice: the shards overlap")
    scores = np.concatenate([p["scores"] for p in parts if len(p["scores"])])[order]
    labels = np.concatenate([p["labels"] for p in parts])[order]
    valid = np.concatenate([p["valid"] for p in parts])[order]
    unreadable = [bad for p in parts for bad in p["unreadable"]]
    rejected = [{"where": row.where, "reason": row.reason} for row in getattr(loader.dataset, "rejected", ())]
    if not valid.any():
        first = unreadable[0]["reason"] if unreadable else "no reason recorded"
        raise NothingScoredError(
            f"none of the {len(valid)} videos of the validation list could be read (the first: {first}); "
            "check DATA.ROOT and DATA.INPUT_FORMAT"
        )
    # An unreadable video is scored wrong: its label ranks last, below every other class.
    scores[~valid] = 0.0
    scores[~valid, labels[~valid]] = -1.0
    metrics = compute_metrics(scores, labels)
    # A row the list could not give (malformed) is a video too: wrong, in the denominator.
    rows = len(labels) + len(rejected)
    for key in ("top1", "top5"):
        metrics[key] *= len(labels) / rows
    metrics["num_videos"] = rows
    metrics["unreadable"] = int((~valid).sum())
    metrics["unreadable_videos"] = unreadable
    metrics["rejected"] = len(rejected)
    metrics["rejected_rows"] = rejected
    metrics["per_class_top1"] = per_class_accuracy(scores, labels)
    if parts[0]["snet_scores"] is not None:
        snet = np.concatenate([p["snet_scores"] for p in parts if p["snet_scores"] is not None])[order]
        snet[~valid] = 0.0
        snet[~valid, labels[~valid]] = -1.0
        for key, value in compute_metrics(snet, labels).items():
            if key in ("top1", "top5"):
                metrics[f"snet_{key}"] = value * len(labels) / rows
    # Processes run side by side: the slowest one sets the pace.
    seconds = max(p["seconds"] for p in parts)
    model_seconds = max(p["model_seconds"] for p in parts)
    timed = sum(p["timed_videos"] for p in parts)
    # End to end (decoding included, after the first batch) and the model's share alone.
    metrics["videos_per_second"] = round(timed / seconds, 3) if seconds > 0 else None
    metrics["model_videos_per_second"] = round(timed / model_seconds, 3) if model_seconds > 0 else None
    first = [p["first_batch_seconds"] for p in parts if p["first_batch_seconds"] is not None]
    metrics["first_batch_seconds"] = round(max(first), 2) if first else None
    metrics["device"] = f"{device_name(device)} x{ctx.world_size}"
    return metrics, (indices, scores, labels)


def write_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def write_predictions(path: str | Path, metrics: dict, indices, scores, labels, records, top: int = 5) -> Path:
    """One JSON line per list row: a scored video's path, label and top classes with their
    probabilities; an unreadable video's path, label and why (no classes); a malformed row's
    file:line and why."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    why = {bad["index"]: bad["reason"] for bad in metrics["unreadable_videos"]}
    with path.open("w") as f:
        for i, s, y in zip(indices, scores, labels):
            row = {"video": records[i].path, "label": int(y)}
            reason = why.get(int(i))
            if reason is not None:
                row.update(unreadable=reason, top=[])
            else:
                best = np.argsort(-s, kind="stable")[:top]
                row["top"] = [[int(c), round(float(s[c]), 6)] for c in best]
            f.write(json.dumps(row) + "\n")
        for rejected in metrics["rejected_rows"]:
            f.write(json.dumps({"row": rejected["where"], "rejected": rejected["reason"]}) + "\n")
    return path


# The config sections that decide the model's layers, compared when a checkpoint does not fit.
_MODEL_SECTIONS = ("SNET", "DNET", "S2D", "DATA.NUM_CLASS")
_SHOWN_DIFFERENCES = 6


def _model_differences(cfg, saved_text: str, source: str) -> list[str]:
    """`KEY: checkpoint value -> this config's value` for the model keys the two configs differ in."""
    saved = load_config(saved=(saved_text, source))
    keys = [k for k in all_keys(cfg) if k.startswith(_MODEL_SECTIONS)]
    return [f"{k} {value_of(saved, k)!r} (checkpoint) vs {value_of(cfg, k)!r}" for k in keys
            if value_of(saved, k) != value_of(cfg, k)]


def _does_not_fit(cfg, state: dict, path: Path, error: RuntimeError) -> CheckpointError:
    """What to tell a user whose config builds another model than the checkpoint holds."""
    differences = _model_differences(cfg, state["config"], str(path)) if state.get("config") else []
    if differences:
        more = f" and {len(differences) - _SHOWN_DIFFERENCES} more" if len(differences) > _SHOWN_DIFFERENCES else ""
        return CheckpointError(
            f"{path} does not fit the model this config builds; it was trained with "
            f"{'; '.join(differences[:_SHOWN_DIFFERENCES])}{more}. Leave out --config to use the checkpoint's "
            "own config, or set those keys")
    first = str(error).splitlines()
    detail = first[1].strip() if len(first) > 1 else first[0]
    return CheckpointError(f"{path} does not fit the model this config builds ({detail}); check SNET.*, DNET.* "
                           "and S2D.* against the config it was trained with")


def read_model_checkpoint(cfg, checkpoint: str | Path | None) -> tuple[Path, dict]:
    """The path and contents of `checkpoint` (or the output folder's newest), if it is an
    s2d-fast checkpoint; read before any data, so that a wrong file fails at once."""
    path = Path(checkpoint) if checkpoint else newest_checkpoint(cfg.OUTPUT_DIR)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not {"model", "num_classes", "stage"} <= set(state):
        raise CheckpointError(f"{path}: not an s2d-fast checkpoint (a TSM or torchvision state dict starts a "
                              "backbone as SNET.PRETRAINED or DNET.PRETRAINED instead)")
    return path, state


def load_for_eval(cfg, checkpoint: str | Path | None, device: torch.device,
                  settings: InferenceSettings | None = None, read: tuple[Path, dict] | None = None
                  ) -> tuple[VideoModel, dict]:
    """The model of `checkpoint` (or the output folder's newest; or `read`, what
    `read_model_checkpoint` returned) ready for evaluation: in eval mode, BatchNorm folded and
    the memory format chosen by `settings` (by default TEST's switches for this device)."""
    settings = settings or inference_settings(cfg, device)
    path, state = read or read_model_checkpoint(cfg, checkpoint)
    model = build_model(cfg, state["num_classes"], pretrained=False)
    model.set_stage(state["stage"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise _does_not_fit(cfg, state, path, err) from None
    model.eval()
    if settings.fold_bn:
        fold_batchnorm(model)
    to_device(model, device, settings.channels_last)
    return model, {"path": str(path), "stage": state["stage"], "epoch": state["epoch"],
                   "class_names": state.get("class_names")}


def _evaluate_process(cfg, checkpoint) -> dict | None:
    ctx = init_distributed(cfg)
    try:
        setup_logging(quiet=not ctx.is_main)
        seed_everything(cfg.RNG_SEED)
        read = read_model_checkpoint(cfg, checkpoint or cfg.TRAIN.RESUME or None)
        loader = build_loader(cfg, "val", distributed=ctx.distributed)
        gflops = config_gflops(cfg, loader.dataset.num_classes)  # as run after training; every rank decides alike
        settings = inference_settings(cfg, ctx.device, gflops * -(-len(loader.dataset) // ctx.world_size))
        logger.info("%s", settings.describe())
        model, source = load_for_eval(cfg, None, ctx.device, settings, read)
        if loader.dataset.num_classes != model.num_classes:
            raise ConfigError(
                f"checkpoint {source['path']} has {model.num_classes} classes but the validation data "
                f"has {loader.dataset.num_classes}; check DATA.DATASET and DATA.NUM_CLASS"
            )
        runner = compile_model(model, settings.compile, cfg.TEST.COMPILE_MODE, training=False)
        metrics, (indices, scores, labels) = evaluate(runner, loader, ctx.device, ctx, amp_dtype=settings.amp)
        metrics["checkpoint"] = source
        metrics["inference"] = {"amp": settings.amp, "channels_last": settings.channels_last,
                                "compiled": settings.compile, "fold_bn": settings.fold_bn}
        if cfg.TEST.PREDICTIONS and ctx.is_main:
            metrics["predictions"] = str(write_predictions(cfg.TEST.PREDICTIONS, metrics, indices, scores, labels,
                                                           loader.dataset.records))
        metrics["gflops_per_video"] = gflops
        return metrics if ctx.is_main else None
    finally:
        shutdown_distributed()


def evaluate_checkpoint(cfg, checkpoint: str | Path | None = None) -> Outcome:
    """Evaluate a checkpoint on the validation list, in this process or NUM_GPUS spawned ones;
    the metrics (the outcome's value) say where the weights came from, the device and the
    throughput."""
    return launch(cfg, _evaluate_process, cfg, checkpoint)
