"""Every figure of a finished run, read from its directory: RUN_DIR/figures/*.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, plots, runs
from .config import TrainConfig
from .data import CLASS_NAMES, Split, pixels
from .errors import MissingFile
from .evaluation import per_class_scores
from .nn import Network, softmax
from .train import build_model, build_schedule, steps_per_epoch

FIGURES = {
    "curves": "training_curves.png",
    "weights": "first_layer_weights.png",
    "learned": "first_layer_learned.png",
    "biases": "first_layer_biases.png",
    "confusion": "confusion_matrix.png",
    "per_class": "per_class_accuracy.png",
    "misclassified": "misclassified.png",
}
CNN_FIGURES = {  # a convolutional network's first layer: filters and feature maps, not 28x28 weights
    "curves": "training_curves.png",
    "filters": "first_conv_filters.png",
    "learned_filters": "first_conv_learned.png",
    "feature_maps": "feature_maps.png",
    "confusion": "confusion_matrix.png",
    "per_class": "per_class_accuracy.png",
    "misclassified": "misclassified.png",
}
N_MISCLASSIFIED = 24


def figure_paths(run_dir: Path) -> dict[str, Path]:
    """The figures of a run, by key: a CNN's (its config has conv widths) or an MLP's."""
    config_path = Path(run_dir) / "config.json"
    conv = config_path.is_file() and bool(runs.read_config(config_path).get("conv"))
    names = CNN_FIGURES if conv else FIGURES
    return {key: Path(run_dir) / "figures" / name for key, name in names.items()}


def draw(run_dir: Path, test: Split, logits: np.ndarray | None = None) -> dict[str, Path]:
    """Draw every figure of ``run_dir`` from its files and the test split; return their paths.
    ``logits``: its best model's logits on the test split, where they are at hand (``runs.run``
    gives them); otherwise the model answers the test split again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFile(f"{run_dir}: no such run directory")
    config = TrainConfig.from_record(runs.read_config(run_dir / "config.json"), str(run_dir / "config.json"))
    summary = runs.read_summary(run_dir / "summary.json")
    metrics = runs.read_metrics(run_dir / "metrics.csv")
    model = checkpoint.load(run_dir / "best.npz").model
    paths = figure_paths(run_dir)

    per_epoch = steps_per_epoch(config, summary["split"]["train"])
    schedule = build_schedule(config, per_epoch)
    lr = np.array([schedule.lr_at(t) for t in range(per_epoch * len(metrics["epoch"]))])
    plots.training_curves(metrics, lr, paths["curves"])

    if model.of_kind("conv"):
        _first_convolution(model, config, test, paths)
    else:
        _first_layer(model, config, paths)
    confusion = np.array(summary["test_confusion"])
    plots.confusion_matrix(confusion, CLASS_NAMES, paths["confusion"])
    plots.per_class_accuracy(per_class_scores(confusion)[1], CLASS_NAMES, paths["per_class"])

    if logits is not None and logits.shape != (len(test.y), model.n_classes):
        raise ValueError(f"logits of shape {logits.shape} for {len(test.y)} test images")
    probabilities = model.predict_proba(test.x) if logits is None else softmax(logits)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != test.y)
    confidence = probabilities[wrong, predicted[wrong]]
    shown = np.argsort(-confidence)[:N_MISCLASSIFIED]  # the most confident mistakes first
    wrong, confidence = wrong[shown], confidence[shown]
    plots.misclassified(
        pixels(test.x[wrong]),
        test.y[wrong],
        predicted[wrong],
        confidence,
        CLASS_NAMES,
        paths["misclassified"],
    )
    return paths


def _first_convolution(model: Network, config: TrainConfig, test: Split, paths: dict[str, Path]) -> None:
    """The first convolution's filters, what training changed in them, and the first block's
    feature maps of test image 0."""
    conv = model.of_kind("conv")[0]
    plots.conv_filters(conv.weight.value, paths["filters"])
    blank = config.replace(centre_inputs=False)  # the seed decides the weights, not the input mean
    initial = build_model(blank, np.random.default_rng(config.seed))
    first = initial.of_kind("conv")[0]
    what = "First convolution: learned change (final minus initial filters)"
    plots.conv_filters(conv.weight.value - first.weight.value, paths["learned_filters"], what=what)
    x = test.x[:1]
    for layer in model.layers:  # through the first block: convolution, pooling, batch norm, ReLU
        x = layer.forward(x, training=False)
        if layer.kind == "relu":
            break
    title = "after the first convolution, 2x2 max pooling, batch norm and ReLU"
    plots.feature_maps(pixels(test.x[0]).reshape(28, 28), x[0], title, paths["feature_maps"])


def _first_layer(model: Network, config: TrainConfig, paths: dict[str, Path]) -> None:
    first = model.of_kind("linear")[0]
    plots.first_layer_weights(first.weight.value, paths["weights"])
    # Training starts from random weights that it never fully erases; the seed recreates them, so
    # the difference shows what training learned on its own.
    # (Weights only: the input mean, which the seed does not decide, is left out.)
    blank = config.replace(centre_inputs=False)
    initial = build_model(blank, np.random.default_rng(config.seed)).of_kind("linear")[0].weight.value
    what = "First hidden layer: learned change (final minus initial weights)"
    plots.first_layer_weights(first.weight.value - initial, paths["learned"], what=what)
    plots.bias_histogram(first.bias.value, paths["biases"])
