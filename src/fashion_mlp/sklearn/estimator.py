"""MLPClassifier: scikit-learn's interface and stopping rules around the engine's training epoch.

``fit`` and ``partial_fit`` follow scikit-learn's ``MLPClassifier._fit_stochastic`` step for step:
the same bookkeeping (``t_``, ``loss_``, ``best_loss_``, the count of epochs without improvement),
the same learning-rate rules and the same stopping test. Each epoch itself is the engine's
``train_epoch``: our layers, our optimisers, float32.

Its state is its fitted attributes, as scikit-learn's is: ``coefs_`` and ``intercepts_`` (the
network's own weights, which training moves in place), ``optimizer_state_``, ``rng_state_``, the
counters and the curves. Two references stand beside them, made from them and never pickled: the
training state a ``partial_fit`` continues (``_cache``), and the network that predicts
(``_predictor``), whose weights are ``coefs_`` and ``intercepts_`` themselves. It predicts in
float32, as it trains: a float64 copy gave the same labels and accuracy on digits (probabilities
within 3.5e-7) and passes the same checks of scikit-learn's, so it was dropped.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..data import Dataset, Split
from ..errors import InvalidValue
from ..nn import Schedule
from ..train import (
    LearningRate,
    TrainState,
    build_optimizer,
    new_state,
    steps_per_epoch,
    train_epoch,
)
from . import persist
from .params import ADAPTIVE_FLOOR, DEFAULTS, Cosine, Settings, check


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron classifier, trained by fashion-mlp's from-scratch NumPy engine, under
    scikit-learn's own parameter names and defaults: replacing
    ``from sklearn.neural_network import MLPClassifier`` with ``from fashion_mlp.sklearn import
    MLPClassifier`` is all a script has to change. docs/sklearn.md lists every parameter and attribute
    and where ours differs.

    Ours, off by default: ``dropout`` (after each hidden layer), ``label_smoothing``, ``hardest_of``
    (learn from the hardest 1/N of N mini-batches scored) and ``learning_rate="cosine"`` (from
    learning_rate_init to 0 over max_iter epochs, or max_iter calls of partial_fit: a schedule with an
    end). Refused: activations other than "relu", the "lbfgs" solver, sample weights.
    """

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        hardest_of: int = 1,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self.hardest_of = hardest_of

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.non_deterministic = False
        return tags

    # ---------------------------------------------------------------- fitting

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train for up to ``max_iter`` epochs, stopping as scikit-learn does (``tol``,
        ``n_iter_no_change``, ``early_stopping``). With ``warm_start``, from the weights of the last fit."""
        settings = check(self.get_params())
        warm = self.warm_start and hasattr(self, "coefs_")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=not warm)
        check_classification_targets(y)
        if warm:
            if not np.array_equal(np.unique(y), self.classes_):
                raise InvalidValue(
                    "warm_start can only be used where y has the same classes as in the previous call to "
                    f"fit: previously {self.classes_.tolist()}, y has {np.unique(y).tolist()}"
                )
        else:
            self.classes_ = np.unique(y)
        self._fit(settings, X, self._encode(y), incremental=False, fresh=not warm)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y), continuing the weights and optimiser state of every earlier call, of
        ``fit`` and of ``load``. The first call on an unfitted estimator needs ``classes``."""
        settings = check(self.get_params())
        if settings.early_stopping:
            raise InvalidValue("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "coefs_")
        if first and classes is None:
            raise InvalidValue("classes must be passed on the first call to partial_fit")
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if not first and not np.array_equal(classes, self.classes_):
                raise InvalidValue(
                    f"classes={classes.tolist()} is not the same as on the last call to partial_fit, "
                    f"was: {self.classes_.tolist()}"
                )
        X, y = validate_data(self, X, y, dtype=np.float32, reset=first)
        check_classification_targets(y)
        if first:
            self.classes_ = classes
        self._fit(settings, X, self._encode(y), incremental=True, fresh=first)
        return self

    def _fit(self, settings: Settings, X: np.ndarray, y: np.ndarray, incremental: bool, fresh: bool) -> None:
        random_state = check_random_state(self.random_state)
        seed = int(random_state.randint(0, 2**31 - 1))
        x_val, y_val = X[:0], y[:0]
        if settings.early_stopping:
            stratify = y if np.bincount(y).min() >= 2 else None
            X, x_val, y, y_val = train_test_split(
                X, y, test_size=settings.validation_fraction, random_state=seed, stratify=stratify
            )
            if len(y_val) < 2:
                raise InvalidValue("the validation set is too small: raise validation_fraction or add data")
        batch_size = settings.batch_size_for(len(y))
        config = settings.config(seed, batch_size)
        names = tuple(str(c) for c in self.classes_)
        data = Dataset(Split(X, y), Split(x_val, y_val), Split(X[:0], y[:0]), "scikit-learn", names)
        if fresh:
            state = new_state(config, data)
            self._initialize(settings)
        else:
            state = self._training(config, incremental)
            if not incremental:
                self._learning_rate = float(settings.learning_rate_init)
        state.config = config
        state.optimizer.l2 = config.l2
        if settings.early_stopping and self.validation_scores_ is None:  # a warm start that turns it on
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        if not settings.early_stopping and self.best_loss_ is None:  # ... or off
            self.best_loss_ = np.inf
        self.n_iter_ = 0
        best_weights = None
        for _ in range(settings.max_iter):
            record = train_epoch(state, data, self._rate(settings, state, len(y)), shuffle=settings.shuffle)
            self.n_iter_ += 1
            self.t_ += len(y)
            self.loss_ = record.train_loss + self._penalty(settings, batch_size, state)
            self.loss_curve_.append(self.loss_)
            if settings.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}", file=sys.stdout)
            if settings.early_stopping:
                score = float(record.val_accuracy)
                self.validation_scores_.append(score)
                if settings.verbose:
                    print(f"Validation score: {score:f}", file=sys.stdout)
                improved = score >= self.best_validation_score_ + settings.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_weights = state.model.state_dict()
            else:
                improved = self.loss_ <= self.best_loss_ - settings.tol
                self.best_loss_ = min(self.best_loss_, self.loss_)
            self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
            if settings.solver == "sgd" and settings.learning_rate == "invscaling":
                self._learning_rate = settings.learning_rate_init / (self.t_ + 1) ** settings.power_t
            if self._no_improvement_count > settings.n_iter_no_change:
                if not self._lower_rate(settings):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == settings.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({settings.max_iter}) reached and the "
                    "optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        if best_weights is not None:
            state.model.load_state_dict(best_weights)
        state.best_state = {}  # the estimator keeps its own best
        self._keep(state)

    def _training(self, config: Any, continuing: bool) -> TrainState:
        """The training state of the fitted attributes: the last call's own if they are still its
        (``_cache``), else rebuilt from them. ``continuing`` (partial_fit): with the optimiser's state
        and the generator; else a new optimiser and generator around the weights, as scikit-learn's
        warm start."""
        cache = self.__dict__.get("_cache")
        if continuing and cache is not None and _same(cache[1], self._attributes()):
            return cache[0]
        model = persist.network(self.coefs_, self.intercepts_, config.dropout)
        rng = np.random.default_rng(config.seed)
        if continuing:
            rng.bit_generator.state = self.rng_state_
        model.draw_from(rng)
        optimizer = build_optimizer(config, model)
        if continuing and self.optimizer_state_ is not None:
            optimizer.load_state_dict(self.optimizer_state_)
        if not continuing:
            return TrainState(config, model, optimizer, rng)
        return TrainState(config, model, optimizer, rng, self.n_epochs_, self.n_steps_)

    def _keep(self, state: TrainState) -> None:
        """The fitted attributes from a training state, after every fit and partial_fit."""
        linears = state.model.of_kind("linear")
        self.coefs_ = [layer.weight.value for layer in linears]
        self.intercepts_ = [layer.bias.value for layer in linears]
        self.optimizer_state_ = state.optimizer.state_dict(copy=False)
        self.rng_state_ = state.rng.bit_generator.state
        self.n_epochs_, self.n_steps_ = state.epoch, state.step
        self._cache = (state, self._attributes())
        self._predictor = state.model
        self._shape()

    def _attributes(self) -> list[Any]:
        """What the cached training state was made from: any of it replaced, the cache is stale."""
        return [*self.coefs_, *self.intercepts_, *(self.optimizer_state_ or {}).values(), self.rng_state_]

    def _shape(self) -> None:
        """The attributes that follow from the weights, after every fit and load."""
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self.coefs_[-1].shape[1]
        self.out_activation_ = "softmax"

    def _predict_from_weights(self) -> None:
        """After a load or an unpickling: the network of the weights, which then are its own."""
        self._predictor = persist.network(self.coefs_, self.intercepts_)
        linears = self._predictor.of_kind("linear")
        self.coefs_ = [layer.weight.value for layer in linears]
        self.intercepts_ = [layer.bias.value for layer in linears]

    def _initialize(self, settings: Settings) -> None:
        """A fresh fit's counters and curves, as scikit-learn's ``_initialize`` sets them."""
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._learning_rate = float(settings.learning_rate_init)
        if settings.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _rate(self, settings: Settings, state: TrainState, n_samples: int) -> LearningRate:
        """The learning rate of every step of the coming epoch."""
        if settings.learning_rate == "cosine":
            steps = steps_per_epoch(state.config, n_samples)
            return Cosine(settings.learning_rate_init, settings.max_iter, state.epoch, steps, state.step)
        lr = self._learning_rate if settings.solver == "sgd" else settings.learning_rate_init
        return Schedule("constant", lr)

    def _lower_rate(self, settings: Settings) -> bool:
        """After n_iter_no_change epochs without improvement: "adaptive" divides the rate by 5 and goes
        on (True) until it would fall below 1e-6; everything else stops (False)."""
        if settings.solver != "sgd" or settings.learning_rate != "adaptive":
            return False
        if self._learning_rate <= ADAPTIVE_FLOOR:
            return False
        self._learning_rate /= 5.0
        if settings.verbose:
            print(f"Setting learning rate to {self._learning_rate:f}", file=sys.stdout)
        return True

    def _penalty(self, settings: Settings, batch_size: int, state: TrainState) -> float:
        """alpha / 2 * ||W||^2 / batch_size, the term scikit-learn's loss_ adds (at the epoch's end)."""
        if not settings.alpha:
            return 0.0
        weights = [layer.weight.value for layer in state.model.of_kind("linear")]
        squares = sum(float(np.dot(w.ravel(), w.ravel())) for w in weights)
        return 0.5 * settings.alpha * squares / batch_size

    def _encode(self, y: np.ndarray) -> np.ndarray:
        classes = self.classes_
        encoded = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
        if not np.array_equal(classes[encoded], y):
            unknown = sorted(set(np.asarray(y).tolist()) - set(classes.tolist()))
            raise InvalidValue(f"y holds labels not in classes: {unknown[:5]}")
        return encoded.astype(np.int64)

    # ---------------------------------------------------------------- predicting

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        probabilities = self._predictor.predict_proba(X).astype(np.float64)  # float64, as scikit-learn's
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # ---------------------------------------------------------------- pickle, files, ONNX

    def __getstate__(self) -> dict[str, Any]:
        """The parameters and the fitted attributes, without what is made from them (the training
        state, the compiled answer): the weights and the optimiser's buffers once each."""
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in ("_cache", "_predictor")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "coefs_" in state:
            self._predict_from_weights()

    def save(self, path: Any) -> None:
        """A fashion-mlp checkpoint (.npz arrays plus JSON, no pickle): the weights, the optimiser's
        state, the classes, the feature names, the settings and the bookkeeping, so that
        ``MLPClassifier.load(path).partial_fit(...)`` continues where this one stopped."""
        persist.save(self, path)

    @classmethod
    def load(cls, path: Any) -> MLPClassifier:
        """Read a file written by ``save``; CheckpointError if it is not one."""
        params, fitted = persist.load(path)
        estimator = cls(**params)
        estimator.__dict__.update(fitted)
        estimator._predict_from_weights()
        estimator._shape()
        return estimator

    def to_onnx(self, path: Any = None) -> Any:
        """The fitted model as an ONNX graph (the exporter of ``fashion-mlp export``): input ``pixels``
        float32 [batch, n_features_in_], used as given; outputs ``probabilities`` float32
        [batch, n_classes] and ``label`` int64 [batch], an index into ``classes_``. The metadata holds
        ``class_names`` (the labels as text) and ``classes`` (JSON, the labels as given). Written
        atomically to ``path`` if given. Needs the onnx extra."""
        check_is_fitted(self, "coefs_")
        return persist.to_onnx(self, path)


def _same(these: list[Any], those: list[Any]) -> bool:
    """Whether two lists hold the very same objects, in order."""
    return len(these) == len(those) and all(a is b for a, b in zip(these, those))


assert set(DEFAULTS) == set(MLPClassifier().get_params()), "params.DEFAULTS lists every parameter"
