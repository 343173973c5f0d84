"""2×2 max pooling, stride 2, over NHWC maps or the quarters a convolution writes for it (conv.py)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .halves import batch_rows, halves
from .layer import Builder, Layer, Record
from .plan import Folding, Plan, add_bias


class MaxPool2d(Layer):
    """2×2 max pooling, stride 2: (N, H, W, C) to (N, H/2, W/2, C), H and W even; or from the
    quarters (4, N, H/2, W/2, C) a convolution writes for it (the module's docstring).

    The gradient goes to the maximum of each window, and only to it: where several values tie, to
    the first in reading order, so that the input's gradient sums to the output's. The window's
    maximum is taken in two steps, each a maximum of two: across each pair of columns, then across
    each pair of rows. Each step remembers which side won (the first on a tie), and the backward
    sends the gradient the same way back: two boolean arrays, no index arithmetic. The backward
    returns the gradient in the layout the forward was given.

    Record: ``{"kind": "maxpool"}``.
    """

    kind: ClassVar[str] = "maxpool"

    def __init__(self) -> None:
        super().__init__()
        # The left column won its pair: (N, H, W/2, C), or (2, N, H/2, W/2, C) from quarters.
        self._left: np.ndarray | None = None
        self._top: np.ndarray | None = None  # (N, H/2, W/2, C): the top row won its pair
        self._quarters = False  # whether the last forward was given quarters

    @classmethod
    def build(cls, record: Record, builder: Builder) -> MaxPool2d:
        shape = builder.shape
        if len(shape) != 3 or shape[0] % 2 or shape[1] % 2:
            raise ValueError(f"2x2 pooling needs images of even height and width, got {shape}")
        builder.shape = (shape[0] // 2, shape[1] // 2, shape[2])
        return cls()

    def describe(self) -> str:
        return "pool"

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.ndim == 5:  # quarters (dy, dx): one view (dy, N, H/2, W/2, C) per column of the window
            quarters = x.reshape(2, 2, *x.shape[1:])
            left, right = quarters[:, 0], quarters[:, 1]
            n, h2, w2, c = x.shape[1:]
            rows_shape, axis = (2, n, h2, w2, c), 1  # axis: the images' axis of left, right, across
        else:
            n, h, w, c = x.shape
            if h % 2 or w % 2:
                raise ValueError(f"2x2 pooling needs an even height and width, got {h}x{w}")
            pairs = x.reshape(n, h, w // 2, 2, c)
            left, right = pairs[:, :, :, 0, :], pairs[:, :, :, 1, :]
            h2, w2 = h // 2, w // 2
            rows_shape, axis = (n, h, w2, c), 0
        shape = (n, h2, w2, c)
        across = self._buffer("across", rows_shape, x.dtype) if training else np.empty(rows_shape, x.dtype)
        out = self._buffer("out", shape, x.dtype) if training else np.empty(shape, x.dtype)
        if training:
            self._quarters = x.ndim == 5
            left_won = self._buffer("left", rows_shape, np.dtype(bool))
            top_won = self._buffer("top", shape, np.dtype(bool))

        def part(lo: int, hi: int) -> None:
            a, b, ac = (batch_rows(v, axis, lo, hi) for v in (left, right, across))
            np.maximum(a, b, out=ac)
            # Each pair of rows: the top and bottom of every window, as two views of ``across``.
            top, bottom = (
                (ac[0], ac[1]) if axis == 1 else (ac.reshape(hi - lo, h2, 2, w2, c)[:, :, i] for i in (0, 1))
            )
            np.maximum(top, bottom, out=out[lo:hi])
            if training:
                np.greater_equal(a, b, out=batch_rows(left_won, axis, lo, hi))
                np.greater_equal(top, bottom, out=top_won[lo:hi])

        halves(part, n, 2 * x.size)
        self._left, self._top = (left_won, top_won) if training else (None, None)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._left is not None and self._top is not None, "backward() before a training forward()"
        n, h2, w2, c = self._top.shape
        quarters = self._quarters
        # The rows' gradient, then the input's, laid out as the forward's input was.
        rows = self._buffer("grad_rows", (2, n, h2, w2, c) if quarters else (n, h2, 2, w2, c), grad.dtype)
        grad_in = self._buffer(
            "grad_in", (2, 2, n, h2, w2, c) if quarters else (n, 2 * h2, w2, 2, c), grad.dtype
        )

        def part(lo: int, hi: int) -> None:
            g = grad[lo:hi]
            # Back across the rows: the top row of each window takes grad where it won, the bottom the rest.
            r = batch_rows(rows, 1 if quarters else 0, lo, hi)
            top, bottom = (r[0], r[1]) if quarters else (r[:, :, 0], r[:, :, 1])
            np.multiply(g, self._top[lo:hi], out=top)
            np.subtract(g, top, out=bottom)
            # Then across the columns, the same way.
            if quarters:
                gi = grad_in[:, :, lo:hi]
                left, right = gi[:, 0], gi[:, 1]
                won = self._left[:, lo:hi]
            else:
                r = r.reshape(hi - lo, 2 * h2, w2, c)
                gi = grad_in[lo:hi]
                left, right = gi[:, :, :, 0], gi[:, :, :, 1]
                won = self._left[lo:hi]
            np.multiply(r, won, out=left)
            np.subtract(r, left, out=right)

        halves(part, n, 6 * grad.size)
        if quarters:
            return grad_in.reshape(4, n, h2, w2, c)
        return grad_in.reshape(n, 2 * h2, 2 * w2, c)

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._left is not None and self._top is not None, "keep_rows() before a training forward()"
        self._left = self._rows("left_rows", self._left, rows, axis=1 if self._quarters else 0)
        self._top = self._rows("top_rows", self._top, rows)

    def fold(self, i: int, folding: Folding) -> None:
        folding.pool()

    def answer(self, i: int, plan: Plan) -> None:
        """Its forward, then the bias of the convolution before it, on a quarter of the values (a
        per-channel constant commutes with a maximum)."""
        bias, plan.pending = plan.pending, None
        plan.add(lambda x: self.forward(x, training=False))
        if bias is not None and bias.any():
            plan.add(lambda x: add_bias(bias, x))


class GlobalAvgPool(Layer):
    """Global average pooling: each channel's mean over the whole map, (N, H, W, C) to (N, C).

    It replaces flattening before the classifier (Lin et al., 2014, "Network in Network"): the
    classifier then sees what each channel found, wherever in the image it found it, and takes C
    weights per class instead of H·W·C. The backward spreads each channel's gradient evenly over
    the H·W positions it averaged.

    Record: ``{"kind": "avgpool"}``.
    """

    kind: ClassVar[str] = "avgpool"

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None  # the last training forward's input shape

    @classmethod
    def build(cls, record: Record, builder: Builder) -> GlobalAvgPool:
        if len(builder.shape) != 3:
            raise ValueError("global average pooling needs images: put an 'image' record first")
        builder.shape = (builder.shape[2],)
        return cls()

    def describe(self) -> str:
        return "avgpool"

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        n, h, w, c = x.shape
        if training:
            self._shape = x.shape
        out = self._buffer("out", (n, c), x.dtype) if training else np.empty((n, c), x.dtype)
        # A sum over each image's H·W rows of C, then one scaling: in x's dtype throughout.
        np.add.reduce(x.reshape(n, h * w, c), axis=1, out=out)
        out *= x.dtype.type(1.0 / (h * w))
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._shape is not None, "backward() called before a training forward()"
        _, h, w, c = self._shape
        n = len(grad)  # the kept rows, after keep_rows
        grad_in = self._buffer("grad_in", (n, h, w, c), grad.dtype)
        np.multiply(grad[:, None, None, :], grad.dtype.type(1.0 / (h * w)), out=grad_in)
        return grad_in
