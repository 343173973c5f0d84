"""Weight averaging for the resnet preset, scored on validation only (docs/recipe.md, "Weight averaging").

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/averaging.py --split-seed 0

One run of the preset's recipe on 55,000 images (``--val-size 5000 --split-seed S --seed S``) keeps,
beside its weights, exponential moving averages of them, one per decay: after each step,
``average = decay * average + (1 - decay) * weights``, and batch norm's running statistics likewise.
At the end it scores the last epoch's weights and each average on the 5,000 held-out images, from 1
and 10 views, each twice: with batch norm's statistics as they are (averaged, for an average), and
recomputed for those weights from 10,240 training images, as stochastic weight averaging does
(Izmailov et al., 2018). The test set is never scored.
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import argparse
import json

import numpy as np

from fashion_mlp import data
from fashion_mlp.config import PRESETS
from fashion_mlp.nn import BatchNorm, Layer, Network, Residual
from fashion_mlp.train import Callback, EpochRecord, TrainState, build_model, train

RECOMPUTE_IMAGES, RECOMPUTE_BATCH = 10_240, 512
RECOMPUTE_SEED = 123  # which training images batch norm's statistics are recomputed on


def batch_norms(layers: list[Layer]) -> list[BatchNorm]:
    """Every batch norm of a network, those inside residual blocks included."""
    found: list[BatchNorm] = []
    for layer in layers:
        if isinstance(layer, BatchNorm):
            found.append(layer)
        elif isinstance(layer, Residual):
            found += batch_norms(layer.layers)
    return found


class Averages(Callback):
    """An exponential moving average of the weights (the optimiser's flat buffer) and of batch norm's
    running statistics, per decay, updated after every step; and the last epoch's state."""

    def __init__(self, decays: list[float], epochs: int) -> None:
        self.decays, self.epochs = decays, epochs
        self.averages: dict[float, tuple[np.ndarray, list[np.ndarray]]] = {}
        self.last: dict[str, np.ndarray] = {}

    def on_step(self, state: TrainState, loss: float) -> None:
        weights = state.optimizer.value
        stats = [s for bn in batch_norms(state.model.layers) for s in (bn.running_mean, bn.running_var)]
        for decay in self.decays:
            if decay not in self.averages:  # the first step: the average starts at the weights
                self.averages[decay] = (weights.copy(), [s.copy() for s in stats])
                continue
            average, average_stats = self.averages[decay]
            for mean, new in ((average, weights), *zip(average_stats, stats)):
                mean *= decay
                mean += (1 - decay) * new

    def on_epoch_end(self, state: TrainState, record: EpochRecord, improved: bool) -> None:
        print(f"epoch {record.epoch}: validation {record.val_accuracy:.4f}", flush=True)
        if record.epoch == self.epochs:
            self.last = state.model.state_dict()


def recompute_statistics(network: Network, images: np.ndarray) -> None:
    """Batch norm's running statistics as the plain mean, over batches of ``images``, of what each
    batch gives with the network's present weights (training-mode forwards, nothing learnt)."""
    norms = batch_norms(network.layers)
    momenta = [bn.momentum for bn in norms]
    for k, start in enumerate(range(0, len(images), RECOMPUTE_BATCH)):
        for bn in norms:
            bn.momentum = 1.0 / (k + 1)  # running = the mean of the first k + 1 batches' statistics
        network.forward(images[start : start + RECOMPUTE_BATCH], training=True)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-seed", type=int, default=0, help="the split's seed, and the run's")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--decays", type=float, nargs="+", default=[0.998, 0.999, 0.9995])
    args = parser.parse_args()
    s = args.split_seed
    config = PRESETS["resnet"].replace(val_size=5_000, epochs=args.epochs, split_seed=s, seed=s, views=1)
    dataset = data.load(allow_download=False, val_size=5_000, split_seed=s)
    averages = Averages(args.decays, args.epochs)
    state = train(config, dataset, [averages])
    network, weights = state.model, state.optimizer.value  # the parameters are views of ``weights``
    rng = np.random.default_rng(0)
    scorers = {views: build_model(PRESETS["resnet"].replace(views=views), rng) for views in (1, 10)}
    chosen = np.random.default_rng(RECOMPUTE_SEED).permutation(len(dataset.train))[:RECOMPUTE_IMAGES]
    recompute_on = dataset.train.x[chosen]
    results = {}

    def score(name: str) -> None:
        for statistics in ("as kept", "recomputed"):
            if statistics == "recomputed":
                recompute_statistics(network, recompute_on)
            state_dict = network.state_dict()
            results[f"{name}, statistics {statistics}"] = row = {}
            for views, scorer in scorers.items():
                scorer.load_state_dict(state_dict)
                label = f"{views} view" + ("s" if views > 1 else "")
                row[label] = float(np.mean(scorer.predict(dataset.val.x) == dataset.val.y))
            print(f"{name}, statistics {statistics}: {row}", flush=True)

    network.load_state_dict(averages.last)
    score("last epoch")
    for decay, (average, stats) in averages.averages.items():
        network.load_state_dict(averages.last)
        weights[...] = average
        for bn, (mean, var) in zip(batch_norms(network.layers), zip(stats[::2], stats[1::2])):
            bn.running_mean[...], bn.running_var[...] = mean, var
        score(f"average, decay {decay}")
    print(json.dumps({"split_seed": s, "epochs": args.epochs, "results": results}, indent=1))


if __name__ == "__main__":
    main()
