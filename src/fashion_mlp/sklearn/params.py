"""The estimator's settings: scikit-learn's names and defaults, checked with our messages, and turned
into what the engine takes (a TrainConfig, and a learning rate for each epoch).

Nothing here imports scikit-learn: it is the translation between its vocabulary and ours.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..errors import InvalidValue
from ..nn import Schedule

SOLVERS = ("sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive", "cosine")  # "cosine" is ours
ADAPTIVE_FLOOR = 1e-6  # "adaptive" stops once the rate would fall below this, as scikit-learn's does

# scikit-learn's MLPClassifier parameters, with its defaults, in its order; then ours, off by default.
DEFAULTS: dict[str, Any] = {
    "hidden_layer_sizes": (100,),
    "activation": "relu",
    "solver": "adam",
    "alpha": 0.0001,
    "batch_size": "auto",
    "learning_rate": "constant",
    "learning_rate_init": 0.001,
    "power_t": 0.5,
    "max_iter": 200,
    "shuffle": True,
    "random_state": None,
    "tol": 1e-4,
    "verbose": False,
    "warm_start": False,
    "momentum": 0.9,
    "nesterovs_momentum": True,
    "early_stopping": False,
    "validation_fraction": 0.1,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-8,
    "n_iter_no_change": 10,
    "max_fun": 15000,
    # ours
    "dropout": 0.0,
    "label_smoothing": 0.0,
    "hardest_of": 1,
}

# The names of the estimator before it took scikit-learn's (files saved then still load).
OLD_NAMES = {
    "hidden_sizes": "hidden_layer_sizes",
    "epochs": "max_iter",
    "optimizer": "solver",
    "lr": "learning_rate_init",
    "nesterov": "nesterovs_momentum",
    "schedule": "learning_rate",
}


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


def _unit(v: Any) -> bool:
    return _real(v) and 0 <= v < 1


# Each parameter but hidden_layer_sizes and activation: a test, and what it asks for.
RULES: dict[str, tuple[Any, str]] = {
    "solver": (lambda v: v in SOLVERS, "'sgd' or 'adam'"),
    "alpha": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "batch_size": (lambda v: v == "auto" or (_integer(v) and v >= 1), "'auto' or an integer >= 1"),
    "learning_rate": (lambda v: v in LEARNING_RATES, f"one of {', '.join(LEARNING_RATES)}"),
    "learning_rate_init": (lambda v: _real(v) and v > 0, "a number > 0"),
    "power_t": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "max_iter": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "shuffle": (_flag, "True or False"),
    "tol": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "verbose": (lambda v: _flag(v) or (_integer(v) and v >= 0), "True, False or a count >= 0"),
    "warm_start": (_flag, "True or False"),
    "momentum": (_unit, "a number in [0, 1)"),
    "nesterovs_momentum": (_flag, "True or False"),
    "early_stopping": (_flag, "True or False"),
    "validation_fraction": (lambda v: _real(v) and 0 < v < 1, "a number in (0, 1)"),
    "beta_1": (_unit, "a number in [0, 1)"),
    "beta_2": (_unit, "a number in [0, 1)"),
    "epsilon": (lambda v: _real(v) and v > 0, "a number > 0"),
    "n_iter_no_change": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "max_fun": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "dropout": (_unit, "a number in [0, 1)"),
    "label_smoothing": (_unit, "a number in [0, 1)"),
    "hardest_of": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
}


@dataclass(frozen=True)
class Settings:
    """The estimator's parameters, checked: scikit-learn's, then ours; ``hidden`` as a tuple."""

    hidden: tuple[int, ...]
    activation: str
    solver: str
    alpha: float
    batch_size: int | str
    learning_rate: str
    learning_rate_init: float
    power_t: float
    max_iter: int
    shuffle: bool
    random_state: Any
    tol: float
    verbose: bool | int
    warm_start: bool
    momentum: float
    nesterovs_momentum: bool
    early_stopping: bool
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: int
    max_fun: int
    dropout: float
    label_smoothing: float
    hardest_of: int

    def batch_size_for(self, n_samples: int) -> int:
        """scikit-learn's rule: "auto" is min(200, n_samples); a larger size is clipped, with a warning."""
        if self.batch_size == "auto":
            return min(200, n_samples)
        size = int(self.batch_size)
        if size > n_samples:
            warnings.warn(
                f"batch_size {size} is larger than the {n_samples} samples; it is clipped to {n_samples}",
                UserWarning,
                stacklevel=4,
            )
        return max(1, min(size, n_samples))

    def config(self, seed: int, batch_size: int) -> TrainConfig:
        """The engine's config for one call: L2 is alpha / batch_size, which is how scikit-learn scales
        alpha (its loss adds alpha / 2 * ||W||^2 / batch_size); Glorot's uniform initialisation, as
        scikit-learn's; no centring, no augmentation; the learning rate comes from ``rate_for``."""
        return TrainConfig(
            hidden_sizes=self.hidden,
            init="glorot",
            epochs=int(self.max_iter),
            batch_size=batch_size,
            optimizer=self.solver,
            lr=float(self.learning_rate_init),
            momentum=float(self.momentum) if self.solver == "sgd" else 0.0,
            nesterov=bool(self.nesterovs_momentum) and self.solver == "sgd" and self.momentum > 0,
            beta1=float(self.beta_1),
            beta2=float(self.beta_2),
            eps=float(self.epsilon),
            schedule="constant",
            l2=float(self.alpha) / batch_size,
            dropout=float(self.dropout),
            centre_inputs=False,
            label_smoothing=float(self.label_smoothing),
            hardest_of=int(self.hardest_of),
            seed=seed,
        )


def check(params: dict[str, Any]) -> Settings:
    """Every parameter checked, with a message that names it, the value and what it may be."""
    hidden = params["hidden_layer_sizes"]
    if _integer(hidden):
        hidden = (hidden,)
    elif isinstance(hidden, np.ndarray) and hidden.ndim == 1:  # array-like, as scikit-learn takes
        hidden = tuple(hidden.tolist())
    if not isinstance(hidden, (tuple, list)) or not hidden or not all(_integer(h) for h in hidden):
        raise InvalidValue(f"hidden_layer_sizes must be an integer or a tuple of integers, got {hidden!r}")
    if any(h < 1 for h in hidden):
        raise InvalidValue(f"hidden_layer_sizes must be > 0, got {list(hidden)}")

    p = params
    if p["activation"] != "relu":
        raise InvalidValue(
            f"activation must be 'relu', got {p['activation']!r}: fashion-mlp's networks are ReLU "
            "networks (scikit-learn's 'identity', 'logistic' and 'tanh' are not implemented)"
        )
    if p["solver"] == "lbfgs":
        raise InvalidValue("solver 'lbfgs' is not implemented: choose 'sgd' or 'adam' (mini-batch solvers)")
    for name, (ok, what) in RULES.items():
        if not ok(p[name]):
            raise InvalidValue(f"{name} must be {what}, got {p[name]!r}")
    rest = {name: value for name, value in params.items() if name != "hidden_layer_sizes"}
    return Settings(hidden=tuple(int(h) for h in hidden), **rest)


class Cosine:
    """Our "cosine" learning rate, which has an end: from learning_rate_init to 0 over ``max_iter``
    epochs (``fit``) or calls (``partial_fit``), each of ``steps`` steps; ``epoch`` epochs are done and
    the epoch's first step is ``first_step`` in the engine's count."""

    def __init__(self, lr: float, max_iter: int, epoch: int, steps: int, first_step: int) -> None:
        self.schedule = Schedule("cosine", lr, total_steps=max_iter * steps)
        self.offset = first_step - epoch * steps

    def lr_at(self, step: int) -> float:
        return self.schedule.lr_at(step - self.offset)


def translate_old(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters saved under the estimator's names before it took scikit-learn's, in today's names;
    settings it has since dropped (decay, warm-up, init, centring, input dropout) are left out: the
    saved weights already hold what they did."""
    if "hidden_layer_sizes" in params:
        return params
    new = {OLD_NAMES.get(k, k): v for k, v in params.items() if OLD_NAMES.get(k, k) in DEFAULTS}
    if "l2" in params and isinstance(params.get("batch_size"), int):
        new["alpha"] = params["l2"] * params["batch_size"]
    if new.get("learning_rate") not in LEARNING_RATES:
        new["learning_rate"] = "constant"
    return new
