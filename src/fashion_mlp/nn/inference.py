"""A trained MLP made ready to answer: raw inputs in, class probabilities out, as fast as NumPy allows.

Training needs the layers to cache what backward uses; answering needs none of that. ``Inference``
keeps only each layer's weights and bias, with two changes that leave the maths as it was:

- The input affine map, x' = (x - offset) / scale - mean (the data's normalisation, then a centred
  MLP's input mean), is folded into the first layer: x' @ W + b = x @ (W / scale) + (b - s @ W) with
  s = offset / scale + mean. A raw pixel goes straight into the first matrix product.
- Hidden activations are kept feature-major, (features, batch): each hidden layer is h' = Wt @ h with
  Wt = W.T stored contiguously. For a batch of one this is a matrix-vector product, and for small
  batches OpenBLAS runs this shape 10-25% faster than x @ W (docs/speed.md). The last layer turns the
  result back to (batch, classes).

Dropout is the identity at inference, so an MLP trained with it answers the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .conv import BatchNorm, Conv2d, MaxPool2d
from .layers import Layer, Linear, relu_

if TYPE_CHECKING:  # model.py answers through this module: the import would go round in a circle
    from .model import MLP


class Affine(NamedTuple):
    """One layer of the folded network: out = x @ weight + bias, weight (in, out), bias (out,)."""

    weight: np.ndarray
    bias: np.ndarray


def folded_layers(model: MLP, offset: float = 0.0, scale: float = 1.0) -> list[Affine]:
    """The model's linear layers, the first with ``(x - offset) / scale`` and the model's input mean
    (if centred) folded in, so that the first layer takes raw inputs. Computed in float64, stored in
    the model's dtype. The ReLU between consecutive layers is implied."""
    if not np.isfinite(offset) or not np.isfinite(scale) or scale == 0:
        raise ValueError(
            f"normalisation needs a finite offset and a non-zero finite scale, got {offset}, {scale}"
        )
    linears = model.linears
    dtype = linears[0].weight.value.dtype
    first = linears[0].weight.value.astype(np.float64)
    shift = np.full(first.shape[0], offset / scale)
    if model.centre is not None:
        shift += model.centre.mean.astype(np.float64)
    layers = [Affine((first / scale).astype(dtype), (linears[0].bias.value - shift @ first).astype(dtype))]
    layers += [Affine(layer.weight.value.copy(), layer.bias.value.copy()) for layer in linears[1:]]
    return layers


def fold_batch_norms(layers: Sequence[Layer]) -> tuple[dict[int, Affine], set[int]]:
    """Each weighted layer's weight and bias, in float64, with the batch norm after it folded in; and
    the indices of the batch norms so folded (at inference they are gone).

    At inference batch norm is y = x·s + t per channel, s = gamma / sqrt(var + eps), t = beta - mean·s,
    so after a convolution or fully connected layer it folds into it: w' = w·s, b' = b·s + t. Max pooling
    between the two does not stop this while every s is positive, since a positive scale commutes with
    a maximum (the cnn preset's order, conv-pool-BN-ReLU); otherwise the batch norm stays. A weight
    keeps its layer's shape: (in, out) for a fully connected layer, (k, k, C, F) for a convolution.
    ``NetworkInference`` and the ONNX export both fold this way, so both answer alike."""
    params: dict[int, Affine] = {}
    folded: set[int] = set()
    last, pooled = None, False
    for i, layer in enumerate(layers):
        if isinstance(layer, (Conv2d, Linear)):
            weight = layer.weight.value.astype(np.float64)
            bias = layer.bias.value if layer.bias is not None else np.zeros(weight.shape[-1])
            params[i] = Affine(weight, bias.astype(np.float64))
            last, pooled = i, False
        elif isinstance(layer, MaxPool2d):
            pooled = True
        elif isinstance(layer, BatchNorm) and last is not None:
            scale = layer.gamma.value / np.sqrt(layer.running_var.astype(np.float64) + layer.eps)
            shift = layer.beta.value - layer.running_mean * scale
            if not pooled or (scale > 0).all():
                weight, bias = params[last]
                params[last] = Affine(weight * scale, bias * scale + shift)
                folded.add(i)
            last = None
        else:
            last = None
    return params, folded


class Inference:
    """Probabilities and labels for raw inputs (N, features), e.g. pixel values 0-255.

    Rows are answered in chunks of ``chunk`` to bound memory. Safe to call from several threads at
    once: nothing is cached between calls.
    """

    def __init__(self, model: MLP, offset: float = 0.0, scale: float = 1.0, chunk: int = 4096) -> None:
        layers = folded_layers(model, offset, scale)
        self.dtype = layers[0].weight.dtype
        self.n_inputs, self.n_classes = model.sizes[0], model.sizes[-1]
        self.chunk = chunk
        # Hidden layers feature-major: Wt (out, in) contiguous, bias as a column (out, 1).
        self._hidden = [(np.ascontiguousarray(a.weight.T), a.bias[:, None].copy()) for a in layers[:-1]]
        self._last = layers[-1]
        # For a batch of one: vectors, and zeros to rectify against (``relu_`` says why not 0).
        self._hidden_1d = [(w, b[:, 0], np.zeros(len(w), self.dtype)) for w, b in self._hidden]

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
        h = x.astype(self.dtype, copy=False).T  # (features, batch): a view, no copy
        for weight_t, bias in self._hidden:
            h = np.matmul(weight_t, h)
            h += bias
            relu_(h)
        out = np.matmul(h.T, self._last.weight)  # (batch, classes)
        out += self._last.bias
        return out

    def _one(self, x: np.ndarray) -> np.ndarray:
        """A batch of one as vectors: matrix-vector products and whole-array reductions, the fewest
        NumPy calls (each costs about a microsecond, as much as a small layer's product)."""
        h = x.astype(self.dtype, copy=False)
        for weight_t, bias, zeros in self._hidden_1d:
            h = weight_t @ h
            h += bias
            np.maximum(h, zeros, out=h)
        z = h @ self._last.weight
        z += self._last.bias
        # A handful of classes: Python's max and sum over a list beat a NumPy reduction's set-up.
        z -= max(z.tolist())
        np.exp(z, out=z)
        z /= sum(z.tolist())
        return z[None]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the logits, computed in place: each row sums to 1."""
        if isinstance(x, np.ndarray) and x.shape == (1, self.n_inputs):
            return self._one(x[0])
        z = self.logits(x)
        # The ufuncs' own reductions: the array methods add a Python layer, which shows at batch 1.
        np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True), out=z)
        np.exp(z, out=z)
        np.divide(z, np.add.reduce(z, axis=1, keepdims=True), out=z)
        return z

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)
