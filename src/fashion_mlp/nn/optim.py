"""Optimisers. The base class owns the loop over parameters; a subclass writes one update rule.

L2 regularisation (``l2``) adds l2 * w to the gradient of weights, never of biases; it is the
gradient of (l2 / 2) * ||w||^2. The learning rate is an attribute the training loop sets each step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .layers import Parameter


class Optimizer:
    def __init__(self, params: Sequence[Parameter], lr: float, l2: float = 0.0) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not l2 >= 0:
            raise ValueError(f"L2 strength must be zero or positive, got {l2}")
        self.params = list(params)
        self.lr = float(lr)
        self.l2 = float(l2)
        self.steps = 0
        # One scratch array per parameter, so a step allocates nothing and leaves .grad as it was.
        self._scratch = [np.empty_like(p.value) for p in self.params]

    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = self._scratch[i]
            if self.l2 and p.decay:
                np.multiply(p.value, self.l2, out=g)
                g += p.grad
            else:
                g[...] = p.grad
            self._update(i, p, g)
        self.steps += 1

    def _update(self, i: int, p: Parameter, g: np.ndarray) -> None:
        """Apply one step to ``p.value`` given its regularised gradient ``g`` (a scratch buffer)."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat named arrays: the optimiser's buffers and its step count."""
        state = {"steps": np.array(self.steps, dtype=np.int64)}
        for key, buffers in self._buffers().items():
            state.update({f"{key}/{p.name}": buf for p, buf in zip(self.params, buffers)})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.steps = int(state["steps"])
        for key, buffers in self._buffers().items():
            for p, buf in zip(self.params, buffers):
                buf[...] = state[f"{key}/{p.name}"]

    def _buffers(self) -> dict[str, list[np.ndarray]]:
        return {}


class SGD(Optimizer):
    """SGD with momentum as in the report: v = mu*v + lr*g; w -= v (Nesterov: w -= mu*v + lr*g)."""

    def __init__(
        self,
        params: Sequence[Parameter],
        lr: float,
        momentum: float = 0.0,
        l2: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr, l2)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs a momentum above 0")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.velocity = [np.zeros_like(p.value) for p in self.params]

    def _update(self, i: int, p: Parameter, g: np.ndarray) -> None:
        g *= self.lr
        if self.momentum == 0.0:
            p.value -= g
            return
        v = self.velocity[i]
        v *= self.momentum
        v += g
        if self.nesterov:
            g += self.momentum * v
            p.value -= g
        else:
            p.value -= v

    def _buffers(self) -> dict[str, list[np.ndarray]]:
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (Kingma and Ba): bias-corrected first and second moments of the gradient."""

    def __init__(
        self,
        params: Sequence[Parameter],
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        l2: float = 0.0,
    ) -> None:
        super().__init__(params, lr, l2)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [np.zeros_like(p.value) for p in self.params]
        self.v = [np.zeros_like(p.value) for p in self.params]

    def _update(self, i: int, p: Parameter, g: np.ndarray) -> None:
        t = self.steps + 1
        m, v = self.m[i], self.v[i]
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        g *= g
        g *= 1.0 - self.beta2
        v += g
        # lr * m_hat / (sqrt(v_hat) + eps), with the bias corrections folded into scalars
        step_size = self.lr * np.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        np.sqrt(v, out=g)
        g += self.eps * np.sqrt(1.0 - self.beta2**t)
        np.divide(m, g, out=g)
        g *= step_size
        p.value -= g

    def _buffers(self) -> dict[str, list[np.ndarray]]:
        return {"m": self.m, "v": self.v}
