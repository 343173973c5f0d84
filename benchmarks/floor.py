"""The physical limit of a training step: its matrix products alone (the BLAS floor), its roofline (the
products, plus one SGD-momentum update over its parameters, each timed alone), and where the rest of
the step goes. Used by `make bench` (run.py), which interleaves both with the timed epochs.

The floor runs, for every step of an epoch, exactly the products our step runs: for each layer the
forward x @ W, the weight gradient x.T @ g and (above the first layer) the input gradient g @ W.T, with
the step's shapes, transposes, dtype and thread count, into preallocated outputs. The profile runs our
step's own operations in the same order on the same layer objects, with a clock around each phase:
the batch gather, forward products, backward products, bias and ReLU, the loss, the optimiser update,
and everything else (the Python between them).
"""

from __future__ import annotations

# isort: off
import fashion_mlp  # noqa: F401  (first: it shortens OpenBLAS's idle spin before NumPy loads, nn/halves.py)

# isort: on
import itertools
import math
import time

import numpy as np

from fashion_mlp.nn import Linear, ReLU, softmax_cross_entropy
from fashion_mlp.train import build_schedule, new_state, steps_per_epoch

PHASES = (
    "gather",
    "forward products",
    "backward products",
    "bias and ReLU",
    "loss",
    "update",
    "everything else",
)


def floor_epochs(n: int, sizes: list[int], batch: int):
    """Yields the seconds of one epoch's worth of steps of matrix products alone."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    weights = [rng.standard_normal((a, b), dtype=f32) * f32(0.05) for a, b in itertools.pairwise(sizes)]
    inputs = [rng.standard_normal((batch, a), dtype=f32) for a in sizes[:-1]]  # each layer's input
    outputs = [np.empty((batch, b), f32) for b in sizes[1:]]
    grads = [rng.standard_normal((batch, b), dtype=f32) for b in sizes[1:]]  # dLoss/dOutput of each layer
    weight_grads = [np.empty_like(w) for w in weights]
    input_grads = [np.empty((batch, a), f32) for a in sizes[:-1]]
    steps = math.ceil(n / batch)
    while True:
        start = time.perf_counter()
        for _ in range(steps):
            for x, w, out in zip(inputs, weights, outputs):
                np.matmul(x, w, out=out)
            for i in reversed(range(len(weights))):
                np.matmul(inputs[i].T, grads[i], out=weight_grads[i])
                if i > 0:
                    np.matmul(grads[i], weights[i].T, out=input_grads[i])
        yield time.perf_counter() - start


def update_epochs(n: int, sizes: list[int], batch: int, l2: float = 1e-4):
    """Yields the seconds of one epoch's worth of SGD-momentum updates alone (our optimiser, with L2,
    over the network's parameters, the gradients already there): with the products alone, the step's
    roofline."""
    from fashion_mlp.nn import MLP, SGD

    model = MLP(sizes, np.random.default_rng(0))
    optimizer = SGD(model.parameters(), momentum=0.9, l2=l2)
    optimizer.grad[...] = np.random.default_rng(1).standard_normal(optimizer.grad.size, dtype=np.float32)
    steps = math.ceil(n / batch)
    while True:
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step(0.05)
        yield time.perf_counter() - start


class Profile:
    """Our step, phase by phase, epoch after epoch; ``phases`` holds each epoch's seconds per phase."""

    def __init__(self, config, dataset) -> None:
        self.config, self.dataset = config, dataset
        self.phases: list[dict[str, float]] = []

    def epochs(self):
        config, data = self.config, self.dataset
        state = new_state(config, data)
        model, optimizer, rng = state.model, state.optimizer, state.rng
        schedule = build_schedule(config, steps_per_epoch(config, len(data.train)))
        x, y, batch = data.train.x, data.train.y, config.batch_size
        clock = time.perf_counter
        while True:
            t = dict.fromkeys(PHASES, 0.0)
            epoch_start = clock()
            order = rng.permutation(len(y))
            for start in range(0, len(y), batch):
                a = clock()
                idx = order[start : start + batch]
                xb, yb = x.take(idx, axis=0), y[idx]
                b = clock()
                t["gather"] += b - a
                h = xb
                for layer in model.layers:
                    a = clock()
                    if isinstance(layer, Linear):
                        layer._input = h
                        out = layer._buffer("out", (len(h), layer.bias.value.size), h.dtype)
                        np.matmul(h, layer.weight.value, out=out)
                        b = clock()
                        t["forward products"] += b - a
                        out += layer.bias.value
                        h = out
                        t["bias and ReLU"] += clock() - b
                    else:
                        h = layer.forward(h)
                        t["bias and ReLU"] += clock() - a
                a = clock()
                _, grad = softmax_cross_entropy(h, yb)
                t["loss"] += clock() - a
                for layer in reversed(model.layers):
                    a = clock()
                    if isinstance(layer, Linear):
                        upstream = grad
                        np.matmul(layer._input.T, upstream, out=layer.weight.grad)
                        if layer.needs_input_grad:
                            grad_in = layer._buffer("grad_in", layer._input.shape, grad.dtype)
                            grad = np.matmul(upstream, layer.weight.value.T, out=grad_in)
                        b = clock()
                        t["backward products"] += b - a
                        layer._column_sums(upstream, layer.bias.grad)
                        t["bias and ReLU"] += clock() - b
                    elif isinstance(layer, ReLU):
                        grad = layer.backward(grad)
                        t["bias and ReLU"] += clock() - a
                a = clock()
                optimizer.step(schedule.lr_at(state.step))
                state.step += 1
                t["update"] += clock() - a
            total = clock() - epoch_start
            t["everything else"] = total - sum(t.values())
            self.phases.append(t)
            yield total
