"""What every layer is: a record it is built from and writes back, a forward that caches what its
backward needs, and the hooks that fold and answer it at inference.

Shapes: a batch is an array whose first axis is the batch, (N, features) for rows or (N, H, W, C)
for images. ``backward`` takes dLoss/dOutput and returns dLoss/dInput, writing parameter gradients
into ``Parameter.grad``. Between the two, ``keep_rows(rows)`` narrows what forward cached to some rows
of the batch, so that backward costs only those rows: training can score a large batch and learn
from its hardest examples.

In training, each layer writes its outputs into arrays it keeps from one step to the next, so a
step allocates (almost) nothing: a fresh half-megabyte array costs page faults, which make a matmul
into it about 15% slower. An array a training forward or backward returns is therefore valid only
until the layer's next call; inference (``training=False``) returns fresh arrays.

A layer kind is one subclass, which owns all of this (Keras's ``get_config``/``from_config``):

- ``kind``, the name its records carry, and ``build(record, builder)``, which checks a record
  against the shape flowing in, counts its parameters against the budget, and makes the layer;
- ``to_record()``, the record that rebuilds it;
- ``forward``, ``backward`` and ``keep_rows``;
- ``describe()``, its part of the network's one-line name;
- ``fold(i, folding)``, how batch norm folds into or past it, and ``answer(i, plan)``, the steps it
  becomes at inference (answering.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .plan import Folding, Plan

Record = dict[str, Any]
MAX_WIDTH = 16_384  # the widest layer, most channels, biggest kernel or image side a record may ask for
INITS = ("he", "small", "glorot", "uniform")


def initial_weight(
    init: str, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator
) -> np.ndarray:
    """A weighted layer's starting weight, in float64, for ``fan_in`` inputs to each output (k·k·C
    for a convolution) and ``fan_out`` outputs from each input:

    - "he": N(0, 2 / fan_in), which keeps the variance of a ReLU network's signal layer after layer
      (He et al., 2015);
    - "small": N(0, 0.01^2), the initialisation the report's results imply;
    - "glorot": uniform in ±sqrt(6 / (fan_in + fan_out)), as scikit-learn's MLPClassifier draws;
    - "uniform": uniform in ±1 / sqrt(fan_in), what PyTorch's Linear and Conv2d draw unless told
      (``kaiming_uniform_`` with a = sqrt(5)): a variance of 1 / (3 fan_in), a sixth of He's.

    Where batch norm follows a layer, the scale of its weights does not change what the network
    computes, only how fast the layer learns: the gradient shrinks as the weights grow, and a step
    turns them by about lr / |w|^2. Smaller weights learn faster, until L2 and the steps settle their
    norm, which takes most of a 30-epoch run (docs/recipe.md).
    """
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
    if init in ("glorot", "uniform"):
        bound = np.sqrt(6.0 / (fan_in + fan_out)) if init == "glorot" else 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape)
    std = np.sqrt(2.0 / fan_in) if init == "he" else 0.01
    return rng.standard_normal(shape) * std


def init_of(record: Record) -> str:
    """``record["init"]``, one of INITS ("he" where it is absent)."""
    init = record.get("init", "he")
    if init not in INITS:
        raise ValueError(
            f"a {record.get('kind')} layer's init must be one of {', '.join(INITS)}, got {init!r}"
        )
    return init


class Parameter:
    """A trainable array and the gradient from the last backward pass (same shape and dtype)."""

    def __init__(self, name: str, value: np.ndarray, decay: bool) -> None:
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)
        self.decay = decay  # L2 applies to weights only, never to biases

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.value.shape}, dtype={self.value.dtype})"


class Builder:
    """Builds layers in order from records, tracking the shape that flows between them (without the
    batch), naming weighted layers (fc1, conv2, bn1, ...) and counting parameters against a budget."""

    def __init__(self, n_inputs: int, rng: np.random.Generator, dtype: type, budget: int | None) -> None:
        self.shape: tuple[int, ...] = (n_inputs,)
        self.rng, self.dtype = rng, dtype
        self.counts: dict[str, int] = {}
        self.first_weighted = True  # the next weighted layer's input is the data: no input gradient
        self.budget = budget  # most parameters the records may ask for (None: no limit)
        self.views = 1  # views of each image at inference, from a 'views' record to 'mean_of_views'

    def spend(self, n: int) -> None:
        """Count n parameters against the budget before they are allocated."""
        if self.budget is not None:
            self.budget -= n
            if self.budget < 0:
                raise ValueError("the layers ask for more parameters than the limit allows")

    def name(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]}"

    def weighted(self, prefix: str) -> dict[str, Any]:
        """The settings every weighted layer takes from where it stands: its name (fc1, conv2, ...),
        the dtype, and whether it needs its input's gradient (all but the first do)."""
        needs, self.first_weighted = not self.first_weighted, False
        return {"name": self.name(prefix), "dtype": self.dtype, "needs_input_grad": needs}

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def positive(record: Record, key: str) -> int:
    """``record[key]``, a positive integer no larger than MAX_WIDTH."""
    value, what = record.get(key), f"a {record.get('kind')} layer's {key!r}"
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if value > MAX_WIDTH:
        raise ValueError(f"{what} must be at most {MAX_WIDTH:,}, got {value:,}")
    return value


def flag(record: Record, key: str, default: bool) -> bool:
    """``record[key]``, true or false."""
    value = record.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"a {record.get('kind')} layer's {key!r} must be true or false, got {value!r}")
    return value


class Layer:
    """Base class: a layer with no parameters that passes gradients straight through, keeps its
    batch's shape, and answers at inference as its forward computes."""

    kind: ClassVar[str]
    answer_rows: ClassVar[int] = 4096  # rows at a time it answers well in (Network.chunk: the least)

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ records

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Layer:
        """The layer a record describes, for the shape ``builder.shape``, which it then advances."""
        return cls()

    def to_record(self) -> Record:
        return {"kind": self.kind}

    def describe(self) -> str | None:
        """Its part of the network's name (``Network.describe``), or None: it shows in none."""
        return None

    # ------------------------------------------------------------------ training

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only these rows of the batch the last forward cached (a layer that caches nothing
        has nothing to do)."""

    def parameters(self) -> list[Parameter]:
        return []

    def state(self) -> dict[str, np.ndarray]:
        """Arrays saved with the weights that gradients do not train (a mean, running averages)."""
        return {}

    # ------------------------------------------------------------------ inference

    def fold(self, i: int, folding: Folding) -> None:
        """Its part in folding batch norms (answering.py): by default a layer stops a fold."""
        folding.stop()

    def answer(self, i: int, plan: Plan) -> None:
        """The steps it becomes at inference: by default its forward, on a batch-major batch."""
        plan.batch_major()
        plan.add(lambda x: self.forward(x, training=False))

    # ------------------------------------------------------------------ helpers

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The layer's reusable array ``name``; reallocated only when the shape or dtype changes."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(shape, dtype)
        return buffer

    def _column_sums(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The sum of each column of (N, F) ``rows``, into ``out``: a product with a vector of N
        ones, BLAS's fastest reduction (128x128 float32: 2.4 µs against np.sum's 7.0)."""
        n = len(rows)
        ones = self._buffers.get("ones")
        if ones is None or ones.shape != (n,) or ones.dtype != rows.dtype:
            ones = self._buffers["ones"] = np.ones(n, rows.dtype)
        return np.matmul(ones, rows, out=out)

    def _rows(self, name: str, array: np.ndarray, rows: np.ndarray, axis: int = 0) -> np.ndarray:
        """``array[rows]`` along ``axis`` (the batch's), gathered into the layer's reusable array ``name``."""
        shape = (*array.shape[:axis], len(rows), *array.shape[axis + 1 :])
        # mode="clip": with the default "raise", np.take gathers into a temporary and copies that
        # into ``out`` (2.7x the time for a convolution's columns). The rows are the batch's own.
        return np.take(array, rows, axis=axis, out=self._buffer(name, shape, array.dtype), mode="clip")


class Weighted(Layer):
    """A layer with a weight, which L2 regularises, and an optional bias, which it does not: Linear
    and Conv2d. No bias where batch norm follows, whose shift makes one redundant (its gradient is 0).
    ``needs_input_grad`` is False for the first weighted layer: its input is the data, whose gradient
    is never used, so its backward skips that product."""

    takes_input_map: ClassVar[bool] = False  # whether the input's normalisation may fold into it

    def __init__(
        self, name: str, weight: np.ndarray, bias: np.ndarray | None, needs_input_grad: bool
    ) -> None:
        super().__init__()
        self.name = name
        self.weight = Parameter(f"{name}.weight", weight, decay=True)
        self.bias = None if bias is None else Parameter(f"{name}.bias", bias, decay=False)
        self.needs_input_grad = needs_input_grad

    def parameters(self) -> list[Parameter]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def fold(self, i: int, folding: Folding) -> None:
        bias = None if self.bias is None else self.bias.value
        folding.weighted(i, self.weight.value, bias, self.takes_input_map)
