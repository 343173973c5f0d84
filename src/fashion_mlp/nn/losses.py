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


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of integer ``labels`` under ``logits``: -mean(log softmax(logits)[i, labels[i]]).

    A score only (no gradient), against the true labels even when training smooths them.
    """
    return -float(log_softmax(logits)[np.arange(len(labels)), labels].mean(dtype=np.float64))


def example_losses(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Each example's cross-entropy (N,) towards its (smoothed) target: what training minimises,
    one number per row, so that a step can pick the examples it gets most wrong."""
    log_probs = log_softmax(logits)
    losses = -log_probs[np.arange(len(labels)), labels]
    if smoothing:
        losses = (1.0 - smoothing) * losses - smoothing * log_probs.mean(axis=1)
    return losses


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer ``labels`` (N,) under ``logits`` (N, C), and dLoss/dlogits (N, C).

    With label smoothing e the target is (1 - e) * onehot + e / C. With z = logits - row max:
    loss = mean(log(sum(exp(z))) - sum(target * z)), grad = (softmax - target) / N.
    """
    n, classes = logits.shape
    rows = np.arange(n)
    z = logits - logits.max(axis=1, keepdims=True)
    picked = z[rows, labels].mean(dtype=np.float64)
    if smoothing:
        picked = (1.0 - smoothing) * picked + smoothing * z.mean(dtype=np.float64)
    probs = np.exp(z, out=z)
    sums = probs.sum(axis=1, keepdims=True)
    loss = float(np.log(sums).mean(dtype=np.float64) - picked)
    probs /= sums
    if smoothing:
        probs -= smoothing / classes
    probs[rows, labels] -= 1.0 - smoothing
    probs *= 1.0 / n
    return loss, probs
