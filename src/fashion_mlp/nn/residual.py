"""The residual block (He et al., 2016): a branch of two 3×3 convolutions, and the block's input
added back to what the branch computes.

**Why the skip.** Back-propagation multiplies the gradient by every layer's Jacobian on its way down.
In a deep plain stack, those products shrink (or grow) the gradient layer by layer, and the first
layers learn slowly or not at all. A block computes y = x + F(x), so dy/dx = I + dF/dx: the identity
carries the gradient past the branch untouched, and the branch only has to learn a correction to its
input. Stacked, the blocks give the gradient a path from the loss to the first layer through
additions alone. ``docs/conv.ipynb`` shows it: a deep plain stack and the same stack with skips,
each layer's gradient norm.

**The block**, one record ``{"kind": "residual", "out": F, "init": "he"}``, on (N, H, W, C) maps
(``init`` draws its convolutions' weights, as a ``conv`` record's does):

    branch:   conv3x3(F) → batch norm → ReLU → conv3x3(F) → batch norm
    shortcut: the input itself where C = F; else conv1x1(F) → batch norm (a projection)
    output:   branch + shortcut

The ReLU after the sum is a record of its own (``cnn_records`` writes ``residual, relu``), so the
block is just "branch plus skip". The convolutions have no bias: batch norm's shift makes one
redundant. The block holds its layers as ``Conv2d``, ``BatchNorm`` and ``ReLU``, the same kinds a
network is built of, so each does its own forward, backward and ``keep_rows``; the block only routes
between them. Its backward sends the output's gradient down both paths and adds what comes back.

At inference each path folds on its own, batch norms into the convolutions before them
(``fold``); the block answers with the two paths' steps and one addition, and the ONNX export
writes the two branches and an ``Add``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .activations import ReLU
from .conv import Conv2d
from .halves import halves
from .layer import Builder, Layer, Parameter, Record, init_of, positive
from .norm import BatchNorm
from .plan import Folding, Plan, Step


def fold_path(layers: Sequence[Layer]) -> Folding:
    """One path's layers folded on their own, indexed by their place in the path (answering.fold,
    for a path whose input is a map in the middle of a network: no input map folds into it)."""
    folding = Folding(0.0, 1.0)
    folding.stop()  # the path's input is not the network's: nothing of the input's map folds in
    for j, layer in enumerate(layers):
        layer.fold(j, folding)
    return folding


def path_steps(layers: Sequence[Layer], folding: Folding, dtype: np.dtype) -> list[Step]:
    """The steps a path answers with (each layer's ``answer``), on batch-major maps."""
    plan = Plan(folding, dtype, len(layers) + 1)  # + 1: no layer of a path gives the logits
    for j, layer in enumerate(layers):
        layer.answer(j, plan)
    plan.batch_major()
    return plan.steps


def run_steps(steps: Sequence[Step], x: np.ndarray) -> np.ndarray:
    for step in steps:
        x = step(x)
    return x


class Residual(Layer):
    """branch(x) + shortcut(x), (N, H, W, C) to (N, H, W, F); see the module's docstring.

    Record: ``{"kind": "residual", "out": F, "init": "he"}``.
    """

    kind: ClassVar[str] = "residual"
    answer_rows: ClassVar[int] = 128  # its convolutions' columns are nine times its input

    def __init__(
        self, branch: list[Layer], shortcut: list[Layer], out_channels: int, init: str = "he"
    ) -> None:
        super().__init__()
        self.branch, self.shortcut = branch, shortcut
        self.out_channels, self.init = out_channels, init

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Residual:
        if len(builder.shape) != 3:
            raise ValueError("a residual block needs images: put an 'image' record first")
        if builder.first_weighted:
            raise ValueError("a residual block cannot be the first weighted layer: put a convolution first")
        out, channels, init = positive(record, "out"), builder.shape[2], init_of(record)
        height, width = builder.shape[:2]

        def conv(c_in: int, kernel: int, prefix: str) -> Conv2d:
            builder.spend(kernel * kernel * c_in * out)
            return Conv2d(c_in, out, kernel, builder.rng, bias=False, init=init, **builder.weighted(prefix))

        def norm() -> BatchNorm:
            builder.spend(4 * out)
            return BatchNorm(out, builder.name("bn"), builder.dtype)

        branch: list[Layer] = [conv(channels, 3, "conv"), norm(), ReLU(), conv(out, 3, "conv"), norm()]
        shortcut: list[Layer] = [] if channels == out else [conv(channels, 1, "skip"), norm()]
        builder.shape = (height, width, out)
        return cls(branch, shortcut, out, init)

    def to_record(self) -> Record:
        return {"kind": self.kind, "out": self.out_channels, "init": self.init}

    def describe(self) -> str:
        return f"res({self.out_channels})"

    @property
    def layers(self) -> list[Layer]:
        return [*self.branch, *self.shortcut]

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def state(self) -> dict[str, np.ndarray]:
        return {name: array for layer in self.layers for name, array in layer.state().items()}

    # ------------------------------------------------------------------ training

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        branch = run_layers(self.branch, x, training)
        skip = run_layers(self.shortcut, x, training)
        if not training:
            branch += skip  # a fresh array
            return branch
        out = self._buffer("out", branch.shape, branch.dtype)
        halves(lambda lo, hi: np.add(branch[lo:hi], skip[lo:hi], out=out[lo:hi]), len(out), 3 * out.size)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        # Both paths take the output's gradient; neither writes into it (batch norm's backward, each
        # path's last layer, writes into an array of its own).
        skip = grad
        for layer in reversed(self.shortcut):
            skip = layer.backward(skip)
        branch = grad
        for layer in reversed(self.branch):
            branch = layer.backward(branch)
        grad_in = self._buffer("grad_in", branch.shape, branch.dtype)
        halves(
            lambda lo, hi: np.add(branch[lo:hi], skip[lo:hi], out=grad_in[lo:hi]),
            len(grad_in),
            3 * grad_in.size,
        )
        return grad_in

    def keep_rows(self, rows: np.ndarray) -> None:
        for layer in self.layers:
            layer.keep_rows(rows)

    # ------------------------------------------------------------------ inference

    def folded(self) -> tuple[Folding, Folding]:
        """The branch's and the shortcut's parameters, each with its batch norms folded."""
        return fold_path(self.branch), fold_path(self.shortcut)

    def fold(self, i: int, folding: Folding) -> None:
        folding.stop()  # the sum needs the branch's output as it is
        folding.inner[i] = self.folded()

    def answer(self, i: int, plan: Plan) -> None:
        branch_folding, skip_folding = plan.folding.inner[i]
        branch = path_steps(self.branch, branch_folding, plan.dtype)
        skip = path_steps(self.shortcut, skip_folding, plan.dtype)

        def step(x: np.ndarray) -> np.ndarray:
            out = run_steps(branch, x)  # a fresh array: the sum goes into it
            out += run_steps(skip, x)
            return out

        plan.batch_major()
        plan.add(step)


def run_layers(layers: Sequence[Layer], x: np.ndarray, training: bool) -> np.ndarray:
    for layer in layers:
        x = layer.forward(x, training)
    return x
