"""A network as a sequence of layers, built from a list of layer records: the architecture is data.

A record is ``{"kind": ..., settings}``, for example ``{"kind": "conv", "out": 32, "kernel": 3}``.
``Network(records, ...)`` builds one layer per record through ``BUILDERS``, a table keyed by kind;
``network.records`` gives the records back, sizes filled in, which is what a checkpoint stores and
what rebuilds the network. Adding a layer kind is one class and one row of the table. Every model
here is a Network: the MLP (model.py) is the one that ``mlp_records`` describes.

``cnn_records`` writes the records of the convolutional networks the config describes: for each
width of ``conv``, a 3×3 convolution without bias, 2×2 max pooling, batch norm and ReLU; then, for
each width of ``hidden``, a fully connected layer, batch norm, ReLU and dropout; then the classes.
Pooling comes straight after the convolution: ReLU commutes with max pooling, and so does batch
norm's per-channel scaling when gamma is positive, so the order changes little but the statistics,
now over the pooled map; and batch norm and ReLU then run on a quarter of the values. (Measured:
conv-BN-ReLU-pool spent 22 ms of an 88 ms step in the first batch norm and ReLU alone.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from .conv import BatchNorm, Conv2d, Flatten, Image, MaxPool2d
from .inference import Inference, fold_batch_norms
from .layers import INITS, Centre, Dropout, Layer, Linear, Parameter, ReLU, relu_
from .losses import softmax

Record = dict[str, Any]
MAX_RECORDS = 64
MAX_SIZE = 1 << 16  # the largest width, height, channel count or kernel a record may ask for


def cnn_records(
    image: tuple[int, int, int],
    conv: Sequence[int],
    hidden: Sequence[int],
    n_classes: int,
    dropout: float = 0.0,
    kernel: int = 3,
    centred: bool = False,
) -> list[Record]:
    """The records of a convolutional network for (height, width, channels) images."""
    height, width, channels = image
    records: list[Record] = [{"kind": "centre"}] if centred else []
    records.append({"kind": "image", "height": height, "width": width, "channels": channels})
    for out in conv:  # pooled before batch norm and ReLU, which then cost a quarter (see docstring)
        records += [
            {"kind": "conv", "out": int(out), "kernel": kernel, "bias": False},
            {"kind": "maxpool"},
            {"kind": "batchnorm"},
            {"kind": "relu"},
        ]
    records.append({"kind": "flatten"})
    for out in hidden:
        records += [
            {"kind": "linear", "out": int(out), "bias": False},
            {"kind": "batchnorm"},
            {"kind": "relu"},
        ]
        if dropout > 0:
            records.append({"kind": "dropout", "rate": float(dropout)})
    records.append({"kind": "linear", "out": int(n_classes)})
    return records


class _Builder:
    """Builds the layers in order, tracking the shape that flows between them (without the batch)."""

    def __init__(
        self, n_inputs: int, rng: np.random.Generator, dtype: type, budget: int | None, bounded: bool
    ) -> None:
        self.shape: tuple[int, ...] = (n_inputs,)
        self.rng, self.dtype = rng, dtype
        self.counts: dict[str, int] = {}
        self.first_weighted = True
        self.budget = budget  # most parameters the records may ask for (None: no limit)
        self.bounded = bounded  # no size above MAX_SIZE

    def spend(self, n: int) -> None:
        """Count n parameters against the budget before they are allocated."""
        if self.budget is not None:
            self.budget -= n
            if self.budget < 0:
                raise ValueError("the layers ask for more parameters than the limit allows")

    def name(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]}"


def _image(b: _Builder, r: Record) -> Layer:
    shape = (_positive(b, r, "height"), _positive(b, r, "width"), _positive(b, r, "channels"))
    if int(np.prod(shape)) != int(np.prod(b.shape)):
        raise ValueError(f"an image of {shape} does not hold {int(np.prod(b.shape))} inputs")
    b.shape = shape
    return Image(*shape)


def _centre(b: _Builder, r: Record) -> Layer:
    b.spend(int(np.prod(b.shape)))
    return Centre(np.zeros(int(np.prod(b.shape)), dtype=b.dtype))


def _conv(b: _Builder, r: Record) -> Layer:
    if len(b.shape) != 3:
        raise ValueError("a convolution needs images: put an 'image' record first")
    out, kernel, bias = _positive(b, r, "out"), _positive(b, r, "kernel"), r.get("bias", True)
    if not isinstance(bias, bool):
        raise ValueError(f"a convolution's bias must be true or false, got {bias!r}")
    b.spend(kernel * kernel * b.shape[2] * out + out)
    layer = Conv2d(b.shape[2], out, kernel, b.rng, b.name("conv"), b.dtype, bias, not b.first_weighted)
    b.first_weighted = False
    b.shape = (*b.shape[:2], out)
    return layer


def _batchnorm(b: _Builder, r: Record) -> Layer:
    b.spend(4 * b.shape[-1])
    return BatchNorm(b.shape[-1], b.name("bn"), b.dtype)


def _maxpool(b: _Builder, r: Record) -> Layer:
    if len(b.shape) != 3 or b.shape[0] % 2 or b.shape[1] % 2:
        raise ValueError(f"2x2 pooling needs images of even height and width, got {b.shape}")
    b.shape = (b.shape[0] // 2, b.shape[1] // 2, b.shape[2])
    return MaxPool2d()


def _flatten(b: _Builder, r: Record) -> Layer:
    b.shape = (int(np.prod(b.shape)),)
    return Flatten()


def _linear(b: _Builder, r: Record) -> Layer:
    if len(b.shape) != 1:
        raise ValueError("a fully connected layer needs rows: put a 'flatten' record first")
    out, bias, init = _positive(b, r, "out"), r.get("bias", True), r.get("init", "he")
    if not isinstance(bias, bool):
        raise ValueError(f"a fully connected layer's bias must be true or false, got {bias!r}")
    if init not in INITS:
        raise ValueError(f"a fully connected layer's init must be one of {', '.join(INITS)}, got {init!r}")
    b.spend(b.shape[0] * out + out)
    layer = Linear(
        b.shape[0],
        out,
        b.rng,
        b.name("fc"),
        b.dtype,
        needs_input_grad=not b.first_weighted,
        init=init,
        bias=bias,
    )
    b.first_weighted = False
    b.shape = (out,)
    return layer


def _dropout(b: _Builder, r: Record) -> Layer:
    rate = r.get("rate")
    if type(rate) not in (int, float) or not 0 <= rate < 1:
        raise ValueError(f"a dropout rate must be a number in [0, 1), got {rate!r}")
    return Dropout(float(rate), b.rng)


def _positive(b: _Builder, record: Record, key: str) -> int:
    value, what = record.get(key), f"a {record.get('kind')} layer's {key!r}"
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if b.bounded and value > MAX_SIZE:
        raise ValueError(f"{what} must be at most {MAX_SIZE:,}, got {value:,}")
    return value


BUILDERS: dict[str, Callable[[_Builder, Record], Layer]] = {
    "image": _image,
    "centre": _centre,
    "conv": _conv,
    "batchnorm": _batchnorm,
    "relu": lambda b, r: ReLU(),
    "maxpool": _maxpool,
    "flatten": _flatten,
    "linear": _linear,
    "dropout": _dropout,
}


class Network:
    """Layers built from ``records`` for rows of ``n_inputs`` features, applied in order; the last
    record's output is the logits. Every network here is one, the MLP (model.py) included.

    It answers ``chunk`` rows at a time at inference, 128 since a convolution's columns are k·k times
    its input. ``budget`` caps the parameters the records may ask for, checked before anything is
    allocated (for records read from a file)."""

    chunk = 128  # rows at a time at inference: 8% faster than 500 at batch 4,000 (docs/speed.md)
    # Records from outside (a file, a user) get limits: at most MAX_RECORDS of them, no size above
    # MAX_SIZE. A subclass that writes its own records may lift them.
    bounded = True

    def __init__(
        self,
        records: Sequence[Record],
        n_inputs: int,
        rng: np.random.Generator | None = None,
        dtype: type = np.float32,
        input_mean: np.ndarray | None = None,
        budget: int | None = None,
    ) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        limit = MAX_RECORDS if self.bounded else len(records)
        if not isinstance(records, (list, tuple)) or not 0 < len(records) <= limit:
            raise ValueError(f"a network is a list of 1 to {MAX_RECORDS} layer records")
        builder = _Builder(int(n_inputs), rng, dtype, budget, self.bounded)
        self.layers: list[Layer] = []
        for record in records:
            if not isinstance(record, dict) or record.get("kind") not in BUILDERS:
                kind = record.get("kind") if isinstance(record, dict) else record
                raise ValueError(f"unknown layer kind {kind!r}; the kinds are {', '.join(BUILDERS)}")
            self.layers.append(BUILDERS[record["kind"]](builder, record))
        for layer, after in zip(self.layers, self.layers[1:]):
            if isinstance(layer, Conv2d) and isinstance(after, MaxPool2d):
                layer.quarters = True  # its output in the order pooling reads (conv.py's docstring)
        if records[-1].get("kind") != "linear":
            raise ValueError("a network must end in a fully connected layer giving the logits")
        self.records = [dict(r) for r in records]
        self.n_inputs, self.n_classes = int(n_inputs), builder.shape[0]
        self.sizes = [self.n_inputs, self.n_classes]  # the inputs and classes, as MLP.sizes begins and ends
        self.dtype = np.dtype(dtype)
        self.centre = next((layer for layer in self.layers if isinstance(layer, Centre)), None)
        if input_mean is not None:
            if self.centre is None:
                raise ValueError("an input mean was given, but the network has no 'centre' record")
            self.centre.mean[...] = input_mean

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
        """Inference logits, through the network's fast path (``_fast_path``), or, given a
        ``batch_size``, through its layers that many rows (0: ``chunk``) at a time."""
        if batch_size is None:
            return self._fast_path().logits(x)
        size = batch_size or self.chunk
        out = np.empty((x.shape[0], self.sizes[-1]), dtype=self.dtype)
        for start in range(0, x.shape[0], size):
            chunk = np.asarray(x[start : start + size], dtype=self.dtype)
            out[start : start + size] = self.forward(chunk, training=False)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._fast_path().predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def answering(self, offset: float = 0.0, scale: float = 1.0) -> NetworkInference | Inference:
        """The network made ready to answer inputs ``x`` as it sees ``(x - offset) / scale``:
        ``NetworkInference`` (an MLP gives its own ``Inference``). It copies the weights as they are."""
        return NetworkInference(self, offset, scale)

    _answering: NetworkInference | Inference | None = None  # what _fast_path made, until the weights change

    def _fast_path(self) -> NetworkInference | Inference:
        """``answering()`` on normalised inputs, made at the first answer after a training forward or
        load_state_dict (which change the weights) and kept until the next; write into the weights any
        other way and answer with ``forward(x, training=False)``."""
        answering = self._answering
        if answering is None:
            answering = self._answering = self.answering()
        return answering

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

    def describe(self) -> str:
        """One line, e.g. conv32-pool-conv64-pool-fc256-fc10."""
        parts = []
        for layer in self.layers:
            if isinstance(layer, Conv2d):
                parts.append(f"conv{layer.kernel}x{layer.kernel}({layer.out_channels})")
            elif isinstance(layer, MaxPool2d):
                parts.append("pool")
            elif isinstance(layer, Linear):
                parts.append(f"fc{layer.out_features}")
        return "-".join(parts)


class NetworkInference:
    """A network made ready to answer raw inputs (N, features), e.g. pixels 0-255: normalised as in
    training, ``(x - offset) / scale``, then the layers as inference computes them, with what
    answering does not need taken out:

    - batch norm folded into the convolution or fully connected layer before it
      (``fold_batch_norms``, as the ONNX export folds it): no pass of its own;
    - a bias that max pooling follows is added after the pooling, on a quarter of the values
      (a per-channel constant commutes with a maximum);
    - ReLU in place, dropout gone, and every array a fresh one: nothing is cached, so it is safe from
      several threads at once, and never writes into the layers' training buffers.

    Rows are answered ``chunk`` at a time to bound memory: a convolution's columns are k·k times its
    input. The model's own ``predict_proba`` answers through this (``Network._fast_path``, which
    makes a new one whenever the weights change). It folds the weights as they are when it is made:
    after training the network further, make a new one."""

    def __init__(
        self, network: Network, offset: float = 0.0, scale: float = 1.0, chunk: int = Network.chunk
    ) -> None:
        if not np.isfinite(offset) or not np.isfinite(scale) or scale == 0:
            raise ValueError(
                f"normalisation needs a finite offset and a non-zero finite scale, got {offset}, {scale}"
            )
        self.network, self.offset, self.scale, self.chunk = network, offset, scale, chunk
        self.n_inputs, self.n_classes, self.dtype = network.n_inputs, network.n_classes, network.dtype
        self._steps = _answering_steps(network.layers, self.dtype)

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
        h = np.subtract(x, self.dtype.type(self.offset), dtype=self.dtype)  # a fresh array
        h *= self.dtype.type(1.0 / self.scale)
        for step in self._steps:
            h = step(h)
        return h

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


Step = Callable[[np.ndarray], np.ndarray]


def _answering_steps(layers: Sequence[Layer], dtype: np.dtype) -> list[Step]:
    """The functions that answer for ``layers`` in turn, each taking and giving a batch; each writes
    into a fresh array or into the one it is given, which the step before it made."""
    params, folded = fold_batch_norms(layers)
    steps: list[Step] = []
    pending: np.ndarray | None = None  # a bias to add after the pooling that follows
    for i, layer in enumerate(layers):
        if i in folded or isinstance(layer, Dropout):
            continue
        if isinstance(layer, (Conv2d, Linear)):
            weight, bias = (a.astype(dtype) for a in params[i])
            if isinstance(layer, Conv2d):
                steps.append(partial(layer.convolve, matrix=weight.reshape(-1, weight.shape[-1])))
            else:
                steps.append(partial(_times, weight))
            if isinstance(layer, Conv2d) and layer.quarters:
                pending = bias
            elif bias.any():
                steps.append(partial(_add, bias))
        elif isinstance(layer, MaxPool2d):
            steps.append(partial(layer.forward, training=False))
            if pending is not None and pending.any():
                steps.append(partial(_add, pending))
            pending = None
        elif isinstance(layer, ReLU):
            steps.append(relu_)
        else:  # image and flatten (views), centre, a batch norm not folded: as they compute it
            steps.append(partial(layer.forward, training=False))
        if pending is not None and not isinstance(layer, Conv2d):
            raise AssertionError("a convolution in quarters must be followed by pooling")
    return steps


def _times(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.matmul(x, weight)


def _add(bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    x += bias
    return x
