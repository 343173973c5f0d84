"""Scores of a model on a split: accuracy, loss, per-class accuracy, confusion matrix, P/R/F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidValue
from .nn import Network, cross_entropy

N_CLASSES = 10


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    confusion: np.ndarray  # (true, predicted) counts

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """Recall of each class: correct / true count."""
        return per_class_scores(self.confusion)[1]


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall (per-class accuracy) and F1 of each class, from (true, predicted) counts."""
    hits = np.diag(confusion).astype(np.float64)
    precision = hits / np.maximum(confusion.sum(axis=0), 1)
    recall = hits / np.maximum(confusion.sum(axis=1), 1)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    return precision, recall, f1


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def evaluate(model: Network, x: np.ndarray, y: np.ndarray) -> Evaluation:
    """Mean cross-entropy and accuracy of ``model`` on images ``x`` (N, 784) and labels ``y``."""
    if len(y) == 0:
        raise InvalidValue("cannot evaluate on an empty split")
    return scores(model.logits(x), y)


def scores(logits: np.ndarray, y: np.ndarray) -> Evaluation:
    """Mean cross-entropy and accuracy of ``logits`` (N, classes) against labels ``y``."""
    if len(y) == 0:
        raise InvalidValue("cannot evaluate on an empty split")
    predicted = logits.argmax(axis=1)
    confusion = confusion_matrix(y, predicted, logits.shape[1])
    return Evaluation(cross_entropy(logits, y), float((predicted == y).mean()), confusion)
