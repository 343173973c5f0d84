"""The fully connected layer: y = x @ W + b, for rows (N, features)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .layer import Builder, Record, Weighted, flag, init_of, initial_weight, positive
from .plan import Plan


class Linear(Weighted):
    """y = x @ W + b with W of shape (in, out). ``init`` draws the starting weights (one of INITS,
    layer.py's ``initial_weight``); biases start at 0, except that "glorot" draws them as it draws
    the weights, as scikit-learn's MLPClassifier does.

    Record: ``{"kind": "linear", "out": F, "bias": true, "init": "he"}``.
    """

    kind: ClassVar[str] = "linear"
    takes_input_map: ClassVar[bool] = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rng: np.random.Generator,
        *,
        init: str = "he",
        bias: bool = True,
        name: str = "linear",
        dtype: type = np.float32,
        needs_input_grad: bool = True,
    ) -> None:
        fans = in_features, out_features
        weight = initial_weight(init, fans, *fans, rng).astype(dtype)
        if init == "glorot":  # the biases too, from the weights' distribution
            initial_bias = initial_weight(init, (out_features,), *fans, rng).astype(dtype)
        else:
            initial_bias = np.zeros(out_features, dtype=dtype)
        super().__init__(name, weight, initial_bias if bias else None, needs_input_grad)
        self.out_features, self.init = out_features, init
        self._input: np.ndarray | None = None

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Linear:
        if len(builder.shape) != 1:
            raise ValueError("a fully connected layer needs rows: put a 'flatten' record first")
        out, bias, init = positive(record, "out"), flag(record, "bias", True), init_of(record)
        builder.spend(builder.size * out + out)
        layer = cls(builder.size, out, builder.rng, init=init, bias=bias, **builder.weighted("fc"))
        builder.shape = (out,)
        return layer

    def to_record(self) -> Record:
        return {"kind": self.kind, "out": self.out_features, "bias": self.bias is not None, "init": self.init}

    def describe(self) -> str:
        return f"fc{self.out_features}"

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

    def answer(self, i: int, plan: Plan) -> None:
        plan.dense(i)
