"""What layers fold and answer through (``Layer.fold``, ``Layer.answer``): the float64 parameters
with batch norms and the input map folded in, and the plan of steps being compiled. answering.py
says what each does and why; this module imports no layer, so every layer may import it."""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import NamedTuple

import numpy as np

Step = Callable[[np.ndarray], np.ndarray]
_turn: Step = attrgetter("T")  # h.T, a view: a tenth of np.transpose's cost, which goes through dispatch


class Affine(NamedTuple):
    """A weighted layer's parameters, folded: weight (in, out) or (k, k, C, F), bias (out,), float64."""

    weight: np.ndarray
    bias: np.ndarray


class Folding:
    """One pass over the layers, each playing its part (``Layer.fold``): the weighted layers' float64
    parameters, the batch norms folded into them, and the input map folded into the first."""

    def __init__(self, offset: float, scale: float) -> None:
        if not np.isfinite(offset) or not np.isfinite(scale) or scale == 0:
            raise ValueError(
                f"normalisation needs a finite offset and a non-zero finite scale, got {offset}, {scale}"
            )
        self.offset, self.scale = offset, scale
        self.params: dict[int, Affine] = {}
        self.folded: set[int] = set()  # layers folded away: batch norms, a centring at the input
        # A layer that holds paths of layers (a residual block): each path folded on its own.
        self.inner: dict[int, tuple[Folding, ...]] = {}
        self.input_into: int | None = None  # the layer the input map went into, if one did
        self.mean: np.ndarray | None = None  # a centring mean that the input map carries
        self._centre: int | None = None  # the layer whose mean it is
        self._input_open = True  # no layer has yet needed the input as it is
        self._last: int | None = None  # the weighted layer a batch norm now may fold into
        self._pooled = False

    def stop(self) -> None:
        """A layer that needs its input as it is: nothing folds across it."""
        self._input_open, self._last = False, None

    def centre(self, i: int, mean: np.ndarray) -> None:
        """Layer i subtracts ``mean``: the input map carries it while no layer has needed the input."""
        if not self._input_open:
            self.stop()
            return
        self.mean, self._centre = mean, i

    def weighted(self, i: int, weight: np.ndarray, bias: np.ndarray | None, takes_input: bool) -> None:
        """Layer i computes x @ weight + bias (``takes_input``: the input map may fold into it)."""
        bias = np.zeros(weight.shape[-1]) if bias is None else bias
        self.params[i] = Affine(weight.astype(np.float64), bias.astype(np.float64))
        if self._input_open and takes_input:
            self.input_into = i
        self._input_open, self._last, self._pooled = False, i, False

    def pool(self) -> None:
        """A maximum: a positive scale still commutes with it."""
        self._input_open, self._pooled = False, True

    def scale_shift(self, i: int, scale: np.ndarray, shift: np.ndarray) -> None:
        """Layer i computes x·scale + shift per channel: fold it into the weighted layer before, if
        nothing in between stops that."""
        last, self._input_open, self._last = self._last, False, None
        if last is not None and (not self._pooled or (scale > 0).all()):
            weight, bias = self.params[last]
            self.params[last] = Affine(weight * scale, bias * scale + shift)
            self.folded.add(i)

    def finish(self) -> Folding:
        """The input map into its layer: W / scale, b - s @ W with s = offset / scale + mean."""
        if self.input_into is not None:
            weight, bias = self.params[self.input_into]
            shift = np.full(weight.shape[0], self.offset / self.scale)
            if self.mean is not None:
                shift += self.mean.astype(np.float64)
                self.folded.add(self._centre)
            self.params[self.input_into] = Affine(weight / self.scale, bias - shift @ weight)
        return self


class Plan:
    """The steps so far, and how the activation between them is laid out. Layers add their steps
    through it (``Layer.answer``)."""

    def __init__(self, folding: Folding, dtype: np.dtype, n_layers: int) -> None:
        self.folding, self.dtype, self.n_layers = folding, dtype, n_layers
        self.steps: list[Step] = []
        # The same answer for one row as 1-D vectors, while every step has such a form.
        self.vector: list[Step] | None = [] if folding.input_into is not None else None
        self.feature_major = False  # activations (features, batch), not (batch, features)
        self.width = 0  # features of the activation after the last fully connected layer
        self.pending: np.ndarray | None = None  # a bias to add after the pooling that follows

    def affine(self, i: int) -> Affine:
        """Layer i's folded weight and bias, in the network's dtype."""
        weight, bias = self.folding.params[i]
        return Affine(weight.astype(self.dtype), bias.astype(self.dtype))

    def add(self, step: Step, vector: Step | None = None) -> None:
        if self.pending is not None:
            raise AssertionError("a convolution in quarters must be followed by pooling")
        self.steps.append(step)
        if self.vector is not None:
            self.vector = None if vector is None else [*self.vector, vector]

    def batch_major(self) -> None:
        """The activation as (batch, features), for a step that needs it so."""
        if self.feature_major:
            self.add(_turn)
            self.feature_major = False

    def dense(self, i: int) -> None:
        """Layer i, fully connected. Feature-major where the activations already are, or at the
        network's input (the input map folded into it): a run of such layers then answers a batch of
        one as matrix-vector products. Batch-major where it gives the logits, or after layers that
        answer batch-major (a CNN's tail, where turning the activations gained nothing measurable:
        docs/speed.md)."""
        weight, bias = self.affine(i)
        self.width, has_bias = weight.shape[1], bool(bias.any())
        at_input = not self.steps and self.folding.input_into == i
        if i == self.n_layers - 1 or not (self.feature_major or at_input):
            flip, self.feature_major = self.feature_major, False
            if has_bias:
                self.add(
                    lambda h: add_bias(bias, np.matmul(h.T if flip else h, weight)),
                    lambda h: add_bias(bias, h @ weight),
                )
            else:
                self.add(lambda h: np.matmul(h.T if flip else h, weight), lambda h: h @ weight)
            return
        weight_t, column = np.ascontiguousarray(weight.T), bias[:, None].copy()
        if not self.feature_major:
            self.add(_turn, lambda h: h)
            self.feature_major = True
        if has_bias:
            self.add(
                lambda h: add_bias(column, np.matmul(weight_t, h)), lambda h: add_bias(bias, weight_t @ h)
            )
        else:
            self.add(lambda h: np.matmul(weight_t, h), lambda h: weight_t @ h)


def add_bias(bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x += bias, in place: x is an array the step before made."""
    x += bias
    return x
