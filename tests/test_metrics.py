import numpy as np
import pytest
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from s2d_fast.engine.metrics import compute_metrics


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    scores = rng.random((200, 12))
    labels = rng.integers(0, 12, 200)
    labels[:12] = np.arange(12)  # every class present
    m = compute_metrics(scores, labels)
    assert m["top1"] == pytest.approx(100 * top_k_accuracy_score(labels, scores, k=1, labels=np.arange(12)))
    assert m["top5"] == pytest.approx(100 * top_k_accuracy_score(labels, scores, k=5, labels=np.arange(12)))
    onehot = np.eye(12)[labels]
    assert m["mAP"] == pytest.approx(100 * average_precision_score(onehot, scores, average="macro"))
    assert m["num_videos"] == 200


def test_known_values():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 1, 2])
    m = compute_metrics(scores, labels)
    assert m["top1"] == pytest.approx(50.0)
    assert m["top5"] == pytest.approx(100.0)  # k is capped at the number of classes
    # class 0: AP 1; class 1: positives rank 1st and 3rd -> (1 + 2/3) / 2; class 2: 1/3
    assert m["mAP"] == pytest.approx(100 * np.mean([1.0, (1 + 2 / 3) / 2, 1 / 3]))


def test_bad_shapes_are_an_error():
    with pytest.raises(ValueError, match="expected scores"):
        compute_metrics(np.zeros((3, 2)), np.zeros(4, dtype=int))
