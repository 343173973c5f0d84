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
    """Mean cross-entropy of integer ``labels`` (N,) under ``logits`` (N, C), and dLoss/dlogits (N, C)."""
    n = logits.shape[0]
    rows = np.arange(n)
    log_probs = log_softmax(logits)
    loss = -float(log_probs[rows, labels].mean(dtype=np.float64))
    grad = np.exp(log_probs, out=log_probs)  # reuse the buffer: probs
    grad[rows, labels] -= 1.0
    grad *= 1.0 / n
    return loss, grad
