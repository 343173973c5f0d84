"""Our scikit-learn estimator against scikit-learn's own MLPClassifier: `make bench-sklearn`.

Two tables, both classes given the very same parameter values (the names are the same now):

- **Incremental**: dask-ml's `Incremental` drives each estimator's `partial_fit` over Fashion-MNIST in
  6,000-row blocks of a dask array persisted on a `LocalCluster` (2 worker processes, 127.0.0.1), 10 passes,
  hidden layers 256-256, scikit-learn's defaults otherwise (Adam at 0.001, batch 200, alpha 1e-4); test
  accuracy after every pass and the wall time of each pass. Ours and theirs take turns pass by pass.
- **fit**: Fashion-MNIST (60,000 / 10,000, pixels scaled to [-1, 1]) and scikit-learn's digits (5-fold
  cross-validation, standardised; fit time summed over the folds, accuracy averaged), SGD with momentum
  and Adam; fit time and test accuracy.

Medians of three seeds. Writes benchmarks/sklearn.json.
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.preprocessing import StandardScaler

from fashion_mlp import data
from fashion_mlp.sklearn import MLPClassifier as OurMLP

sys.path.insert(0, str(Path(__file__).parent))
import kernel

DATASETS = {  # hidden layers, batch size, epochs
    "fashion-mnist": ((256, 256), 128, 10),
    "digits": ((128,), 32, 30),
}
SOLVERS = {"sgd": {"solver": "sgd", "learning_rate_init": 0.01, "momentum": 0.9}, "adam": {}}
CLASSES = {"ours": OurMLP, "scikit-learn": SkMLP}


def fashion_mnist():
    d = data.load(val_size=0, allow_download=False)
    return d.train.x, d.train.y, d.test.x, d.test.y  # pixels scaled to [-1, 1], as the report does


def splits(name: str):
    """[(X_train, y_train, X_test, y_test), ...] as float32: one split, or the five folds of digits."""
    if name == "fashion-mnist":
        return [fashion_mnist()]
    X, y = load_digits(return_X_y=True)
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)
    return [_scaled(X[a], y[a], X[b], y[b]) for a, b in folds]


def _scaled(X_train, y_train, X_test, y_test):
    scaler = StandardScaler().fit(X_train)
    f32 = np.float32
    return scaler.transform(X_train).astype(f32), y_train, scaler.transform(X_test).astype(f32), y_test


def timed_fit(model, split) -> tuple[float, float]:
    X_train, y_train, X_test, y_test = split
    start = time.perf_counter()
    model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return seconds, float((model.predict(X_test) == y_test).mean())


def measure_fit(name: str, seeds: int) -> dict:
    hidden, batch, epochs = DATASETS[name]
    parts = splits(name)
    rows = {}
    for solver, extra in SOLVERS.items():
        results = {who: {"s": [], "acc": []} for who in CLASSES}
        for seed in range(seeds):
            params = dict(hidden_layer_sizes=hidden, batch_size=batch, max_iter=epochs, random_state=seed)
            for part in parts:  # digits: the five folds, each fitted by both in turn
                for who, cls in CLASSES.items():
                    seconds, accuracy = timed_fit(cls(**params, **extra), part)
                    results[who]["s"].append(seconds)
                    results[who]["acc"].append(accuracy)
        row = {}
        for who, r in results.items():
            n = len(parts)  # per seed: the sum of the folds' fit times and the mean of their accuracies
            per_seed_s = [sum(r["s"][i * n : (i + 1) * n]) for i in range(seeds)]
            per_seed_acc = [statistics.mean(r["acc"][i * n : (i + 1) * n]) for i in range(seeds)]
            row[f"{who}_fit_s"] = statistics.median(per_seed_s)
            row[f"{who}_accuracy"] = statistics.median(per_seed_acc)
        row["speedup"] = row["scikit-learn_fit_s"] / row["ours_fit_s"]
        rows[solver] = row
        print(f"measured fit on {name}: {solver}", file=sys.stderr)
    return {"hidden": list(hidden), "batch_size": batch, "epochs": epochs, "rows": rows}


def measure_incremental(seeds: int, passes: int, block: int) -> dict:
    """Test accuracy and seconds of each pass of Incremental, per estimator: medians over seeds."""
    import dask.array as da
    from dask_ml.wrappers import Incremental
    from distributed import Client, LocalCluster

    X_train, y_train, X_test, y_test = fashion_mnist()
    per = {who: {"accuracy": [], "seconds": []} for who in CLASSES}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        dX = da.from_array(X_train, chunks=(block, X_train.shape[1])).persist()
        dy = da.from_array(y_train, chunks=block).persist()
        for seed in range(seeds):
            params = dict(hidden_layer_sizes=(256, 256), random_state=seed)
            models = {who: Incremental(cls(**params), random_state=seed) for who, cls in CLASSES.items()}
            runs = {who: ([], []) for who in CLASSES}
            for p in range(passes):
                for who, model in models.items():  # pass by pass, in turn
                    start = time.perf_counter()
                    model.partial_fit(dX, dy, classes=np.arange(10))
                    runs[who][1].append(time.perf_counter() - start)
                    runs[who][0].append(float(model.estimator_.score(X_test, y_test)))
                shown = ", ".join(f"{w} {r[0][-1]:.4f} in {r[1][-1]:.1f} s" for w, r in runs.items())
                print(f"seed {seed}, pass {p + 1}: {shown}", file=sys.stderr)
            for who, (accuracy, seconds) in runs.items():
                per[who]["accuracy"].append(accuracy)
                per[who]["seconds"].append(seconds)
    medians = {
        who: {key: [statistics.median(v) for v in zip(*runs)] for key, runs in r.items()}
        for who, r in per.items()
    }
    return {"block": block, "passes": passes, "per_seed": per, "median": medians}


def format_tables(results: dict) -> str:
    inc = results["incremental"]
    m = inc["median"]
    lines = [
        f"{results['date']}; {results['cpus']} CPUs; medians of {results['seeds']} seeds",
        kernel.line(results["kernel"]),
        "",
        f"Incremental, Fashion-MNIST in {inc['block']:,}-row blocks, 256-256, scikit-learn's defaults:",
        "",
        "| pass | ours: accuracy | scikit-learn: accuracy | ours − theirs | ours: s/pass "
        "| scikit-learn: s/pass |",
        "|---|---|---|---|---|---|",
    ]
    for p in range(inc["passes"]):
        ours, theirs = m["ours"]["accuracy"][p], m["scikit-learn"]["accuracy"][p]
        lines.append(
            f"| {p + 1} | {ours:.4f} | {theirs:.4f} | {ours - theirs:+.4f} "
            f"| {m['ours']['seconds'][p]:.2f} | {m['scikit-learn']['seconds'][p]:.2f} |"
        )
    lines += [
        "",
        "fit, the same parameter values:",
        "",
        "| dataset | solver | ours: fit, accuracy | scikit-learn: fit, accuracy | speed-up "
        "| accuracy, ours − theirs |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["fit"].items():
        arch = "-".join(map(str, r["hidden"]))
        for solver, row in r["rows"].items():
            lines.append(
                f"| {name} ({arch}, batch {r['batch_size']}, {r['epochs']} epochs) | {solver} "
                f"| {row['ours_fit_s']:.1f} s, {row['ours_accuracy']:.4f} "
                f"| {row['scikit-learn_fit_s']:.1f} s, {row['scikit-learn_accuracy']:.4f} "
                f"| {row['speedup']:.2f}x | {row['ours_accuracy'] - row['scikit-learn_accuracy']:+.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # max_iter reached: as intended here
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setup (median taken; default 3)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--passes", type=int, default=10, help="passes of Incremental (default 10)")
    parser.add_argument("--block", type=int, default=6000, help="rows per block (default 6,000)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "sklearn.json")
    args = parser.parse_args()
    kernel.use_the_users_kernel()
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kernel": kernel.describe(),
        "cpus": os.cpu_count(),
        "seeds": args.seeds,
        "incremental": measure_incremental(args.seeds, args.passes, args.block),
        "fit": {name: measure_fit(name, args.seeds) for name in args.datasets},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_tables(results))


if __name__ == "__main__":
    main()
