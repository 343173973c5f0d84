"""Layers of a fully connected network: each forward(x) caches what backward(grad) needs.

Shapes: a batch is a 2-D array (batch, features). ``backward`` takes dLoss/dOutput and
returns dLoss/dInput, writing parameter gradients into ``Parameter.grad``. Between the two,
``keep_rows(rows)`` narrows what forward cached to some rows of the batch, so that backward costs
only those rows: training can score a large batch and learn from its hardest examples.

In training, each layer writes its outputs into arrays it keeps from one step to the next, so a
step allocates (almost) nothing: a fresh half-megabyte array costs page faults, which make a matmul
into it about 15% slower. An array a training forward or backward returns is therefore valid only
until the layer's next call; inference (``training=False``) returns fresh arrays.
"""

from __future__ import annotations

import numpy as np

from .halves import halves

CENTRE_MEAN = "centre.mean"  # the state_dict() name of the input mean a centred network subtracts


class Parameter:
    """A trainable array and the gradient from the last backward pass (same shape and dtype)."""

    def __init__(self, name: str, value: np.ndarray, decay: bool) -> None:
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)
        self.decay = decay  # L2 applies to weights only, never to biases

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class: a layer with no parameters passes gradients straight through."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

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

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only these rows of the batch the last forward cached (a layer that caches nothing
        has nothing to do)."""

    def _rows(self, name: str, array: np.ndarray, rows: np.ndarray, axis: int = 0) -> np.ndarray:
        """``array[rows]`` along ``axis`` (the batch's), gathered into the layer's reusable array ``name``."""
        shape = (*array.shape[:axis], len(rows), *array.shape[axis + 1 :])
        # mode="clip": with the default "raise", np.take gathers into a temporary and copies that
        # into ``out`` (2.7x the time for a convolution's columns). The rows are the batch's own.
        return np.take(array, rows, axis=axis, out=self._buffer(name, shape, array.dtype), mode="clip")

    def parameters(self) -> list[Parameter]:
        return []

    def state(self) -> dict[str, np.ndarray]:
        """Arrays saved with the weights that gradients do not train (a mean, running averages)."""
        return {}


INITS = ("he", "small", "glorot")


class Linear(Layer):
    """y = x @ W + b with W of shape (in, out). ``init`` draws the starting weights:

    - "he": N(0, 2 / in), suited to the ReLU that follows; biases 0.
    - "small": N(0, 0.01^2), the initialisation the report's results imply; biases 0.
    - "glorot": uniform in +-sqrt(6 / (in + out)), weights and biases, as scikit-learn's
      MLPClassifier draws them.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rng: np.random.Generator,
        name: str = "linear",
        dtype: type = np.float32,
        needs_input_grad: bool = True,
        init: str = "he",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
        shape = (in_features, out_features)
        if init == "glorot":
            bound = np.sqrt(6.0 / (in_features + out_features))
            weight = rng.uniform(-bound, bound, shape).astype(dtype)
            initial_bias = rng.uniform(-bound, bound, out_features).astype(dtype)
        else:
            std = np.sqrt(2.0 / in_features) if init == "he" else 0.01
            weight = (rng.standard_normal(shape) * std).astype(dtype)
            initial_bias = np.zeros(out_features, dtype=dtype)
        self.weight = Parameter(f"{name}.weight", weight, decay=True)
        # bias=False where batch norm follows, whose shift makes a bias redundant (its gradient is 0)
        self.bias = Parameter(f"{name}.bias", initial_bias, decay=False) if bias else None
        self.out_features = out_features
        # The first layer's input is the data: its gradient is never used, so skip that matmul.
        self.needs_input_grad = needs_input_grad
        self._input: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._input = x if training else None  # inference keeps nothing of its batch
        out = self._buffer("out", (len(x), self.out_features), x.dtype) if training else None
        out = np.matmul(x, self.weight.value, out=out)
        if self.bias is not None:
            out += self.bias.value
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        assert self._input is not None, "backward() called before forward()"
        np.matmul(self._input.T, grad, out=self.weight.grad)
        if self.bias is not None:
            self._column_sums(grad, self.bias.grad)
        if not self.needs_input_grad:
            return None
        grad_in = self._buffer("grad_in", self._input.shape, grad.dtype)
        return np.matmul(grad, self.weight.value.T, out=grad_in)

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._input is not None, "keep_rows() called before forward()"
        self._input = self._rows("input_rows", self._input, rows)

    def parameters(self) -> list[Parameter]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]


class Centre(Layer):
    """x - mean, with ``mean`` a fixed per-feature vector: the training images' average pixel.

    Scaling pixels to [-1, 1] does not centre Fashion-MNIST: most pixels are background, and the mean
    pixel is 72.9, not 127.5. Subtracting the mean gives the first layer zero-mean inputs. The mean
    is part of the model's state (saved with the weights), not a trained parameter.
    """

    def __init__(self, mean: np.ndarray) -> None:
        super().__init__()
        if mean.ndim != 1:
            raise ValueError(f"the mean to subtract must be a vector, got shape {mean.shape}")
        self.mean = mean

    def state(self) -> dict[str, np.ndarray]:
        return {CENTRE_MEAN: self.mean}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        out = self._buffer("out", x.shape, x.dtype) if training else None
        return np.subtract(x, self.mean, out=out, dtype=x.dtype)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad  # d(x - mean)/dx is the identity


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
    """max(x, 0), computed in place (``relu_``): the input buffer belongs to the layer before."""

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


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability ``rate`` and scale the rest by 1/(1-rate).

    A unit is kept when 16 random bits, read as an integer, fall below round((1 - rate) * 2**16).
    One 64-bit draw from the generator decides four units, several times cheaper than a random float
    per unit. The keep probability is (1 - rate) to within 2**-17, and the scale is 1 over its exact value.
    """

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        super().__init__()
        self.rate = rate
        self.rng = rng
        self.keep_below = max(1, round((1.0 - rate) * 2**16))  # of the 2**16 values of 16 bits
        self.mask: np.ndarray | None = None  # already scaled by 1/(1-rate); settable for tests

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
