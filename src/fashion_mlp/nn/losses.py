"""Softmax and cross-entropy, fused: the gradient with respect to the logits is (probs - onehot)/N."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for any finite logits (the row maximum is subtracted first)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise class probabilities."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer ``labels`` (N,) under ``logits`` (N, C), and dLoss/dlogits (N, C).

    loss = mean(log(sum(exp(z))) - z[label]) with z = logits - row max; grad = (softmax - onehot) / N.
    """
    n = logits.shape[0]
    rows = np.arange(n)
    z = logits - logits.max(axis=1, keepdims=True)
    picked = z[rows, labels]
    probs = np.exp(z, out=z)
    sums = probs.sum(axis=1, keepdims=True)
    loss = float(np.log(sums).mean(dtype=np.float64) - picked.mean(dtype=np.float64))
    probs /= sums
    probs[rows, labels] -= 1.0
    probs *= 1.0 / n
    return loss, probs
