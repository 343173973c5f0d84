"""A network made ready to answer: raw inputs in, class probabilities out, as fast as NumPy allows.

Training needs the layers to cache what backward uses; answering needs none of that. ``Inference``
compiles the layers into a list of steps, each a function from a batch to a batch, asking each layer
what it becomes (``Layer.fold`` and ``Layer.answer``). Every network answers this one way; what it
does depends on the layers, not on which model they came from:

- **Batch norm folds** into the convolution or fully connected layer before it (``fold``): at
  inference it is y = x·s + t per channel, s = gamma / sqrt(var + eps), t = beta - mean·s, so
  w' = w·s and b' = b·s + t. Max pooling between the two does not stop this while every s is
  positive, since a positive scale commutes with a maximum (the cnn preset's conv-pool-BN-ReLU).
- **The input's normalisation folds** into the first layer where that is a fully connected one,
  with only centring or dropout before it: x' = (x - offset) / scale - mean, so x' @ W + b =
  x @ (W / scale) + (b - s @ W) with s = offset / scale + mean. A raw pixel goes straight into the
  first product. (Not into a convolution: its zero padding would no longer be zero in pixel units.)
  Elsewhere the normalisation is the first step.
- **Fully connected layers answer feature-major** from the network's input, where the input map
  folds into the first of them, until the logits: h' = Wt @ h on a contiguous Wt = W.T, activations
  (features, batch). OpenBLAS runs this shape 10-25% faster than x @ W for the batches served
  (docs/speed.md); the logits turn back to (batch, classes). A network made only of such layers
  answers a batch of one as matrix-vector products. After a convolution they stay batch-major: a
  CNN's tail answered no faster feature-major, and would change its logits' last bits
  (``Plan.dense``).
- **One softmax for every network**, in place: exp(z - max) / sum. (A CNN answered exp of the
  log-softmax before: on 10,000 test images the two differ by at most 1.2e-7, the labels never.)
- **A bias that max pooling follows** is added after the pooling, on a quarter of the values.
- ReLU in place, dropout gone, every array a fresh one: nothing is cached, so one ``Inference`` may
  answer from several threads at once, and never writes into the layers' training buffers.

All of this is computed once, in float64, from the weights as they are when it is made: after
training further, make a new one (``Network`` does, for its own ``predict_proba``). The ONNX export
folds through the same ``fold`` (export.py), so both answer alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .layer import Layer
from .plan import Folding, Plan


class Layered(Protocol):
    """What ``Inference`` compiles: a ``Network``, or anything else with layers."""

    layers: Sequence[Layer]
    n_inputs: int
    n_classes: int
    dtype: np.dtype

    @property
    def chunk(self) -> int: ...


def fold(layers: Sequence[Layer], offset: float = 0.0, scale: float = 1.0) -> Folding:
    """Every layer's part in folding, in order: what ``Inference`` and the ONNX export compute from."""
    folding = Folding(offset, scale)
    for i, layer in enumerate(layers):
        layer.fold(i, folding)
    return folding.finish()


class Inference:
    """Probabilities and labels for raw inputs (N, features), e.g. pixels 0-255, as the network sees
    ``(x - offset) / scale``. Rows are answered ``chunk`` at a time to bound memory (by default the
    network's: 128 with convolutions, whose columns are k·k times their input, else 4,096)."""

    def __init__(
        self, network: Layered, offset: float = 0.0, scale: float = 1.0, chunk: int | None = None
    ) -> None:
        folding = fold(network.layers, offset, scale)
        self.offset, self.scale = offset, scale
        self.n_inputs, self.n_classes, self.dtype = network.n_inputs, network.n_classes, network.dtype
        self.chunk = chunk or network.chunk
        plan = Plan(folding, self.dtype, len(network.layers))
        for i, layer in enumerate(network.layers):
            layer.answer(i, plan)
        self._steps, self._vector = plan.steps, plan.vector
        self._input_folded = folding.input_into is not None

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"inputs must have shape (N, {self.n_inputs}), got {x.shape}")
        if len(x) <= self.chunk:
            return self._logits(x)
        out = np.empty((len(x), self.n_classes), self.dtype)
        for start in range(0, len(x), self.chunk):
            out[start : start + self.chunk] = self._logits(x[start : start + self.chunk])
        return out

    def _logits(self, x: np.ndarray) -> np.ndarray:
        if self._input_folded:  # the normalisation is in the first layer's weights
            h = x.astype(self.dtype, copy=False)
        else:
            h = np.subtract(x, self.dtype.type(self.offset), dtype=self.dtype)  # a fresh array
            h *= self.dtype.type(1.0 / self.scale)
        for step in self._steps:
            h = step(h)
        return h

    def _one(self, x: np.ndarray) -> np.ndarray:
        """A batch of one as vectors: matrix-vector products and whole-array reductions, the fewest
        NumPy calls (each costs about a microsecond, as much as a small layer's product)."""
        assert self._vector is not None
        z = x.astype(self.dtype, copy=False)
        for step in self._vector:
            z = step(z)
        # A handful of classes: Python's max and sum over a list beat a NumPy reduction's set-up.
        z -= max(z.tolist())
        np.exp(z, out=z)
        z /= sum(z.tolist())
        return z[None]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the logits, computed in place: each row sums to 1."""
        if self._vector is not None and isinstance(x, np.ndarray) and x.shape == (1, self.n_inputs):
            return self._one(x[0])
        z = self.logits(x)
        # The ufuncs' own reductions: the array methods add a Python layer, which shows at batch 1.
        np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True), out=z)
        np.exp(z, out=z)
        np.divide(z, np.add.reduce(z, axis=1, keepdims=True), out=z)
        return z

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)
