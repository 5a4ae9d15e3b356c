"""Classification metrics on probability arrays (numpy only, shared by train and evaluate)."""

from __future__ import annotations

import numpy as np

# The DrivenData multiclass log loss clips probabilities to [eps, 1 - eps] before the log.
LOG_LOSS_EPS = 1e-15


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log probability of the true class, probabilities clipped to [eps, 1-eps]."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose highest probability is the true class."""
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean over classes of F1 of the top-1 prediction (classes absent from both count 0)."""
    predicted = np.argmax(probs, axis=1)
    scores = []
    for c in range(np.asarray(probs).shape[1]):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true, predicted] of the top-1 predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.argmax(probs, axis=1)), 1)
    return matrix


def per_class(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    matrix = confusion_matrix(probs, labels, len(classes))
    rows = []
    for i, name in enumerate(classes):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(support)})
    return rows
