"""The README's later variants of the default recipe, trained and scored on validation only.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/variants.py hidden-centred --seed 0

Most variants are settings (batch 512, 28 epochs, learning from the hardest third of each step's
images). Five change what the package does not offer:
- hidden-centred: each ReLU's output minus its mean over the batch (mean-only batch normalisation, with
  a running mean at inference), so that every layer, not only the first, sees centred inputs;
- per-image: each image shifted to mean 0 and scaled to about the median image's standard deviation
  (contrast normalisation), before the usual centring;
- 50000-images: 5,000 of the 55,000 training images left out (the same ones for every seed), to measure
  what 5,000 more training images are worth, and so whether to hold any out at all.
- random-third: like hardest-of-3, but each step learns from a random third of the images it scored,
  not the hardest: the same arithmetic, to show what choosing by loss is worth;
- shared-dropout: one dropout mask for the whole batch, the same 70% of units kept for every image of
  a step, which would let a step multiply only the kept units' weights (58% of the arithmetic).
It prints the best validation accuracy and its epoch, and the last epoch's; the test set is never scored.
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import argparse

import numpy as np

from fashion_mlp import data
from fashion_mlp import train as train_module
from fashion_mlp.config import PRESETS
from fashion_mlp.nn import Dropout, Layer, ReLU
from fashion_mlp.train import new_state, train

# Every variant starts from --preset validation as it was before it learnt from the hardest third of
# each step's images (hardest_of 1): the recipe the README's tables of variants compare against.
BASE = PRESETS["validation"].replace(hardest_of=1)

SETTINGS = {
    "default": {},
    "batch-512": {"batch_size": 512, "lr": 0.1, "epochs": 36},
    "batch-512-smoothing-0.1": {"batch_size": 512, "lr": 0.1, "epochs": 36, "label_smoothing": 0.1},
    "28-epochs": {"epochs": 28},
    "1024-512": {"hidden_sizes": (1024, 512)},
    "1024-256": {"hidden_sizes": (1024, 256)},
    "hardest-of-2": {"hardest_of": 2},
    "hardest-of-3": {"hardest_of": 3},
    "hardest-of-4": {"hardest_of": 4},
    "hardest-of-3-36-epochs": {"hardest_of": 3, "epochs": 36},
    "hidden-centred": {},
    "per-image": {},
    "50000-images": {},
    "random-third": {"hardest_of": 3},
    "shared-dropout": {},
}


class BatchCentre(Layer):
    """x minus its mean over the batch; at inference, minus a running mean of those means."""

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.running_mean: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            return x - self.running_mean
        mean = x.mean(axis=0)
        if self.running_mean is None:
            self.running_mean = mean
        else:
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mean
        # A buffer of its own: the ReLU before reads its output again in backward.
        return np.subtract(x, mean, out=self._buffer("out", x.shape, x.dtype))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        # d(x - mean(x))/dx applied to grad: grad minus its mean over the batch
        return np.subtract(grad, grad.mean(axis=0), out=self._buffer("grad_in", grad.shape, grad.dtype))


class SharedDropout(Layer):
    """Dropout with one mask for the whole batch: round(keep * units) units, the same for every image."""

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.rate, self.rng = rate, rng
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            self.mask = None
            return x
        units = x.shape[1]
        kept = round((1 - self.rate) * units)
        mask = np.zeros((1, units), np.float32)
        mask[0, self.rng.choice(units, kept, replace=False)] = units / kept
        self.mask = np.repeat(mask, len(x), axis=0)
        return x * self.mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad if self.mask is None else grad * self.mask


def contrast_normalise(x: np.ndarray, std: float = 0.66) -> np.ndarray:
    """Each row shifted to mean 0 and scaled to standard deviation ``std`` (0.66: about the median
    image's, after the report's scaling to [-1, 1])."""
    mean, spread = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
    return ((x - mean) / np.maximum(spread, 1e-3) * std).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("variant", choices=SETTINGS)
    parser.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and dropout")
    args = parser.parse_args()

    config = BASE.replace(seed=args.seed, **SETTINGS[args.variant])
    dataset = data.load(None, config.val_size, config.split_seed, allow_download=False)
    if args.variant == "per-image":
        for split in (dataset.train, dataset.val):
            split.x = contrast_normalise(split.x)
    if args.variant == "50000-images":
        keep = np.sort(np.random.default_rng(123).permutation(len(dataset.train))[5_000:])
        dataset.train = data.Split(dataset.train.x[keep], dataset.train.y[keep])
    state = new_state(config, dataset)
    if args.variant == "hidden-centred":
        layers = []
        for layer in state.model.layers:
            layers += [layer, BatchCentre()] if isinstance(layer, ReLU) else [layer]
        state.model.layers = layers
    if args.variant == "random-third":
        picks = np.random.default_rng(2000 + args.seed)
        train_module.hardest_rows = lambda logits, labels, smoothing, k: np.sort(
            picks.choice(len(labels), k, replace=False)
        )
    if args.variant == "shared-dropout":
        rng = np.random.default_rng(1000 + args.seed)
        layers = state.model.layers
        state.model.layers = [SharedDropout(x.rate, rng) if isinstance(x, Dropout) else x for x in layers]
    state = train(config, dataset, state=state)
    print(f"{args.variant}, seed {args.seed}: best validation accuracy {state.best_val_accuracy:.4f} "
          f"at epoch {state.best_epoch}; last epoch's {state.history[-1].val_accuracy:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
