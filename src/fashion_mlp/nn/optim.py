"""Optimisers. The base class owns the parameters' memory; a subclass writes one update rule.

L2 regularisation (``l2``) adds l2 * w to the gradient of weights, never of biases; it is the
gradient of (l2 / 2) * ||w||^2. The learning rate is the schedule's (schedules.py): each ``step(lr)``
is given its rate, and the optimiser keeps none of its own.

An optimiser packs all the parameters it is given into one flat array (weights first, then biases)
and makes each Parameter's ``value`` and ``grad`` views into it, so layers still read and write
their own arrays. An update rule is then a handful of NumPy calls over whole buffers instead of a
handful per parameter. Each call is one pass over memory and none allocates a temporary. The passes
run over the buffers' two halves at once (halves.py): each element's update reads and writes that
element alone, so the halves give the very same bits.
A parameter belongs to one optimiser at a time: a second optimiser given it takes it over.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .halves import halves
from .layer import Parameter


class Optimizer:
    def __init__(self, params: Sequence[Parameter], l2: float = 0.0) -> None:
        if not l2 >= 0:
            raise ValueError(f"L2 strength must be zero or positive, got {l2}")
        self.params = list(params)
        if not self.params:
            raise ValueError("an optimiser needs at least one parameter")
        self.l2 = float(l2)
        self.steps = 0
        layout = sorted(self.params, key=lambda p: not p.decay)  # stable: weights, then biases
        self.n_decayed = sum(p.value.size for p in self.params if p.decay)  # L2 covers value[:n]
        starts = np.cumsum([0] + [p.value.size for p in layout])
        self._offsets = {id(p): int(start) for p, start in zip(layout, starts)}
        self.value = self._pack("value")
        self.grad = self._pack("grad")
        self._scratch = np.empty_like(self.value)  # so a step allocates nothing and leaves .grad be

    def step(self, lr: float) -> None:
        """One update of every parameter from its gradient, at learning rate ``lr`` (0 at the end
        of a cosine schedule)."""
        if not lr >= 0:
            raise ValueError(f"learning rate must be zero or positive, got {lr}")
        size = self.value.size
        halves(lambda lo, hi: self._update(lr, lo, hi), size, 6 * size)
        self.steps += 1

    def _scaled_gradient(self, scale: float, lo: int, hi: int) -> np.ndarray:
        """scale * (grad + l2 * w) over parameters [lo, hi) of the flat buffers, in that part of the
        scratch buffer (overwritten each call)."""
        g, grad, value = self._scratch[lo:hi], self.grad[lo:hi], self.value[lo:hi]
        n = min(max(self.n_decayed - lo, 0), hi - lo)  # the part L2 covers: the weights
        if self.l2:
            np.multiply(value[:n], self.l2, out=g[:n])
            g[:n] += grad[:n]
            g[n:] = grad[n:]
            g *= scale
        else:
            np.multiply(grad, scale, out=g)
        return g

    def _update(self, lr: float, lo: int, hi: int) -> None:
        """Apply one step at rate ``lr`` to parameters [lo, hi) of ``self.value``;
        ``self._scaled_gradient`` gives their regularised gradient."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def state_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Named arrays, one per parameter and buffer (e.g. 'velocity/fc1.weight'), and the step count.
        ``copy=False``: the buffers' arrays are views of the optimiser's own, which its steps move."""
        state = {"steps": np.array(self.steps, dtype=np.int64)}
        for key, flat in self._buffers().items():
            state.update(
                {
                    f"{key}/{p.name}": self._view(flat, p).copy() if copy else self._view(flat, p)
                    for p in self.params
                }
            )
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.steps = int(state["steps"])
        for key, flat in self._buffers().items():
            for p in self.params:
                self._view(flat, p)[...] = state[f"{key}/{p.name}"]

    def _buffers(self) -> dict[str, np.ndarray]:
        """The optimiser's own flat buffers (laid out as ``self.value``), by name."""
        return {}

    def _view(self, flat: np.ndarray, p: Parameter) -> np.ndarray:
        start = self._offsets[id(p)]
        return flat[start : start + p.value.size].reshape(p.value.shape)

    def _pack(self, attribute: str) -> np.ndarray:
        """One flat copy of every parameter's ``attribute``, which then becomes a view into it."""
        flat = np.empty(sum(p.value.size for p in self.params), dtype=self.params[0].value.dtype)
        for p in self.params:
            view = self._view(flat, p)
            view[...] = getattr(p, attribute)
            setattr(p, attribute, view)
        return flat


class SGD(Optimizer):
    """SGD with momentum as in the report: v = mu*v + lr*g; w -= v (Nesterov: w -= mu*v + lr*g)."""

    def __init__(
        self, params: Sequence[Parameter], momentum: float = 0.0, l2: float = 0.0, nesterov: bool = False
    ) -> None:
        super().__init__(params, l2)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs a momentum above 0")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.velocity = np.zeros_like(self.value)

    def _update(self, lr: float, lo: int, hi: int) -> None:
        step, value = self._scaled_gradient(lr, lo, hi), self.value[lo:hi]  # lr * g
        if self.momentum == 0.0:
            value -= step
            return
        v = self.velocity[lo:hi]
        v *= self.momentum
        v += step  # v = mu*v + lr*g
        if self.nesterov:
            value -= step
            np.multiply(v, self.momentum, out=step)
            value -= step  # w -= lr*g + mu*v
        else:
            value -= v

    def _buffers(self) -> dict[str, np.ndarray]:
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (Kingma and Ba): bias-corrected first and second moments of the gradient."""

    def __init__(
        self,
        params: Sequence[Parameter],
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        l2: float = 0.0,
    ) -> None:
        super().__init__(params, l2)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = np.zeros_like(self.value)
        self.v = np.zeros_like(self.value)

    def _update(self, lr: float, lo: int, hi: int) -> None:
        t = self.steps + 1
        m, v = self.m[lo:hi], self.v[lo:hi]
        g = self._scaled_gradient(1.0, lo, hi)
        # m = b1*m + (1-b1)*g, as m = b1*(m - g) + g: three passes and no temporary array
        m -= g
        m *= self.beta1
        m += g
        g *= g
        v -= g
        v *= self.beta2
        v += g  # v = b2*v + (1-b2)*g^2
        # lr * m_hat / (sqrt(v_hat) + eps), with the bias corrections folded into scalars
        step_size = lr * np.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        np.sqrt(v, out=g)
        g += self.eps * np.sqrt(1.0 - self.beta2**t)
        np.divide(m, g, out=g)
        g *= step_size
        self.value[lo:hi] -= g

    def _buffers(self) -> dict[str, np.ndarray]:
        return {"m": self.m, "v": self.v}
