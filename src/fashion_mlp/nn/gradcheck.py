"""Back-propagation checked against central finite differences: the test suite's check, for anyone.

For a float64 network of any layers, a batch and its labels, each gradient
that backward() computes is compared with

    (L(θ + ε) − L(θ − ε)) / 2ε

for a sample of entries of every parameter, and of dL/dinput, which flows through the whole network.
Dropout masks are held fixed (each forward draws them from the same seed), so the loss is a plain
function of the weights. The error reported is the largest relative error over the entries checked,

    |backprop − numeric| / max(|backprop|, |numeric|, 1e-3 · the array's largest |backprop|)

The floor keeps an entry a thousand times smaller than its array's largest from being judged on
rounding alone: in float64, central differences carry an absolute error near 1e-16 · L / ε. A wrong
backward pass (a missing ReLU mask, a transposed product) gives errors of order 1.

ε is 1e-5 for a fully connected network: smaller, and rounding grows; larger, and a step is likelier
to cross a ReLU's kink, where the loss is not differentiable and the two disagree for a reason that
is not a bug. In a network with convolutions one weight moves every position of a map, thousands
of values, each of which could cross a ReLU's kink or change which value wins a max pooling window;
there ε is 1e-6, which makes such a crossing ten times rarer and still leaves rounding below the tolerance.

Crossings still happen, so each entry's difference is taken twice, with ε and with ε/2. Where the
loss is smooth the two agree to rounding; where they disagree, a kink lies within ε, and the entry
is left out (and counted) rather than judged. A wrong backward pass gives two estimates that agree
with each other and not with it, so this hides no bug.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import Dropout
from .losses import softmax_cross_entropy
from .network import Network

TOLERANCE = 1e-5
_MASK_SEED = 12345


@dataclass(frozen=True)
class GradientCheck:
    name: str  # a parameter's name, or "input" for dL/dinput through the whole network
    max_relative_error: float
    entries: int  # how many entries were compared
    kinks: int = 0  # entries left out: their two differences disagree, so the step crossed a kink

    @property
    def passed(self) -> bool:
        return self.max_relative_error <= TOLERANCE


def _forward_loss(model: Network, x: np.ndarray, y: np.ndarray, smoothing: float) -> tuple[float, np.ndarray]:
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(_MASK_SEED)  # the same masks at every evaluation
    return softmax_cross_entropy(model.forward(x.copy(), training=True), y, smoothing)


def _backprop(model: Network, x: np.ndarray, y: np.ndarray, smoothing: float) -> np.ndarray:
    """Fill every Parameter.grad and return dL/dinput, by the layers' own backward passes."""
    first = next(layer for layer in model.layers if hasattr(layer, "needs_input_grad"))
    saved, first.needs_input_grad = first.needs_input_grad, True
    try:
        _, grad = _forward_loss(model, x, y, smoothing)
        for layer in reversed(model.layers):
            grad = layer.backward(grad)  # type: ignore[assignment]
    finally:
        first.needs_input_grad = saved
    return np.array(grad)


def _relative_errors(backprop: np.ndarray, numeric: np.ndarray, largest: float) -> np.ndarray:
    scale = np.maximum(np.maximum(np.abs(backprop), np.abs(numeric)), 1e-3 * largest)
    scale = np.maximum(scale, 1e-300)  # an all-zero gradient agrees with an all-zero difference
    return np.abs(backprop - numeric) / scale


def check_gradients(
    model: Network,
    x: np.ndarray,
    y: np.ndarray,
    smoothing: float = 0.0,
    entries: int = 20,
    eps: float | None = None,
    rng: np.random.Generator | None = None,
) -> list[GradientCheck]:
    """One GradientCheck per parameter (``entries`` random entries of each) and one for the input
    (5 x ``entries`` random entries, at most all of them)."""
    if model.parameters()[0].value.dtype != np.float64:
        raise ValueError("a gradient check needs a float64 model: MLP(..., dtype=np.float64)")
    rng = rng if rng is not None else np.random.default_rng(0)
    if eps is None:
        eps = 1e-6 if any(layer.kind in ("conv", "residual") for layer in model.layers) else 1e-5
    x = np.asarray(x, dtype=np.float64)

    def loss() -> float:
        return _forward_loss(model, x, y, smoothing)[0]

    def numeric(array: np.ndarray, chosen: np.ndarray, step: float) -> np.ndarray:
        flat, out = array.reshape(-1), np.empty(len(chosen))
        for k, i in enumerate(chosen):
            saved = flat[i]
            flat[i] = saved + step
            plus = loss()
            flat[i] = saved - step
            minus = loss()
            flat[i] = saved
            out[k] = (plus - minus) / (2 * step)
        return out

    # The check replaces the dropout layers' generators (fixed masks) and fills the gradients: put back
    # what it found, so that a model checked mid-training goes on exactly as it would have.
    generators = [(layer, layer.rng) for layer in model.layers if isinstance(layer, Dropout)]
    grads = [(p, p.grad.copy()) for p in model.parameters()]
    state = model.state_dict()  # batch norm's running averages move at every training forward
    try:
        input_grad = _backprop(model, x, y, smoothing).reshape(-1)
        checks = [(p.name, p.value, p.grad.reshape(-1).copy(), entries) for p in model.parameters()]
        checks.append(("input", x, input_grad, 5 * entries))
        results = []
        for name, array, backprop, n in checks:
            chosen = rng.choice(array.size, size=min(n, array.size), replace=False)
            largest = float(np.abs(backprop).max())
            wide, narrow = numeric(array, chosen, eps), numeric(array, chosen, eps / 2)
            smooth = _relative_errors(wide, narrow, largest) <= TOLERANCE
            error = float(_relative_errors(backprop[chosen][smooth], wide[smooth], largest).max(initial=0.0))
            results.append(GradientCheck(name, error, int(smooth.sum()), int((~smooth).sum())))
        return results
    finally:
        for layer, generator in generators:
            layer.rng = generator
        for parameter, grad in grads:
            parameter.grad[...] = grad
        model.load_state_dict(state)
