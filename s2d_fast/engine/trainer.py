"""Training: warmup (sampler at the identity) and sampling (the sampler learns)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from s2d_fast.config import ConfigError, save_config
from s2d_fast.data.loader import build_loader
from s2d_fast.models import S2DNet, build_model, s2d_loss

from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .optim import build_optimizer
from .runtime import checkpoint_path, newest_checkpoint, select_device, seed_everything, setup_logging

logger = logging.getLogger("s2d_fast")


def _start_checkpoint(cfg) -> Path | None:
    """What this stage starts from: TRAIN.RESUME, or for sampling this run's warmup checkpoint."""
    if cfg.TRAIN.RESUME:
        return Path(cfg.TRAIN.RESUME)
    if cfg.TRAIN.STAGE == "sampling":
        path = checkpoint_path(cfg.OUTPUT_DIR, "warmup", "last")
        if not path.is_file():
            raise ConfigError(
                f"the sampling stage starts from a warmup checkpoint, and there is none at {path}; "
                "run `s2d-fast train --stage warmup` with the same OUTPUT_DIR first, or set TRAIN.RESUME"
            )
        return path
    return None


def _epoch_summary(epoch: int, epochs: int, sums: dict[str, float], count: int, lr: float) -> str:
    losses = " ".join(f"{k}={v / max(count, 1):.4f}" for k, v in sums.items())
    return f"epoch {epoch}/{epochs} {losses} lr={lr:.3g}"


def train(cfg) -> dict:
    """Train one stage as configured; returns the final validation metrics and checkpoint paths."""
    stage = cfg.TRAIN.STAGE
    output_dir = Path(cfg.OUTPUT_DIR)
    setup_logging(output_dir, f"log_{stage}.txt")
    device = select_device(cfg)
    seed_everything(cfg.RNG_SEED)
    save_config(cfg, output_dir / f"config_{stage}.yaml")

    train_loader = build_loader(cfg, "train")
    val_loader = build_loader(cfg, "val")
    num_classes = train_loader.dataset.num_classes
    model = build_model(cfg, num_classes)
    model.set_stage(stage)

    start_epoch, best_top1 = 0, -1.0
    start = _start_checkpoint(cfg)
    resumed = None
    if start is not None:
        resumed = load_checkpoint(start)
        model.load_state_dict(resumed["model"])
        logger.info("loaded %s (stage %s, epoch %d)", start, resumed["stage"], resumed["epoch"])
    model.to(device)

    epochs = cfg.TRAIN.EPOCHS
    optimizer, scheduler = build_optimizer(model, cfg, total_iters=epochs * len(train_loader))
    if resumed is not None and resumed["stage"] == stage:
        # The same stage: carry on where it stopped, not from scratch.
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start_epoch = resumed["epoch"]
        best_top1 = resumed.get("best_top1", -1.0)

    writer = SummaryWriter(str(output_dir / "tensorboard" / stage))
    logger.info(
        "stage %s: %d training and %d validation videos, %d classes, %d epochs on %s",
        stage, len(train_loader.dataset), len(val_loader.dataset), num_classes, epochs, device,
    )
    metrics: dict = {}
    train_seconds = 0.0
    for epoch in range(start_epoch, epochs):
        model.train()
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        count = 0
        tic = time.perf_counter()
        bar = tqdm(train_loader, desc=f"{stage} {epoch + 1}/{epochs}", leave=False, disable=None, dynamic_ncols=True)
        for it, batch in enumerate(bar):
            frames = batch["frames"].to(device, non_blocking=True)
            n_valid = batch["n_valid"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            losses = s2d_loss(model(frames, n_valid), labels, cfg.S2D.SNET_LOSS_WEIGHT)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.TRAIN.CLIP_GRAD_NORM > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.TRAIN.CLIP_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            if it % cfg.TRAIN.LOG_PERIOD == 0 or it == len(train_loader) - 1:
                # Reading the loss syncs with the device: only at the logging period.
                values = {k: v.item() for k, v in losses.items()}
                if not all(math.isfinite(v) for v in values.values()):
                    raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, iteration {it}: {values}")
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                step = epoch * len(train_loader) + it
                for k, v in values.items():
                    writer.add_scalar(f"train/{k}", v, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                bar.set_postfix(loss=f"{values['loss']:.3f}")
        train_seconds += time.perf_counter() - tic
        logger.info(_epoch_summary(epoch + 1, epochs, sums, count, scheduler.get_last_lr()[0]))

        evaluated = (epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or epoch + 1 == epochs
        if evaluated:
            metrics = evaluate(model, val_loader, device)
            logger.info(
                "epoch %d/%d val top1=%.2f top5=%.2f mAP=%.2f (%d videos)",
                epoch + 1, epochs, metrics["top1"], metrics["top5"], metrics["mAP"], metrics["num_videos"],
            )
            for k in ("top1", "top5", "mAP"):
                writer.add_scalar(f"val/{k}", metrics[k], epoch + 1)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1,
            "stage": stage,
            "num_classes": num_classes,
            "metrics": metrics,
            "best_top1": best_top1,
            "config": cfg.dump(),
        }
        if evaluated and metrics["top1"] > best_top1:
            best_top1 = metrics["top1"]
            state["best_top1"] = best_top1
            save_checkpoint(state, checkpoint_path(output_dir, stage, "best"))
        save_checkpoint(state, checkpoint_path(output_dir, stage, "last"))
    writer.close()
    logger.info("stage %s done: %.1f s of training; checkpoint %s", stage, train_seconds, checkpoint_path(output_dir, stage))
    return {"metrics": metrics, "train_seconds": train_seconds, "checkpoint": str(checkpoint_path(output_dir, stage))}


def load_for_eval(cfg, checkpoint: str | Path | None, device: torch.device) -> tuple[S2DNet, dict]:
    """The model of `checkpoint` (or the output folder's newest) ready for evaluation."""
    path = Path(checkpoint) if checkpoint else newest_checkpoint(cfg.OUTPUT_DIR)
    state = load_checkpoint(path)
    model = build_model(cfg, state["num_classes"])
    model.set_stage(state["stage"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, {"path": str(path), "stage": state["stage"], "epoch": state["epoch"]}


def evaluate_checkpoint(cfg, checkpoint: str | Path | None = None) -> dict:
    """Evaluate a checkpoint on the validation list; the result carries where it came from."""
    setup_logging()
    device = select_device(cfg)
    seed_everything(cfg.RNG_SEED)
    loader = build_loader(cfg, "val")
    model, source = load_for_eval(cfg, checkpoint or cfg.TRAIN.RESUME or None, device)
    if loader.dataset.num_classes != model.num_classes:
        raise ConfigError(
            f"checkpoint {source['path']} has {model.num_classes} classes but the validation data "
            f"has {loader.dataset.num_classes}; check DATA.DATASET and DATA.NUM_CLASS"
        )
    metrics = evaluate(model, loader, device)
    metrics["checkpoint"] = source
    metrics["device"] = str(device)
    return metrics
