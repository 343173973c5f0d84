"""The multilayer perceptron: a Network of Linear and ReLU layers (optionally Centre and Dropout)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from .inference import Inference
from .layers import CENTRE_MEAN, INITS, Linear
from .network import Network, Record


def state_shapes(sizes: Sequence[int], centred: bool = False) -> dict[str, tuple[int, ...]]:
    """The name and shape of every array in the state_dict() of an MLP with these layer sizes
    (``centred``: one that subtracts an input mean), without building it."""
    shapes: dict[str, tuple[int, ...]] = {CENTRE_MEAN: (int(sizes[0]),)} if centred else {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        shapes[f"fc{i + 1}.weight"] = (int(fan_in), int(fan_out))
        shapes[f"fc{i + 1}.bias"] = (int(fan_out),)
    return shapes


def mlp_records(
    sizes: Sequence[int],
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    centred: bool = False,
    init: str = "he",
) -> list[Record]:
    """The layer records of an MLP of these sizes: [centre], [input dropout], then a fully connected
    layer per size after the first, each but the last followed by ReLU and [dropout]."""
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


class MLP(Network):
    """A fully connected network: the ``Network`` of ``mlp_records``. ``sizes`` = [inputs,
    hidden..., classes], e.g. [784, 128, 128, 10].

    ``init``: "he" (default), "small" or "glorot" (see Linear).
    ``dropout`` follows each hidden layer; ``input_dropout`` drops input pixels.
    ``input_mean`` (a vector of ``sizes[0]``), if given, is subtracted from every input first.

    What a Network is not: it answers through ``Inference``, 4,096 rows at a time, and a checkpoint
    records its sizes and settings rather than its records, as checkpoints have from the start.
    """

    chunk = 4096
    bounded = False  # as deep and wide as asked, as it always was: its records are its own

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
        if input_mean is not None and np.shape(input_mean) != (int(sizes[0]),):
            raise ValueError(f"input mean must have shape ({int(sizes[0])},), got {np.shape(input_mean)}")
        records = mlp_records(sizes, dropout, input_dropout, input_mean is not None, init)
        super().__init__(records, int(sizes[0]), rng, dtype, input_mean)
        self.sizes = [int(s) for s in sizes]
        self.dropout = dropout
        self.input_dropout = input_dropout

    def answering(self, offset: float = 0.0, scale: float = 1.0) -> Inference:
        """``Inference``, the one fast way an MLP answers (Checkpoint.inference(), serve and the
        model's own predict_proba): hidden layers feature-major on contiguous transposed copies of
        the weights, the normalisation and input mean folded into the first layer, batch-one answers
        as matrix-vector products."""
        return Inference(self, offset, scale)

    def describe(self) -> str:
        """Its sizes, e.g. 784-128-128-10."""
        return "-".join(map(str, self.sizes))

    @property
    def linears(self) -> list[Linear]:
        return [layer for layer in self.layers if isinstance(layer, Linear)]
