"""Normalisation: batch norm, over the channels of maps or the features of rows, and centring by a
fixed input mean."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .halves import halves
from .layer import Builder, Layer, Parameter, Record
from .plan import Folding, Plan

CENTRE_MEAN = "centre.mean"  # the state_dict() name of the input mean a centred network subtracts


class Centre(Layer):
    """x - mean, with ``mean`` a fixed per-feature vector: the training images' average pixel.

    Scaling pixels to [-1, 1] does not centre Fashion-MNIST: most pixels are background, and the mean
    pixel is 72.9, not 127.5. Subtracting the mean gives the first layer zero-mean inputs. The mean
    is part of the model's state (saved with the weights), not a trained parameter.

    Record: ``{"kind": "centre"}``. At inference the mean folds into the first fully connected layer
    with the input's normalisation, where that comes first (answering.py).
    """

    kind: ClassVar[str] = "centre"

    def __init__(self, mean: np.ndarray) -> None:
        super().__init__()
        if mean.ndim != 1:
            raise ValueError(f"the mean to subtract must be a vector, got shape {mean.shape}")
        self.mean = mean

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Centre:
        builder.spend(builder.size)
        return cls(np.zeros(builder.size, dtype=builder.dtype))

    def state(self) -> dict[str, np.ndarray]:
        return {CENTRE_MEAN: self.mean}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        out = self._buffer("out", x.shape, x.dtype) if training else None
        return np.subtract(x, self.mean, out=out, dtype=x.dtype)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad  # d(x - mean)/dx is the identity

    def fold(self, i: int, folding: Folding) -> None:
        folding.centre(i, self.mean)

    def answer(self, i: int, plan: Plan) -> None:
        if i not in plan.folding.folded:  # not folded into the first layer: subtract it
            super().answer(i, plan)


class BatchNorm(Layer):
    """Batch normalisation over the last axis: per channel of (N, H, W, C) maps, per feature of
    (N, F) rows. y = gamma · (x - mean) / sqrt(var + eps) + beta.

    Training uses the batch's mean and (biased) variance, and folds them into running averages,
    ``running = (1 - momentum) · running + momentum · batch`` (the variance unbiased, as PyTorch
    does); inference uses the running averages. The backward is the closed form,
    dx = gamma / sqrt(var + eps) · (dy - mean(dy) - x̂ · mean(dy · x̂)).

    ``keep_rows``: the statistics stay those of the whole batch the forward saw; the backward then
    takes the kept rows as its batch (its means over them alone).

    Record: ``{"kind": "batchnorm"}``, over the channels or features of the shape flowing in. At
    inference it folds into the layer before it where it can (answering.py).
    """

    kind: ClassVar[str] = "batchnorm"

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
        self._centred: np.ndarray | None = None  # x - mean of the last training forward, (rows, features)
        self._inv_std: np.ndarray | None = None
        self._images = 0  # the batch size of the last training forward

    @classmethod
    def build(cls, record: Record, builder: Builder) -> BatchNorm:
        builder.spend(4 * builder.shape[-1])
        return cls(builder.shape[-1], builder.name("bn"), builder.dtype)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[-1] != self.features:
            raise ValueError(f"{self.name}: expected {self.features} features, got {x.shape[-1]}")
        flat = x.reshape(-1, self.features)
        if not training:
            scale = self.gamma.value / np.sqrt(self.running_var + self.eps)
            out = flat * scale + (self.beta.value - self.running_mean * scale)
            return out.reshape(x.shape).astype(x.dtype, copy=False)
        n, images = len(flat), len(x)
        self._images = images
        mean = self._column_sums(flat, np.empty(self.features, x.dtype)) / n
        centred = self._buffer("centred", flat.shape, x.dtype)
        # The per-channel passes run over each image's values as one row (see ``_wide``).
        x_wide, centred_wide = flat.reshape(images, -1), centred.reshape(images, -1)
        mean_wide = self._wide(mean, n // images)
        halves(
            lambda lo, hi: np.subtract(x_wide[lo:hi], mean_wide, out=centred_wide[lo:hi]),
            images,
            2 * flat.size,
        )
        var = np.einsum("ij,ij->j", centred, centred) / n
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        self._centred, self._inv_std = centred, inv_std
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += m * var * (n / max(n - 1, 1))
        out = self._buffer("out", flat.shape, x.dtype)
        out_wide = out.reshape(images, -1)
        scale, beta = (self._wide(v, n // images) for v in (self.gamma.value * inv_std, self.beta.value))

        def part(lo: int, hi: int) -> None:
            np.multiply(centred_wide[lo:hi], scale, out=out_wide[lo:hi])
            out_wide[lo:hi] += beta

        halves(part, images, 4 * flat.size)
        return out.reshape(x.shape)

    @staticmethod
    def _wide(vector: np.ndarray, per_image: int) -> np.ndarray:
        """A per-channel vector repeated for every position of an image's map, to broadcast along
        one image's (H·W·C) values: NumPy's loops then run over thousands of values at a time, not
        C, about 40% faster a pass (128 maps of 14×14×32: 0.18 ms against 0.31)."""
        return np.tile(vector, per_image) if per_image > 1 else vector

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._centred is not None and self._inv_std is not None, "backward() before forward()"
        shape = grad.shape
        rows = grad.reshape(-1, self.features)
        centred, inv_std, n = self._centred, self._inv_std, len(rows)
        self._column_sums(rows, self.beta.grad)  # sum(dy)
        np.einsum("ij,ij->j", rows, centred, out=self.gamma.grad)
        self.gamma.grad *= inv_std  # sum(dy · x̂)
        # dx = scale · (dy - sum(dy) / n - centred · inv_std · sum(dy · x̂) / n), scale = gamma · inv_std
        scale = self.gamma.value * inv_std
        along_centred, shift = -scale * inv_std * self.gamma.grad / n, scale * self.beta.grad / n
        grad_in = self._buffer("grad_in", rows.shape, grad.dtype)
        scaled = self._buffer("scaled", rows.shape, grad.dtype)
        images = self._images
        along_centred, shift, scale = (self._wide(v, n // images) for v in (along_centred, shift, scale))
        wide = [a.reshape(images, -1) for a in (centred, rows, grad_in, scaled)]

        def part(lo: int, hi: int) -> None:
            c, r, g, sc = (a[lo:hi] for a in wide)
            np.multiply(c, along_centred, out=g)
            g -= shift
            g += np.multiply(r, scale, out=sc)

        halves(part, images, 6 * rows.size)
        return grad_in.reshape(shape)

    def keep_rows(self, rows: np.ndarray) -> None:
        assert self._centred is not None, "keep_rows() called before a training forward()"
        per_image = len(self._centred) // self._images  # H·W positions of a map, or 1 for rows
        maps = self._centred.reshape(self._images, per_image, self.features)
        self._centred = self._rows("centred_rows", maps, rows).reshape(-1, self.features)
        self._images = len(rows)

    def state(self) -> dict[str, np.ndarray]:
        """The running averages: state saved with the weights, not trained by gradients."""
        return {f"{self.name}.running_mean": self.running_mean, f"{self.name}.running_var": self.running_var}

    def parameters(self) -> list[Parameter]:
        return [self.gamma, self.beta]

    def fold(self, i: int, folding: Folding) -> None:
        scale = self.gamma.value / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        folding.scale_shift(i, scale, self.beta.value - self.running_mean * scale)

    def answer(self, i: int, plan: Plan) -> None:
        if i not in plan.folding.folded:
            super().answer(i, plan)
