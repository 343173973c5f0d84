"""The README's PCA-whitening experiment: train the default recipe on whitened inputs, print validation.

The training images are centred, projected onto their top ``--components`` principal components, and
each component divided by sqrt(variance + eps); the result is rescaled so that its total variance is
that of the centred pixels, which keeps the learning rate comparable. A huge eps (the default) only
rotates the centred pixels: the baseline. It reports validation accuracy only; the test set is never scored.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/whitening.py --eps 1 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np

from fashion_mlp import data
from fashion_mlp.config import PRESETS
from fashion_mlp.nn import MLP
from fashion_mlp.train import N_CLASSES, TrainState, build_optimizer, train


def whitening(x: np.ndarray, components: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the (784, components) matrix that whiten rows of ``x``, from ``x`` alone."""
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    variances, vectors = np.linalg.eigh(centred.T @ centred / len(x))
    variances, vectors = np.maximum(variances[::-1], 0.0), vectors[:, ::-1]  # largest first
    kept = variances[:components]
    matrix = vectors[:, :components] / np.sqrt(kept + eps)
    matrix *= np.sqrt(variances.sum() / (kept / (kept + eps)).sum())  # total variance as before
    print(f"total variance {variances.sum():.1f}; largest {np.round(variances[:3], 1).tolist()}")
    return mean.astype(np.float32), matrix.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--components", type=int, default=784, help="principal components kept (1-784)")
    parser.add_argument("--eps", type=float, default=1e9, help="added to each variance before dividing")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and dropout")
    args = parser.parse_args()
    if not 1 <= args.components <= 784 or not args.eps > 0:
        parser.error("components must be in 1..784 and eps positive")

    # the recipe before it learnt from the hardest images (hardest_of 1); whitening centres the inputs
    config = PRESETS["validation"].replace(seed=args.seed, centre_inputs=False, hardest_of=1)
    dataset = data.load(None, config.val_size, config.split_seed, allow_download=False)
    mean, matrix = whitening(dataset.train.x, args.components, args.eps)
    for split in (dataset.train, dataset.val):
        split.x = np.ascontiguousarray((split.x - mean) @ matrix)
    rng = np.random.default_rng(config.seed)
    model = MLP([args.components, *config.hidden_sizes, N_CLASSES], rng, config.dropout, init=config.init)
    state = TrainState(config, model, build_optimizer(config, model), rng)
    state = train(config, dataset, state=state)
    for record in state.history:
        print(f"epoch {record.epoch:2d}  train {record.train_accuracy:.4f}  val {record.val_accuracy:.4f}")
    print(f"best validation accuracy {state.best_val_accuracy:.4f} at epoch {state.best_epoch}")


if __name__ == "__main__":
    main()
