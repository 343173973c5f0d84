"""The multilayer perceptron: Linear and ReLU layers (optionally Centre and Dropout) ending in logits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .inference import Inference
from .layers import CENTRE_MEAN, INITS, Centre, Dropout, Layer, Linear, Parameter, ReLU
from .losses import softmax


def state_shapes(sizes: Sequence[int], centred: bool = False) -> dict[str, tuple[int, ...]]:
    """The name and shape of every array in the state_dict() of an MLP with these layer sizes
    (``centred``: one that subtracts an input mean), without building it."""
    shapes: dict[str, tuple[int, ...]] = {CENTRE_MEAN: (int(sizes[0]),)} if centred else {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        shapes[f"fc{i + 1}.weight"] = (int(fan_in), int(fan_out))
        shapes[f"fc{i + 1}.bias"] = (int(fan_out),)
    return shapes


class Sequential:
    """What every network here is: ``layers`` applied in order, ending in logits. Subclasses build the
    layers and set ``sizes`` (inputs first, classes last) and ``chunk`` (rows answered at a time)."""

    layers: list[Layer]
    sizes: list[int]
    chunk = 4096

    def parameters(self) -> list[Parameter]:
        """Every trainable array, in layer order: the one way anything reaches the weights."""
        return [p for layer in self.layers for p in layer.parameters()]

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Logits for a batch, caching what backward() needs (in training; inference caches nothing).

        In training the result lives in a buffer the next forward overwrites; copy it to keep it.
        """
        if training:
            self._answering = None  # the weights are about to change: answer from them afresh
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad: np.ndarray) -> None:
        """Back-propagate dLoss/dlogits, filling every Parameter.grad."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)  # type: ignore[assignment]
            if grad is None:  # the first weighted layer: nothing below it needs a gradient
                return

    def keep_rows(self, rows: np.ndarray) -> None:
        """After a training forward, keep only these rows of its batch: the next backward (given
        dLoss/dlogits for those rows) then fills every Parameter.grad from them alone, as if the
        batch had been just those rows, with the same dropout masks."""
        for layer in self.layers:
            layer.keep_rows(rows)

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Inference logits, through the fastest path the network has (``_fast_path``), else through
        its layers ``batch_size`` rows (default ``chunk``) at a time to bound memory."""
        fast = self._fast_path() if batch_size is None else None
        if fast is not None:
            return fast.logits(x)
        size = batch_size or self.chunk
        dtype = self.parameters()[0].value.dtype
        out = np.empty((x.shape[0], self.sizes[-1]), dtype=dtype)
        for start in range(0, x.shape[0], size):
            chunk = np.asarray(x[start : start + size], dtype=dtype)
            out[start : start + size] = self.forward(chunk, training=False)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        fast = self._fast_path()
        return softmax(self.logits(x)) if fast is None else fast.predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    _answering: Any = None  # what _fast_path made, until the weights change

    def _fast_path(self) -> Any:
        """What answers for the network, if something faster than its layers does: None here."""
        return None

    def _arrays(self) -> dict[str, np.ndarray]:
        """Every parameter, then every layer's state (an input mean, batch norm's running averages)."""
        arrays = {p.name: p.value for p in self.parameters()}
        for layer in self.layers:
            arrays.update(layer.state())
        return arrays

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: array.shape for name, array in self._arrays().items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat dict of named arrays (copies), e.g. {'fc1.weight': ..., 'fc1.bias': ...}: every
        parameter and every layer's state."""
        return {name: array.copy() for name, array in self._arrays().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters and layer states; names and shapes must match."""
        targets = self._arrays()
        if set(state) != set(targets):
            missing, extra = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
            raise ValueError(f"state does not fit this model: missing {missing}, unexpected {extra}")
        for name, target in targets.items():
            if state[name].shape != target.shape:
                raise ValueError(f"{name} has shape {state[name].shape}, the model expects {target.shape}")
            target[...] = state[name]
        self._answering = None


class MLP(Sequential):
    """A stack of layers. ``sizes`` = [inputs, hidden..., classes], e.g. [784, 128, 128, 10].

    ``init``: "he" (default), "small" or "glorot" (see Linear).
    ``dropout`` follows each hidden layer; ``input_dropout`` drops input pixels.
    ``input_mean`` (a vector of ``sizes[0]``), if given, is subtracted from every input first.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        rng: np.random.Generator | None = None,
        dropout: float = 0.0,
        dtype: type = np.float32,
        init: str = "he",
        input_dropout: float = 0.0,
        input_mean: np.ndarray | None = None,
    ) -> None:
        if init not in INITS:
            raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must be at least [inputs, classes], all positive; got {list(sizes)}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.sizes = [int(s) for s in sizes]
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.centre: Centre | None = None
        if input_mean is not None:
            if np.shape(input_mean) != (self.sizes[0],):
                raise ValueError(f"input mean must have shape ({self.sizes[0]},), got {np.shape(input_mean)}")
            self.centre = Centre(np.array(input_mean, dtype=dtype))
        self.layers: list[Layer] = [self.centre] if self.centre is not None else []
        if input_dropout > 0.0:
            self.layers.append(Dropout(input_dropout, rng))
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            self.layers.append(
                Linear(
                    fan_in,
                    fan_out,
                    rng,
                    name=f"fc{i + 1}",
                    dtype=dtype,
                    needs_input_grad=i > 0,
                    init=init,
                )
            )
            if i < len(self.sizes) - 2:
                self.layers.append(ReLU())
                if dropout > 0.0:
                    self.layers.append(Dropout(dropout, rng))

    def _fast_path(self) -> Inference:
        """``Inference``, the one fast way to answer (Checkpoint.inference() and serve use it too):
        hidden layers feature-major on contiguous transposed copies of the weights, the input mean
        folded into the first bias, batch-one answers as matrix-vector products. The copies are made at
        the first answer after a training forward or load_state_dict, which change the weights; write
        into the weights any other way and answer with ``forward(x, training=False)``."""
        answering = self._answering
        if answering is None:
            answering = self._answering = Inference(self)
        return answering

    @property
    def linears(self) -> list[Linear]:
        return [layer for layer in self.layers if isinstance(layer, Linear)]
