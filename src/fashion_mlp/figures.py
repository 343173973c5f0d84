"""Every figure of a finished run, read from its directory: RUN_DIR/figures/*.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, plots, runs
from .config import TrainConfig
from .data import CLASS_NAMES, Split, pixels
from .errors import MissingFile
from .evaluation import per_class_scores
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
N_MISCLASSIFIED = 24


def figure_paths(run_dir: Path) -> dict[str, Path]:
    return {key: Path(run_dir) / "figures" / name for key, name in FIGURES.items()}


def draw(run_dir: Path, test: Split) -> dict[str, Path]:
    """Draw every figure of ``run_dir`` from its files and the test split; return their paths."""
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

    first = model.linears[0]
    plots.first_layer_weights(first.weight.value, paths["weights"])
    # Training starts from random weights that it never fully erases; the seed recreates them, so
    # the difference shows what training learned on its own.
    # (Weights only: the input mean, which the seed does not decide, is left out.)
    blank = config.replace(centre_inputs=False)
    initial = build_model(blank, np.random.default_rng(config.seed)).linears[0].weight.value
    what = "First hidden layer: learned change (final minus initial weights)"
    plots.first_layer_weights(first.weight.value - initial, paths["learned"], what=what)
    plots.bias_histogram(first.bias.value, paths["biases"])

    confusion = np.array(summary["test_confusion"])
    plots.confusion_matrix(confusion, CLASS_NAMES, paths["confusion"])
    plots.per_class_accuracy(per_class_scores(confusion)[1], CLASS_NAMES, paths["per_class"])

    probabilities = model.predict_proba(test.x)
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
