"""A network: layers built from a list of layer records, applied in order. The architecture is data.

A record is ``{"kind": ..., settings}``, for example ``{"kind": "conv", "out": 32, "kernel": 3}``.
``Network(records, ...)`` builds one layer per record through ``KINDS``, the table from a kind's name
to its class; ``network.records`` gives each layer's record back (``Layer.to_record``), sizes filled
in, which is what a checkpoint stores and what rebuilds the network. Adding a layer kind is one class
and one entry of the table (and one entry of the ONNX exporter's, export.py; a test checks both).

Every model is a Network. ``mlp_records`` writes the records of a fully connected network (``MLP``
builds one), ``cnn_records`` those of a convolutional one: for each width of ``conv``, a 3×3
convolution without bias, 2×2 max pooling, batch norm and ReLU; then, for each width of ``hidden``, a
fully connected layer, batch norm, ReLU and dropout; then the classes. Pooling comes straight after
the convolution: ReLU commutes with max pooling, and so does batch norm's per-channel scaling when
gamma is positive, so the order changes little but the statistics, now over the pooled map; and
batch norm and ReLU then run on a quarter of the values. (Measured: conv-BN-ReLU-pool spent 22 ms
of an 88 ms step in the first batch norm and ReLU alone.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .activations import Dropout, ReLU
from .answering import Inference
from .conv import Conv2d
from .dense import Linear
from .layer import INITS, Builder, Layer, Parameter, Record
from .norm import BatchNorm, Centre
from .pooling import GlobalAvgPool, MaxPool2d
from .reshape import Flatten, Image
from .residual import Residual
from .views import MeanOfViews, Views

KINDS: dict[str, type[Layer]] = {
    kind.kind: kind
    for kind in (
        Centre,
        Image,
        Views,
        Conv2d,
        MaxPool2d,
        BatchNorm,
        ReLU,
        Dropout,
        Residual,
        GlobalAvgPool,
        Flatten,
        MeanOfViews,
        Linear,
    )
}
MAX_RECORDS = 256  # the most layer records a network may have
VIEWS = {1: (False, 0), 2: (True, 0), 5: (False, 1), 10: (True, 1)}  # cnn_records' views: (flip, shift)


def mlp_records(
    sizes: Sequence[int],
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    centred: bool = False,
    init: str = "he",
) -> list[Record]:
    """The layer records of a fully connected network of these sizes, [inputs, hidden..., classes]:
    [centre], [input dropout], then a fully connected layer per size after the first, each but the
    last followed by ReLU and [dropout]."""
    records: list[Record] = [{"kind": "centre"}] if centred else []
    if input_dropout > 0.0:
        records.append({"kind": "dropout", "rate": float(input_dropout)})
    for i, out in enumerate(sizes[1:]):
        records.append({"kind": "linear", "out": int(out), "init": init})
        if i < len(sizes) - 2:
            records.append({"kind": "relu"})
            if dropout > 0.0:
                records.append({"kind": "dropout", "rate": float(dropout)})
    return records


def MLP(
    sizes: Sequence[int],
    rng: np.random.Generator | None = None,
    dropout: float = 0.0,
    dtype: type = np.float32,
    init: str = "he",
    input_dropout: float = 0.0,
    input_mean: np.ndarray | None = None,
) -> Network:
    """A fully connected network, the ``Network`` of ``mlp_records``: ``sizes`` = [inputs,
    hidden..., classes], e.g. [784, 128, 128, 10]. ``init``: one of INITS, "he" by default
    (see Linear); ``dropout`` follows each hidden layer, ``input_dropout`` drops input pixels;
    ``input_mean`` (a vector of ``sizes[0]``), if given, is subtracted from every input first."""
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must be at least [inputs, classes], all positive; got {list(sizes)}")
    if input_mean is not None and np.shape(input_mean) != (int(sizes[0]),):
        raise ValueError(f"input mean must have shape ({int(sizes[0])},), got {np.shape(input_mean)}")
    records = mlp_records(sizes, dropout, input_dropout, input_mean is not None, init)
    return Network(records, int(sizes[0]), rng, dtype, input_mean)


def cnn_records(
    image: tuple[int, int, int],
    conv: Sequence[int],
    hidden: Sequence[int],
    n_classes: int,
    dropout: float = 0.0,
    kernel: int = 3,
    centred: bool = False,
    blocks: Sequence[int] = (),
    global_pool: bool = False,
    views: int = 1,
    init: str = "he",
) -> list[Record]:
    """The records of a convolutional network for (height, width, channels) images: after each
    convolution's pooling, ``blocks[i]`` residual blocks at its width (each followed by ReLU; none
    where ``blocks`` is empty), and the last map averaged (``global_pool``) or flattened. ``views``
    at inference (views.py): 1, the image alone; 2, and its mirror; 5, and its shifts by a pixel;
    10, the mirror's too. ``init`` draws every weight (layer.py's ``initial_weight``)."""
    if blocks and len(blocks) != len(conv):
        raise ValueError(
            f"one count of blocks per convolution: {len(conv)} convolutions, {len(blocks)} counts"
        )
    height, width, channels = image
    records: list[Record] = [{"kind": "centre"}] if centred else []
    records.append({"kind": "image", "height": height, "width": width, "channels": channels})
    if views not in VIEWS:
        raise ValueError(f"views must be one of {', '.join(map(str, VIEWS))}, got {views}")
    if views > 1:
        flip, shift = VIEWS[views]
        records.append({"kind": "views", "flip": flip, "shift": shift})
    # Each convolution pooled before batch norm and ReLU, which then cost a quarter (see docstring).
    for out, n_blocks in zip(conv, blocks or [0] * len(conv)):
        records += [
            {"kind": "conv", "out": int(out), "kernel": kernel, "bias": False, "init": init},
            {"kind": "maxpool"},
            {"kind": "batchnorm"},
            {"kind": "relu"},
        ]
        for _ in range(n_blocks):
            records += [{"kind": "residual", "out": int(out), "init": init}, {"kind": "relu"}]
    records.append({"kind": "avgpool"} if global_pool else {"kind": "flatten"})
    for out in hidden:
        records += [
            {"kind": "linear", "out": int(out), "bias": False, "init": init},
            {"kind": "batchnorm"},
            {"kind": "relu"},
        ]
        if dropout > 0:
            records.append({"kind": "dropout", "rate": float(dropout)})
    if views > 1:
        records.append({"kind": "mean_of_views"})
    records.append({"kind": "linear", "out": int(n_classes), "init": init})
    return records


class Network:
    """Layers built from ``records`` for rows of ``n_inputs`` features, applied in order; the last
    record's output is the logits. ``budget`` caps the parameters the records may ask for, checked
    before anything is allocated (for records read from a file)."""

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
        if not isinstance(records, (list, tuple)) or not 0 < len(records) <= MAX_RECORDS:
            raise ValueError(f"a network is a list of 1 to {MAX_RECORDS} layer records")
        builder = Builder(int(n_inputs), rng, dtype, budget)
        self.layers: list[Layer] = []
        for record in records:
            if not isinstance(record, dict) or record.get("kind") not in KINDS:
                kind = record.get("kind") if isinstance(record, dict) else record
                raise ValueError(f"unknown layer kind {kind!r}; the kinds are {', '.join(KINDS)}")
            self.layers.append(KINDS[record["kind"]].build(record, builder))
        if records[-1].get("kind") != "linear":
            raise ValueError("a network must end in a fully connected layer giving the logits")
        if builder.views != 1:
            raise ValueError("a 'views' record needs a 'mean_of_views' after it, before the logits")
        for layer, after in zip(self.layers, self.layers[1:]):
            if isinstance(layer, Conv2d) and isinstance(after, MaxPool2d):
                layer.quarters = True  # its output in the order pooling reads (conv.py's docstring)
        self.n_inputs, self.n_classes = int(n_inputs), builder.shape[0]
        self.dtype = np.dtype(dtype)
        self.centre = next((layer for layer in self.layers if isinstance(layer, Centre)), None)
        if input_mean is not None:
            if self.centre is None:
                raise ValueError("an input mean was given, but the network has no 'centre' record")
            self.centre.mean[...] = input_mean

    @property
    def records(self) -> list[Record]:
        """Each layer's record, which rebuild the network: what a checkpoint stores."""
        return [layer.to_record() for layer in self.layers]

    @property
    def chunk(self) -> int:
        """Rows at a time at inference: the fewest any layer answers well in (a convolution's
        columns are k·k times its input: 128 there, 8% faster than 500 at batch 4,000)."""
        return min(layer.answer_rows for layer in self.layers)

    def of_kind(self, kind: str) -> list[Layer]:
        """Its layers of one kind, in order: ``of_kind("linear")`` for the fully connected ones."""
        return [layer for layer in self.layers if layer.kind == kind]

    def draw_from(self, rng: np.random.Generator) -> None:
        """Draw dropout masks from ``rng`` from now on (a restored run's generator)."""
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = rng

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
        out = np.empty((x.shape[0], self.n_classes), dtype=self.dtype)
        for start in range(0, x.shape[0], size):
            chunk = np.asarray(x[start : start + size], dtype=self.dtype)
            out[start : start + size] = self.forward(chunk, training=False)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._fast_path().predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def answering(self, offset: float = 0.0, scale: float = 1.0) -> Inference:
        """The network made ready to answer inputs ``x`` as it sees ``(x - offset) / scale``
        (answering.py). It copies the weights as they are."""
        return Inference(self, offset, scale)

    _answering: Inference | None = None  # what _fast_path made, until the weights change

    def _fast_path(self) -> Inference:
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
        """One line: each layer's part, e.g. conv3x3(32)-pool-conv3x3(64)-pool-fc256-fc10; a fully
        connected network by its sizes, inputs first, e.g. 784-128-128-10."""
        parts = [part for layer in self.layers if (part := layer.describe()) is not None]
        if all(part.startswith("fc") for part in parts):
            return "-".join([str(self.n_inputs), *(part[2:] for part in parts)])
        return "-".join(parts)
