"""Reshapes between the data's rows and images: views, no copies. NHWC, channels last (conv.py
says why)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .layer import Builder, Layer, Record, positive


class Image(Layer):
    """(N, H·W·C) rows, as the data comes, to (N, H, W, C) images: a view, no copy.
    Record: ``{"kind": "image", "height": H, "width": W, "channels": C}``."""

    kind: ClassVar[str] = "image"

    def __init__(self, height: int, width: int, channels: int = 1) -> None:
        super().__init__()
        self.shape = (int(height), int(width), int(channels))

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Image:
        shape = (positive(record, "height"), positive(record, "width"), positive(record, "channels"))
        if int(np.prod(shape)) != builder.size:
            raise ValueError(f"an image of {shape} does not hold {builder.size} inputs")
        builder.shape = shape
        return cls(*shape)

    def to_record(self) -> Record:
        height, width, channels = self.shape
        return {"kind": self.kind, "height": height, "width": width, "channels": channels}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.ndim == 4:
            return x
        return x.reshape(len(x), *self.shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(len(grad), -1)


class Flatten(Layer):
    """(N, H, W, C) feature maps to (N, H·W·C) rows, channels fastest (NHWC order): a view.
    Record: ``{"kind": "flatten"}``."""

    kind: ClassVar[str] = "flatten"

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Flatten:
        builder.shape = (builder.size,)
        return cls()

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._shape = x.shape[1:]
        return x.reshape(len(x), -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._shape is not None, "backward() called before forward()"
        return grad.reshape(len(grad), *self._shape)
