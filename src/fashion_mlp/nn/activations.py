"""Activations and dropout: ReLU (in place) and inverted dropout. Neither changes its batch's shape,
so both serve rows and images alike."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .halves import halves
from .layer import Builder, Layer, Record
from .plan import Folding, Plan

_ZERO_ROWS: dict[np.dtype, np.ndarray] = {}  # relu_'s rows of zeros, one per dtype, read-only
_WIDEST_ZEROS = 1 << 20


def relu_(x: np.ndarray) -> np.ndarray:
    """max(x, 0) in place: x, rectified.

    Against a row of zeros broadcast down x's rows, not against the scalar 0: NumPy 2.4's maximum
    has its fast (SIMD) loop only where both operands move, so with a scalar it runs 3-4 times slower
    (float32, measured: 128×512, 48 µs against 16; 10,000×128, 950 µs against 370; docs/speed.md).
    The zeros are shared and only read, so threads may call this at once."""
    if x.size == 0:
        return x
    rows = x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(1, -1)
    width = rows.shape[1]
    if not x.flags.c_contiguous or width > _WIDEST_ZEROS:
        return np.maximum(x, x.dtype.type(0), out=x)
    zeros = _ZERO_ROWS.get(x.dtype)
    if zeros is None or len(zeros) < width:
        zeros = np.zeros(max(width, 1024), x.dtype)
        zeros.flags.writeable = False
        _ZERO_ROWS[x.dtype] = zeros
    np.maximum(rows, zeros[:width], out=rows)
    return x


class ReLU(Layer):
    """max(x, 0), computed in place (``relu_``): the input buffer belongs to the layer before.
    Record: ``{"kind": "relu"}``."""

    kind: ClassVar[str] = "relu"

    def __init__(self) -> None:
        super().__init__()
        self._output: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        halves(lambda lo, hi: relu_(x[lo:hi]), len(x), 2 * x.size)
        self._output = x if training else None
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._output is not None, "backward() called before forward()"
        output, active = self._output, self._buffer("active", grad.shape, np.dtype(bool))

        def part(lo: int, hi: int) -> None:
            grad[lo:hi] *= np.greater(output[lo:hi], 0, out=active[lo:hi])

        halves(part, len(grad), 3 * grad.size)
        return grad

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._output is not None, "keep_rows() called before forward()"
        self._output = self._rows("output_rows", self._output, rows)

    def answer(self, i: int, plan: Plan) -> None:
        zeros = np.zeros(plan.width, plan.dtype)  # for a batch of one (relu_ says why not 0)
        plan.add(relu_, lambda h: np.maximum(h, zeros, out=h))


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability ``rate`` and scale the rest by 1/(1-rate).

    A unit is kept when 16 random bits, read as an integer, fall below round((1 - rate) * 2**16).
    One 64-bit draw from the generator decides four units, several times cheaper than a random float
    per unit. The keep probability is (1 - rate) to within 2**-17, and the scale is 1 over its exact value.
    Record: ``{"kind": "dropout", "rate": r}``. At inference it is the identity, and gone.
    """

    kind: ClassVar[str] = "dropout"

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        super().__init__()
        self.rate = rate
        self.rng = rng
        self.keep_below = max(1, round((1.0 - rate) * 2**16))  # of the 2**16 values of 16 bits
        self.mask: np.ndarray | None = None  # already scaled by 1/(1-rate); settable for tests

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Dropout:
        rate = record.get("rate")
        if type(rate) not in (int, float) or not 0 <= rate < 1:
            raise ValueError(f"a dropout rate must be a number in [0, 1), got {rate!r}")
        return cls(float(rate), builder.rng)

    def to_record(self) -> Record:
        return {"kind": self.kind, "rate": self.rate}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        bits = self.rng.bit_generator.random_raw(-(-x.size // 4)).view(np.uint16)[: x.size]
        keep = self._buffer("keep", x.shape, np.dtype(bool))
        np.less(bits.reshape(x.shape), self.keep_below, out=keep)
        # 1 / the exact keep probability, as a scalar of x's dtype: bool times a Python float would
        # run a float64 loop and cast its result, 2.5 times slower.
        scale = x.dtype.type(2**16 / self.keep_below)
        self.mask = np.multiply(keep, scale, out=self._buffer("mask", x.shape, x.dtype))
        return np.multiply(x, self.mask, out=self._buffer("out", x.shape, x.dtype))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if self.mask is None:
            return grad
        return np.multiply(grad, self.mask, out=self._buffer("grad_in", grad.shape, grad.dtype))

    def keep_rows(self, rows: np.ndarray) -> None:
        if self.mask is not None:
            self.mask = self._rows("mask_rows", self.mask, rows)

    def fold(self, i: int, folding: Folding) -> None:
        """Nothing: the identity at inference, which every fold passes through."""

    def answer(self, i: int, plan: Plan) -> None:
        """Nothing: the identity at inference."""
