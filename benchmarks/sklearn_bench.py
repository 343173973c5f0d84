"""Our scikit-learn estimator against scikit-learn's own MLPClassifier: `make bench-sklearn`.

Three datasets: Fashion-MNIST (60,000 / 10,000, pixels scaled to [-1, 1]), scikit-learn's digits (5-fold
cross-validation, standardised), and make_classification(200,000 samples, 100 features, 60 informative,
10 classes, random_state 0) with a held-out fifth (standardised). For each:

- like for like: the same architecture, solver (SGD with momentum 0.9, and Adam), learning rate, batch
  size and epochs, float32, no L2, no early stopping, every epoch run;
- each at its best: scikit-learn's MLPClassifier with its defaults (Adam, alpha 1e-4) and early stopping,
  up to the same epochs; ours with its own recipe's settings (dropout 0.3, label smoothing 0.05, the
  hardest third, cosine schedule, centred inputs), the same epochs. Both fixed before any test score was seen.

Fit time and test accuracy, median of three seeds; ours and scikit-learn's fits take turns. Writes
benchmarks/sklearn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.preprocessing import StandardScaler

from fashion_mlp import data
from fashion_mlp.sklearn import MLPClassifier as OurMLP

DATASETS = {  # hidden layers, batch size, epochs
    "fashion-mnist": ((256, 256), 128, 10),
    "digits": ((128,), 32, 30),
    "make_classification": ((256, 256), 256, 10),
}
SOLVERS = {"sgd": 0.01, "adam": 0.001}  # learning rate of each


def splits(name: str):
    """[(X_train, y_train, X_test, y_test), ...] as float32: one split, or the five folds of digits."""
    if name == "fashion-mnist":
        d = data.load(val_size=0, allow_download=False)
        return [(d.train.x, d.train.y, d.test.x, d.test.y)]
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)
        return [_scaled(X[a], y[a], X[b], y[b]) for a, b in folds]
    X, y = make_classification(
        n_samples=200_000, n_features=100, n_informative=60, n_classes=10, random_state=0
    )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    return [_scaled(X_train, y_train, X_test, y_test)]


def _scaled(X_train, y_train, X_test, y_test):
    scaler = StandardScaler().fit(X_train)
    f32 = np.float32
    return scaler.transform(X_train).astype(f32), y_train, scaler.transform(X_test).astype(f32), y_test


def like_for_like(solver: str, hidden, batch: int, epochs: int, seed: int):
    lr = SOLVERS[solver]
    ours = OurMLP(
        hidden_sizes=hidden,
        epochs=epochs,
        batch_size=batch,
        optimizer=solver,
        lr=lr,
        momentum=0.9,
        schedule="constant",
        dropout=0.0,
        label_smoothing=0.0,
        hardest_of=1,
        centre_inputs=False,
        l2=0.0,
        random_state=seed,
    )
    theirs = SkMLP(
        hidden_layer_sizes=hidden,
        solver=solver,
        learning_rate_init=lr,
        momentum=0.9,
        nesterovs_momentum=False,
        batch_size=batch,
        max_iter=epochs,
        alpha=0.0,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        shuffle=True,
        random_state=seed,
    )
    return ours, theirs


def at_their_best(hidden, batch: int, epochs: int, seed: int):
    # our Fashion-MNIST recipe, the hardest third included
    ours = OurMLP(hidden_sizes=hidden, epochs=epochs, batch_size=batch, hardest_of=3, random_state=seed)
    theirs = SkMLP(
        hidden_layer_sizes=hidden, batch_size=batch, max_iter=epochs, early_stopping=True, random_state=seed
    )
    return ours, theirs


def timed_fit(model, split) -> tuple[float, float]:
    X_train, y_train, X_test, y_test = split
    start = time.perf_counter()
    model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return seconds, float((model.predict(X_test) == y_test).mean())


def measure(name: str, seeds: int) -> dict:
    hidden, batch, epochs = DATASETS[name]
    parts = splits(name)
    rows = {}
    setups = {
        f"{s}, like for like": (lambda seed, s=s: like_for_like(s, hidden, batch, epochs, seed))
        for s in SOLVERS
    }
    setups["each at its best"] = lambda seed: at_their_best(hidden, batch, epochs, seed)
    for setup, make in setups.items():
        results: dict[str, dict[str, list[float]]] = {
            "ours": {"s": [], "acc": []},
            "sklearn": {"s": [], "acc": []},
        }
        for seed in range(seeds):
            for part in parts:  # digits: the five folds, each fitted by both in turn
                ours, theirs = make(seed)
                for who, model in (("ours", ours), ("sklearn", theirs)):
                    seconds, accuracy = timed_fit(model, part)
                    results[who]["s"].append(seconds)
                    results[who]["acc"].append(accuracy)
        row = {}
        for who, r in results.items():
            n = len(parts)  # per seed: the sum of the folds' fit times and the mean of their accuracies
            per_seed_s = [sum(r["s"][i * n : (i + 1) * n]) for i in range(seeds)]
            per_seed_acc = [statistics.mean(r["acc"][i * n : (i + 1) * n]) for i in range(seeds)]
            row[f"{who}_fit_s"] = statistics.median(per_seed_s)
            row[f"{who}_accuracy"] = statistics.median(per_seed_acc)
        row["speedup"] = row["sklearn_fit_s"] / row["ours_fit_s"]
        rows[setup] = row
        print(f"measured {name}: {setup}", file=sys.stderr)
    return {"hidden": list(hidden), "batch_size": batch, "epochs": epochs, "rows": rows}


def format_table(results: dict) -> str:
    lines = [
        f"{results['date']}; {results['cpus']} CPUs; medians of {results['seeds']} seeds",
        "",
        "| dataset | setup | ours: fit, accuracy | scikit-learn: fit, accuracy | speed-up | accuracy gain |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["datasets"].items():
        arch = "-".join(map(str, r["hidden"]))
        for setup, row in r["rows"].items():
            lines.append(
                f"| {name} ({arch}, batch {r['batch_size']}, {r['epochs']} epochs) | {setup} "
                f"| {row['ours_fit_s']:.1f} s, {row['ours_accuracy']:.4f} "
                f"| {row['sklearn_fit_s']:.1f} s, {row['sklearn_accuracy']:.4f} | {row['speedup']:.2f}x "
                f"| {row['ours_accuracy'] - row['sklearn_accuracy']:+.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # max_iter reached: as intended here
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setup (median taken; default 3)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "sklearn.json")
    args = parser.parse_args()
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "seeds": args.seeds,
        "datasets": {name: measure(name, args.seeds) for name in args.datasets},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
