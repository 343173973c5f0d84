"""Figures of a run, drawn with matplotlib's headless Agg backend into RUN_DIR/figures/.

Each function takes plain arrays and a path, so figures can be drawn from any run or checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DPI = 120


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(metrics: dict[str, np.ndarray], lr_per_step: np.ndarray, path: Path) -> Path:
    """Loss and accuracy per epoch (train, and validation if there was any), and the learning rate per
    iteration."""
    epochs = metrics["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in ((axes[0], "loss", "Cross-entropy loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(epochs, metrics[f"train_{key}"], "o-", label="train (mean over the epoch)")
        if not np.isnan(metrics[f"val_{key}"]).all():
            ax.plot(epochs, metrics[f"val_{key}"], "s-", label="validation (end of epoch)")
        ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].plot(np.arange(1, len(lr_per_step) + 1), lr_per_step, color="tab:green")
    axes[2].set(xlabel="iteration (mini-batch step)", ylabel="learning rate", title="Learning rate")
    axes[2].grid(alpha=0.3)
    return _save(fig, path)


def first_layer_weights(
    weights: np.ndarray, path: Path, max_neurons: int = 256, what: str = "First hidden layer weights"
) -> Path:
    """Each first-layer neuron's 784 input weights as a 28x28 tile, on a colour map centred on zero.

    One mosaic image (tiles separated by white gaps) rather than one axes per neuron: far lighter.
    """
    n = min(weights.shape[1], max_neurons)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = weights[:, :n].T.reshape(n, 28, 28)
    tiles = tiles / np.maximum(np.abs(tiles).max(axis=(1, 2), keepdims=True), 1e-12)  # each on its own scale
    mosaic = np.full((rows * 29 - 1, cols * 29 - 1), np.nan, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * 29 : r * 29 + 28, c * 29 : c * 29 + 28] = tile
    colours = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(cols * 0.8, rows * 0.8 + 0.6))
    image = ax.imshow(mosaic, cmap=colours, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    shown = f"{n} of {weights.shape[1]}" if n < weights.shape[1] else f"all {n}"
    ax.set_xlabel(
        f"{shown} neurons; each tile is one neuron's 28x28 input weights, scaled to its own maximum"
    )
    ax.set_title(what)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="weight / neuron's largest |weight|")
    return _save(fig, path)


def _mosaic(tiles: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """Tiles (n, h, w) side by side in rows of ``cols``, NaN (drawn white) between them."""
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return mosaic


def conv_filters(weight: np.ndarray, path: Path, what: str = "First convolution's filters") -> Path:
    """Each filter of a convolution on one input channel, (k, k, 1, F), as a k×k tile on a colour map
    centred on zero, each scaled to its own largest |weight|: the report's Figure 3, for a CNN."""
    k, _, _, n = weight.shape
    tiles = weight[:, :, 0, :].transpose(2, 0, 1)
    tiles = tiles / np.maximum(np.abs(tiles).max(axis=(1, 2), keepdims=True), 1e-12)
    cols = min(n, 8)
    colours = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(cols * 0.9, math.ceil(n / cols) * 0.9 + 0.8))
    image = ax.imshow(_mosaic(tiles, cols), cmap=colours, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"all {n} filters; each tile is one {k}x{k} filter, scaled to its own maximum")
    ax.set_title(what)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="weight / filter's largest |weight|")
    return _save(fig, path)


def feature_maps(image: np.ndarray, maps: np.ndarray, title: str, path: Path) -> Path:
    """One image (h, w) beside what a layer makes of it, maps (h', w', C): one grey tile a channel."""
    n = maps.shape[-1]
    cols = min(n, 8)
    tiles = maps.transpose(2, 0, 1)
    tiles = tiles / np.maximum(tiles.max(axis=(1, 2), keepdims=True), 1e-12)  # each on its own scale
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(2.5 + cols * 0.9, max(2.5, math.ceil(n / cols) * 0.9 + 0.6)),
        gridspec_kw={"width_ratios": [2.5, cols * 0.9]},
    )  # fmt: skip
    left.imshow(image, cmap="gray", interpolation="nearest")
    left.set_title("input")
    right.imshow(_mosaic(tiles, cols), cmap=plt.get_cmap("magma").with_extremes(bad="white"), vmin=0, vmax=1,
                 interpolation="nearest")  # fmt: skip
    right.set_title(title)
    right.set_xlabel(f"{n} channels, each {maps.shape[0]}x{maps.shape[1]}, scaled to its own maximum")
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def bias_histogram(biases: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(biases, bins=40, color="tab:blue", edgecolor="white")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel="bias", ylabel="number of neurons", title="First hidden layer biases")
    return _save(fig, path)


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Counts, coloured by the row-normalised rate (each true class sums to 1)."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title="Test-set confusion matrix (counts)")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    return _save(fig, path)


def per_class_accuracy(accuracy: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    order = np.argsort(accuracy)
    bars = ax.barh(np.array(class_names)[order], accuracy[order], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.set(xlim=(0, 1.08), xlabel="accuracy (recall)", ylabel="class", title="Test accuracy per class")
    return _save(fig, path)


def misclassified(
    images: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    probability: np.ndarray,
    class_names: Sequence[str],
    path: Path,
) -> Path:
    """A grid of wrongly classified images, each titled true -> predicted (probability)."""
    n = len(images)
    cols = 6
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].reshape(28, 28), cmap="gray")
            ax.set_title(
                f"true: {class_names[true[i]]}\npred: {class_names[predicted[i]]} ({probability[i]:.2f})",
                fontsize=8,
            )
    fig.suptitle("Misclassified test images (most confident mistakes first)", y=1.0)
    return _save(fig, path)
