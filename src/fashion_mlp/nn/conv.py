"""Layers for images: convolution, max pooling, batch normalisation, and the reshapes around them.

**Layout: NHWC, channels last.** A batch of images is (N, H, W, C). With channels last, im2col's
columns are a (N·H·W, k·k·C) matrix whose rows are the patches, and one product with the
(k·k·C, F) weight gives (N·H·W, F): that already *is* the NHWC output, and its gradient is already
the layout the backward product needs. In NCHW (PyTorch's layout) the product's result has to be
transposed into place on every forward, and the gradient back out of it on every backward. A
Fashion-MNIST row of 784 pixels reshapes to (28, 28, 1) for free, and a flattened NHWC map is a
plain reshape too.

**im2col as a loop over the kernel's offsets, never over pixels or images.** For a 3×3 kernel the
columns are 9 shifted slices of the zero-padded input, each copied with one NumPy assignment;
col2im is the same loop with ``+=`` (Chainer's ``im2col_cpu``/``col2im_cpu``). Each pass of a
convolution is then one BLAS product (forward) or two (backward: the weight's gradient and the
input's).

Each layer follows layers.py's contract: ``forward`` caches what ``backward`` needs, ``backward``
returns dLoss/dInput and fills its parameters' gradients, ``keep_rows`` narrows the cache to some
images of the batch. In training, outputs live in arrays the layer reuses from step to step.
"""

from __future__ import annotations

import numpy as np

from .layers import Layer, Parameter


class Image(Layer):
    """(N, H·W·C) rows, as the data comes, to (N, H, W, C) images: a view, no copy."""

    def __init__(self, height: int, width: int, channels: int = 1) -> None:
        super().__init__()
        self.shape = (int(height), int(width), int(channels))

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.ndim == 4:
            return x
        return x.reshape(len(x), *self.shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(len(grad), -1)


class Flatten(Layer):
    """(N, H, W, C) feature maps to (N, H·W·C) rows, channels fastest (NHWC order): a view."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._shape = x.shape[1:]
        return x.reshape(len(x), -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._shape is not None, "backward() called before forward()"
        return grad.reshape(len(grad), *self._shape)


class Conv2d(Layer):
    """A k×k convolution (k odd), stride 1, zero padding of (k-1)/2 so that the output keeps the
    input's height and width. Input (N, H, W, C), output (N, H, W, F).

    The weight is (k, k, C, F), drawn from N(0, 2 / (k·k·C)) (He, for the ReLU that follows), and is
    used as the (k·k·C, F) matrix of im2col's product. ``bias=False`` where batch norm follows: its
    shift makes a bias redundant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        rng: np.random.Generator,
        name: str = "conv",
        dtype: type = np.float32,
        bias: bool = True,
        needs_input_grad: bool = True,
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the kernel size must be odd (it keeps the image's size), got {kernel}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got {in_channels} in and {out_channels} out")
        self.kernel = int(kernel)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        fan_in = kernel * kernel * in_channels
        weight = rng.standard_normal((kernel, kernel, in_channels, out_channels)) * np.sqrt(2.0 / fan_in)
        self.weight = Parameter(f"{name}.weight", weight.astype(dtype), decay=True)
        self.bias = (
            Parameter(f"{name}.bias", np.zeros(out_channels, dtype=dtype), decay=False) if bias else None
        )
        self.needs_input_grad = needs_input_grad  # the first layer's input is the data
        self._cols: np.ndarray | None = None  # (N, H, W, k, k, C): the patches of the last forward

    def _padded(self, x: np.ndarray, training: bool) -> np.ndarray:
        """x inside a border of zeros, (k-1)/2 wide; in training, in an array whose border stays zero."""
        n, h, w, c = x.shape
        p = self.kernel // 2
        shape = (n, h + 2 * p, w + 2 * p, c)
        fresh = self._buffers.get("padded")
        padded = self._buffer("padded", shape, x.dtype) if training else np.empty(shape, x.dtype)
        if not training or padded is not fresh:  # a new array: zero it once, then only its inside is written
            padded.fill(0)
        padded[:, p : p + h, p : p + w, :] = x
        return padded

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        n, h, w, c = x.shape
        if c != self.in_channels:
            raise ValueError(f"{self.weight.name}: expected {self.in_channels} channels, got {c}")
        k = self.kernel
        padded = self._padded(x, training)
        shape = (n, h, w, k, k, c)
        cols = self._buffer("cols", shape, x.dtype) if training else np.empty(shape, x.dtype)
        for dy in range(k):  # im2col: one shifted slice per kernel offset
            for dx in range(k):
                cols[:, :, :, dy, dx, :] = padded[:, dy : dy + h, dx : dx + w, :]
        self._cols = cols if training else None
        out_shape = (n * h * w, self.out_channels)
        out = self._buffer("out", out_shape, x.dtype) if training else None
        out = np.matmul(cols.reshape(n * h * w, k * k * c), self._matrix(), out=out)
        if self.bias is not None:
            out += self.bias.value
        return out.reshape(n, h, w, self.out_channels)

    def _matrix(self) -> np.ndarray:
        return self.weight.value.reshape(-1, self.out_channels)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        assert self._cols is not None, "backward() called before a training forward()"
        n, h, w, k, _, c = self._cols.shape
        rows = grad.reshape(n * h * w, self.out_channels)
        cols = self._cols.reshape(n * h * w, k * k * c)
        np.matmul(cols.T, rows, out=self.weight.grad.reshape(-1, self.out_channels))
        if self.bias is not None:
            np.sum(rows, axis=0, out=self.bias.grad)
        if not self.needs_input_grad:
            return None
        grad_cols = self._buffer("grad_cols", (n * h * w, k * k * c), grad.dtype)
        np.matmul(rows, self._matrix().T, out=grad_cols)
        grad_cols6 = grad_cols.reshape(n, h, w, k, k, c)
        p = k // 2
        grad_padded = self._buffer("grad_padded", (n, h + 2 * p, w + 2 * p, c), grad.dtype)
        grad_padded.fill(0)
        for dy in range(k):  # col2im: the same loop, adding each offset's share back
            for dx in range(k):
                grad_padded[:, dy : dy + h, dx : dx + w, :] += grad_cols6[:, :, :, dy, dx, :]
        return grad_padded[:, p : p + h, p : p + w, :]

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._cols is not None, "keep_rows() called before a training forward()"
        self._cols = self._rows("cols_rows", self._cols, rows)

    def parameters(self) -> list[Parameter]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]


class MaxPool2d(Layer):
    """2×2 max pooling, stride 2: (N, H, W, C) to (N, H/2, W/2, C), H and W even.

    The gradient goes to the maximum of each window, and only to it: where several values tie, to
    the first in reading order, so the gradient of the input sums to that of the output.
    """

    def __init__(self) -> None:
        super().__init__()
        self._route: np.ndarray | None = None  # (N, H/2, 2, W/2, 2, C) bool: which input was the max

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        n, h, w, c = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"2x2 pooling needs an even height and width, got {h}x{w}")
        windows = x.reshape(n, h // 2, 2, w // 2, 2, c)
        corners = [windows[:, :, i, :, j, :] for i in (0, 1) for j in (0, 1)]
        shape = (n, h // 2, w // 2, c)
        out = self._buffer("out", shape, x.dtype) if training else np.empty(shape, x.dtype)
        np.maximum(corners[0], corners[1], out=out)
        np.maximum(out, corners[2], out=out)
        np.maximum(out, corners[3], out=out)
        if not training:
            self._route = None
            return out
        route = self._buffer("route", windows.shape, np.dtype(bool))
        taken = self._buffer("taken", shape, np.dtype(bool))
        taken.fill(False)
        for (i, j), corner in zip(((0, 0), (0, 1), (1, 0), (1, 1)), corners):
            chosen = route[:, :, i, :, j, :]
            np.equal(corner, out, out=chosen)
            chosen &= ~taken  # a tie goes to the first maximum only
            taken |= chosen
        self._route = route
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._route is not None, "backward() called before a training forward()"
        n, h2, _, w2, _, c = self._route.shape
        grad_in = self._buffer("grad_in", self._route.shape, grad.dtype)
        np.multiply(self._route, grad[:, :, None, :, None, :], out=grad_in)
        return grad_in.reshape(n, 2 * h2, 2 * w2, c)

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._route is not None, "keep_rows() called before a training forward()"
        self._route = self._rows("route_rows", self._route, rows)


class BatchNorm(Layer):
    """Batch normalisation over the last axis: per channel of (N, H, W, C) maps, per feature of
    (N, F) rows. y = gamma · (x - mean) / sqrt(var + eps) + beta.

    Training uses the batch's mean and (biased) variance, and folds them into running averages,
    ``running = (1 - momentum) · running + momentum · batch`` (the variance unbiased, as PyTorch
    does); inference uses the running averages. The backward is the closed form,
    dx = (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)) / sqrt(var + eps), with dx̂ = dy · gamma.

    ``keep_rows``: the statistics stay those of the whole batch the forward saw; the backward then
    takes the kept rows as its batch (its means over them alone).
    """

    def __init__(
        self,
        features: int,
        name: str = "bn",
        dtype: type = np.float32,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"batch norm needs at least one feature, got {features}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"batch norm momentum must be in (0, 1], got {momentum}")
        self.features, self.eps, self.momentum = int(features), float(eps), float(momentum)
        self.gamma = Parameter(f"{name}.gamma", np.ones(features, dtype=dtype), decay=False)
        self.beta = Parameter(f"{name}.beta", np.zeros(features, dtype=dtype), decay=False)
        self.running_mean = np.zeros(features, dtype=dtype)
        self.running_var = np.ones(features, dtype=dtype)
        self.name = name
        self._normalised: np.ndarray | None = None  # x̂ of the last training forward, (rows, features)
        self._inv_std: np.ndarray | None = None
        self._images = 0  # the batch size of the last training forward

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[-1] != self.features:
            raise ValueError(f"{self.name}: expected {self.features} features, got {x.shape[-1]}")
        flat = x.reshape(-1, self.features)
        if not training:
            scale = self.gamma.value / np.sqrt(self.running_var + self.eps)
            out = flat * scale + (self.beta.value - self.running_mean * scale)
            return out.reshape(x.shape).astype(x.dtype, copy=False)
        n, self._images = len(flat), len(x)
        mean = flat.mean(axis=0)
        normalised = self._buffer("normalised", flat.shape, x.dtype)
        np.subtract(flat, mean, out=normalised)
        var = np.einsum("ij,ij->j", normalised, normalised) / n
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        normalised *= inv_std
        self._normalised, self._inv_std = normalised, inv_std
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += m * var * (n / max(n - 1, 1))
        out = self._buffer("out", flat.shape, x.dtype)
        np.multiply(normalised, self.gamma.value, out=out)
        out += self.beta.value
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._normalised is not None and self._inv_std is not None, "backward() before forward()"
        shape = grad.shape
        rows = grad.reshape(-1, self.features)
        normalised = self._normalised
        np.sum(rows, axis=0, out=self.beta.grad)
        np.einsum("ij,ij->j", rows, normalised, out=self.gamma.grad)
        n = len(rows)
        # dx̂ = dy·gamma; dx = (dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂)) · inv_std, written with the sums above
        scale = self.gamma.value * self._inv_std
        grad_in = self._buffer("grad_in", rows.shape, grad.dtype)
        np.multiply(normalised, self.gamma.grad / n, out=grad_in)
        np.subtract(rows, grad_in, out=grad_in)
        grad_in -= self.beta.grad / n
        grad_in *= scale
        return grad_in.reshape(shape)

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._normalised is not None, "keep_rows() called before a training forward()"
        per_image = len(self._normalised) // self._images  # H·W positions of a map, or 1 for rows
        maps = self._normalised.reshape(self._images, per_image, self.features)
        self._normalised = self._rows("normalised_rows", maps, rows).reshape(-1, self.features)
        self._images = len(rows)

    def state(self) -> dict[str, np.ndarray]:
        """The running averages: state saved with the weights, not trained by gradients."""
        return {f"{self.name}.running_mean": self.running_mean, f"{self.name}.running_var": self.running_var}

    def parameters(self) -> list[Parameter]:
        return [self.gamma, self.beta]
