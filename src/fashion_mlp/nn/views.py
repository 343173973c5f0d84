"""Test-time augmentation: a network that answers each image from several views of it, and averages.

Training shows the network random flips and shifts of each image (data.augment_batch), so it has
learnt that a shirt mirrored, or moved by a pixel, is still a shirt. At inference it may then look at
each image as it is, mirrored, and shifted by a pixel four ways, and take the mean of what the views
say: the views' errors differ, and averaging cancels part of them (docs/recipe.md measures it). Two
records do it, so that every door (evaluate, predict, serve, the ONNX export) answers the same way:

- ``{"kind": "views", "flip": true, "shift": 1}``, after ``image``: the views of each image, the
  batch (N, H, W, C) becoming (V·N, H, W, C), view-major: the image, then the four shifts of it,
  by ``shift`` pixels right, left, down and up, then the same for its mirror. V = (1 + flip) ·
  (1 + 4 if shift else 1). A shifted view's new border repeats the image's edge (ONNX's Pad in
  "edge" mode computes the same).
- ``{"kind": "mean_of_views"}``, before the last fully connected layer: (V·N, F) back to (N, F), the
  mean over the views. The last layer is affine, so this is the mean of the views' logits, at a V-th
  of that layer's cost.

In training both are the identity: the random augmentation already shows the network other views,
one per image, and back-propagation sees the batch as it is. The views are of the image as the
'views' record receives it: in a network that centres its inputs, of the centred image, where
training's augmentation mirrors and shifts before centring (the presets that take views centre
nothing: batch norm does).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .layer import Builder, Layer, Record, flag

MAX_SHIFT = 8  # the most pixels a view may be shifted by (the training augmentation's limit too)


class Views(Layer):
    """Each image, and its mirror and shifts, as a batch V times as large, at inference only.

    Record: ``{"kind": "views", "flip": bool, "shift": pixels}``; see the module's docstring.
    """

    kind: ClassVar[str] = "views"

    def __init__(self, flip: bool, shift: int) -> None:
        super().__init__()
        if not 0 <= shift <= MAX_SHIFT:
            raise ValueError(f"a views layer's 'shift' must be 0 to {MAX_SHIFT} pixels, got {shift}")
        self.flip, self.shift = bool(flip), int(shift)
        self.n_views = (2 if self.flip else 1) * (5 if self.shift else 1)
        # Rows at a time at inference (Network.chunk): a convolution's 128, shared among the views.
        self.answer_rows = max(1, 128 // self.n_views)  # type: ignore[misc]

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Views:
        if len(builder.shape) != 3:
            raise ValueError("views need images: put an 'image' record first")
        if builder.views != 1:
            raise ValueError("views of views: put a 'mean_of_views' between two 'views' records")
        shift = record.get("shift", 0)
        if type(shift) is not int:
            raise ValueError(f"a views layer's 'shift' must be an integer, got {shift!r}")
        layer = cls(flag(record, "flip", True), shift)
        if layer.n_views == 1:
            raise ValueError("a views layer needs 'flip' or a 'shift': alone, the image is one view")
        if 2 * shift >= min(builder.shape[:2]):
            raise ValueError(f"a shift of {shift} pixels leaves nothing of a {builder.shape[0]}-pixel image")
        builder.views = layer.n_views
        return layer

    def to_record(self) -> Record:
        return {"kind": self.kind, "flip": self.flip, "shift": self.shift}

    def describe(self) -> str:
        return f"views{self.n_views}"

    def offsets(self) -> list[tuple[int, int]]:
        """Each view's shift (dy, dx) of its image: view[y, x] = image[y + dy, x + dx]."""
        s = self.shift
        return [(0, 0)] + ([(0, s), (0, -s), (s, 0), (-s, 0)] if s else [])

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if training:
            return x
        n, h, w, c = x.shape
        out = np.empty((self.n_views, n, h, w, c), x.dtype)
        s, i = self.shift, 0
        for image in (x, x[:, :, ::-1]) if self.flip else (x,):
            padded = np.pad(image, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge") if s else image
            for dy, dx in self.offsets():
                out[i] = padded[:, s + dy : s + dy + h, s + dx : s + dx + w]
                i += 1
        return out.reshape(self.n_views * n, h, w, c)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad


class MeanOfViews(Layer):
    """(V·N, F) features of V views of N images, view-major, to their mean over the views, (N, F), at
    inference only. Record: ``{"kind": "mean_of_views"}``; V is the network's ``views`` record's."""

    kind: ClassVar[str] = "mean_of_views"

    def __init__(self, n_views: int, features: int) -> None:
        super().__init__()
        self.n_views, self.features = int(n_views), int(features)

    @classmethod
    def build(cls, record: Record, builder: Builder) -> MeanOfViews:
        if builder.views == 1:
            raise ValueError("'mean_of_views' averages the views of a 'views' record: put one first")
        if len(builder.shape) != 1:
            raise ValueError("'mean_of_views' averages features: put it after 'flatten' or 'avgpool'")
        layer = cls(builder.views, builder.shape[0])
        builder.views = 1
        return layer

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if training:
            return x
        views = x.reshape(self.n_views, len(x) // self.n_views, -1)
        out = np.add.reduce(views, axis=0)
        out *= x.dtype.type(1.0 / self.n_views)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad
