"""Evaluation: run the model over a loader, score every video, compute the metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .metrics import compute_metrics

logger = logging.getLogger("s2d_fast")


@torch.no_grad()
def predict_scores(model, loader, device: torch.device, desc: str = "eval") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities `(N, A)`, labels `(N,)` and list indices `(N,)` for every video."""
    model.eval()
    scores, labels, indices = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=None, dynamic_ncols=True):
        frames = batch["frames"].to(device, non_blocking=True)
        n_valid = batch["n_valid"].to(device, non_blocking=True)
        out = model(frames, n_valid)
        scores.append(out["log_prob"].float().exp().cpu())
        labels.append(batch["label"])
        indices.append(batch["index"])
    return (
        torch.cat(scores).numpy(),
        torch.cat(labels).numpy(),
        torch.cat(indices).numpy(),
    )


def evaluate(model, loader, device: torch.device) -> dict:
    """Top-1, top-5, mAP (percent), the number of videos and the wall time."""
    start = time.perf_counter()
    scores, labels, _ = predict_scores(model, loader, device)
    seconds = time.perf_counter() - start
    metrics = compute_metrics(scores, labels)
    metrics["seconds"] = round(seconds, 3)
    metrics["videos_per_second"] = round(len(labels) / seconds, 3) if seconds > 0 else None
    return metrics


def write_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
