"""Video-level metrics from class scores: top-1, top-5 and mean average precision."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores; ties go to the lower class,
    as a stable sort would put them."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((order == labels[:, None]).any(axis=1).mean())


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in `labels` of scikit-learn's average precision."""
    present = np.unique(labels)
    aps = [average_precision_score(labels == c, scores[:, c]) for c in present]
    return float(np.mean(aps))


def compute_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`scores (N, A)` (probabilities or logits) and `labels (N,)` to percentages."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(f"expected scores (N, A) and labels (N,), got {scores.shape} and {labels.shape}")
    return {
        "top1": 100.0 * topk_accuracy(scores, labels, 1),
        "top5": 100.0 * topk_accuracy(scores, labels, 5),
        "mAP": 100.0 * mean_average_precision(scores, labels),
        "num_videos": int(len(labels)),
    }
