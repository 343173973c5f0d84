"""The engine as a scikit-learn classifier: any numeric data, scikit-learn's conventions outside,
``train()`` inside.

    from fashion_mlp.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_sizes=(256,), epochs=20).fit(X, y)

``__init__`` only stores the settings; ``fit`` validates them (with the package's own messages, through
``TrainConfig``) and the data (with scikit-learn's ``validate_data``), encodes the labels, and calls
``train``. Fitted state ends in ``_``. Predictions run in float64 so that a row's answer does not depend
on the batch it came in. Needs the ``sklearn`` extra: ``pip install 'fashion-mlp[sklearn]'``.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from .extras import require

require("sklearn", "sklearn")

from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402
from sklearn.utils.multiclass import check_classification_targets  # noqa: E402
from sklearn.utils.validation import check_is_fitted, validate_data  # noqa: E402

from . import checkpoint  # noqa: E402
from .config import TrainConfig, field_names  # noqa: E402
from .data import Dataset, Split  # noqa: E402
from .errors import InvalidValue  # noqa: E402
from .nn import MLP  # noqa: E402
from .train import TrainState, new_state, train  # noqa: E402

ESTIMATOR_FORMAT = "fashion-mlp-sklearn"
_DEFAULTS = TrainConfig()


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron classifier trained by fashion-mlp's from-scratch NumPy engine.

    The training settings keep their ``TrainConfig`` names and defaults (our Fashion-MNIST recipe),
    except ``hardest_of``, 1 here: learning only from the hardest third of each step's examples is the
    recipe's speed-up on Fashion-MNIST, but on data with label noise and overlapping classes it can
    learn nothing (make_classification's 200,000 samples: 0.106 test accuracy; docs/sklearn.md):
    ``hidden_sizes``, ``epochs``, ``batch_size``, ``optimizer`` ("sgd" or "adam"), ``lr``, ``momentum``,
    ``nesterov``, ``schedule``, ``decay``, ``warmup_epochs``, ``l2``, ``dropout``, ``input_dropout``,
    ``label_smoothing``, ``hardest_of``, ``init``, ``centre_inputs``. Inputs are used as given: put a
    ``StandardScaler`` before it in a ``Pipeline`` for data on other scales.

    ``early_stopping``: hold ``validation_fraction`` of the training data out (stratified), score it
    every epoch, stop after ``n_iter_no_change`` epochs without a better accuracy, and keep the best
    epoch's weights. ``random_state`` seeds the initialisation, shuffling, dropout and that split.
    ``verbose``: one line per epoch on stderr.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (when X has column
    names), ``loss_curve_`` (mean training loss per epoch), ``validation_scores_`` and
    ``validation_loss_curve_`` (with early stopping), ``best_validation_score_``, ``n_iter_``,
    ``coefs_`` and ``intercepts_`` (each layer's weights (in, out) and biases).
    """

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = _DEFAULTS.hidden_sizes,
        epochs: int = _DEFAULTS.epochs,
        batch_size: int = _DEFAULTS.batch_size,
        optimizer: str = _DEFAULTS.optimizer,
        lr: float = _DEFAULTS.lr,
        momentum: float = _DEFAULTS.momentum,
        nesterov: bool = _DEFAULTS.nesterov,
        schedule: str = _DEFAULTS.schedule,
        decay: float = _DEFAULTS.decay,
        warmup_epochs: float = _DEFAULTS.warmup_epochs,
        l2: float = _DEFAULTS.l2,
        dropout: float = _DEFAULTS.dropout,
        input_dropout: float = _DEFAULTS.input_dropout,
        label_smoothing: float = _DEFAULTS.label_smoothing,
        hardest_of: int = 1,
        init: str = _DEFAULTS.init,
        centre_inputs: bool = _DEFAULTS.centre_inputs,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.schedule = schedule
        self.decay = decay
        self.warmup_epochs = warmup_epochs
        self.l2 = l2
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.label_smoothing = label_smoothing
        self.hardest_of = hardest_of
        self.init = init
        self.centre_inputs = centre_inputs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.verbose = verbose

    # ---------------------------------------------------------------- scikit-learn's conventions

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.non_deterministic = False
        return tags

    def _config(self, epochs: int, seed: int, patience: int = 0, val_size: int = 0) -> TrainConfig:
        """The settings as a TrainConfig, which validates them with the package's messages."""
        if not isinstance(self.hidden_sizes, (tuple, list)) or not all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) for h in self.hidden_sizes
        ):
            raise InvalidValue(f"hidden_sizes must be a tuple of integers, got {self.hidden_sizes!r}")
        params = self.get_params()
        values = {name: params[name] for name in field_names() if name in params}
        values.update(hidden_sizes=tuple(int(h) for h in self.hidden_sizes), epochs=epochs, seed=seed)
        values.update(patience=patience, val_size=val_size, augment=False)
        return TrainConfig.from_dict(values, source=type(self).__name__)

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _encode(self, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
        encoded = np.searchsorted(classes, y)
        encoded = np.minimum(encoded, len(classes) - 1)
        if not np.array_equal(classes[encoded], y):
            unknown = sorted(set(np.asarray(y).tolist()) - set(classes.tolist()))
            raise InvalidValue(f"y holds labels not in classes: {unknown[:5]}")
        return encoded.astype(np.int64)

    # ---------------------------------------------------------------- fitting

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train from scratch for ``epochs`` (or until early stopping)."""
        X, y = validate_data(self, X, y, dtype=np.float32, reset=True)
        check_classification_targets(y)
        self.__dict__.pop("_state_arrays", None)  # a fit starts over, even after unpickling
        self.classes_ = np.unique(y)
        labels = self._encode(y, self.classes_)
        seed = self._seed()
        if not isinstance(self.early_stopping, bool):
            raise InvalidValue(f"early_stopping must be True or False, got {self.early_stopping!r}")
        if self.early_stopping:
            if not (isinstance(self.validation_fraction, numbers.Real) and 0 < self.validation_fraction < 1):
                raise InvalidValue(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
            if not (isinstance(self.n_iter_no_change, numbers.Integral) and self.n_iter_no_change >= 1):
                raise InvalidValue(
                    f"n_iter_no_change must be a positive integer, got {self.n_iter_no_change!r}"
                )
            stratify = labels if np.bincount(labels).min() >= 2 else None
            x_train, x_val, y_train, y_val = train_test_split(
                X, labels, test_size=self.validation_fraction, random_state=seed, stratify=stratify
            )
            config = self._config(self.epochs, seed, int(self.n_iter_no_change), val_size=len(y_val))
        else:
            x_train, y_train, x_val, y_val = X, labels, X[:0], labels[:0]
            config = self._config(self.epochs, seed)
        dataset = self._dataset(x_train, y_train, x_val, y_val)
        self._state = train(config, dataset, self._callbacks(), new_state(config, dataset))
        self._fitted_from(self._state, dataset)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One more epoch over (X, y), continuing the same weights and optimiser state. The first call
        needs ``classes`` (every label there will be), unless ``fit`` came first."""
        first = not hasattr(self, "_state") and "_state_arrays" not in self.__dict__
        X, y = validate_data(self, X, y, dtype=np.float32, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise InvalidValue("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(np.asarray(classes))
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise InvalidValue(f"classes {np.unique(classes)} differ from the earlier {self.classes_}")
        labels = self._encode(y, self.classes_)
        dataset = self._dataset(X, labels, X[:0], labels[:0])
        if first:
            self._state = new_state(self._config(self.epochs, self._seed()), dataset)
        state = self._resumable_state()
        self._state = train(state.config, dataset, self._callbacks(), state, until_epoch=state.epoch + 1)
        self._fitted_from(self._state, dataset)
        return self

    # ---------------------------------------------------------------- pickling (joblib) works too

    def __getstate__(self) -> dict[str, Any]:
        """The training state as plain arrays: the optimiser's buffers are views that pickle would
        otherwise split from the weights they update."""
        state = self.__dict__.copy()
        train_state = state.pop("_state", None)
        if train_state is not None:
            state["_state_arrays"] = {
                "config": train_state.config.to_dict(),
                "model": train_state.model.state_dict(),
                "sizes": train_state.model.sizes,
                "optimizer": train_state.optimizer.state_dict(),
                "rng": train_state.rng.bit_generator.state,
                "counters": (
                    train_state.epoch,
                    train_state.step,
                    train_state.best_accuracy,
                    train_state.best_epoch,
                ),
                "history": train_state.history,
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _resumable_state(self) -> TrainState:
        """The live TrainState, rebuilt from plain arrays after unpickling."""
        packed = self.__dict__.pop("_state_arrays", None)
        if packed is not None:
            from .train import build_model, build_optimizer

            config = TrainConfig.from_dict(
                {**packed["config"], "hidden_sizes": tuple(packed["config"]["hidden_sizes"])}
            )
            sizes = packed["sizes"]
            mean = packed["model"].get("centre.mean")
            model = build_model(config, np.random.default_rng(), mean, sizes[0], sizes[-1])
            model.load_state_dict(packed["model"])
            rng = np.random.default_rng()
            rng.bit_generator.state = packed["rng"]
            for layer in model.layers:
                if hasattr(layer, "rng"):
                    layer.rng = rng
            optimizer = build_optimizer(config, model)
            optimizer.load_state_dict(packed["optimizer"])
            epoch, step, best_accuracy, best_epoch = packed["counters"]
            self._state = TrainState(
                config,
                model,
                optimizer,
                rng,
                epoch,
                step,
                best_accuracy,
                best_epoch,
                model.state_dict(),
                list(packed["history"]),
            )
        return self._state

    def _dataset(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Dataset:
        names = tuple(str(c) for c in self.classes_)
        empty = Split(x[:0], y[:0])
        return Dataset(Split(x, y), Split(x_val, y_val), empty, "scikit-learn", names)

    def _callbacks(self) -> list[Any]:
        if not self.verbose:
            return []
        import sys

        from .train import Callback

        class Verbose(Callback):
            def on_epoch_end(self, state: TrainState, record: Any, improved: bool) -> None:
                val = (
                    f", validation accuracy {record.val_accuracy:.4f}"
                    if record.val_accuracy is not None
                    else ""
                )
                print(f"epoch {record.epoch}: loss {record.train_loss:.4f}{val}", file=sys.stderr)

        return [Verbose()]

    def _fitted_from(self, state: TrainState, dataset: Dataset) -> None:
        history = state.history
        self.loss_curve_ = [r.train_loss for r in history]
        self.n_iter_ = state.epoch
        if len(dataset.val):
            self.validation_scores_ = [r.val_accuracy for r in history]
            self.validation_loss_curve_ = [r.val_loss for r in history]
            self.best_validation_score_ = max(self.validation_scores_)
        self._set_predictor(state.model)

    def _set_predictor(self, model: MLP) -> None:
        self.coefs_ = [layer.weight.value.copy() for layer in model.linears]
        self.intercepts_ = [layer.bias.value.copy() for layer in model.linears]
        # float64 for predicting: a row's probabilities must not depend on its batch
        self._exact = _as_dtype(model, np.float64)

    # ---------------------------------------------------------------- predicting

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "_exact")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        probabilities = self._exact.predict_proba(np.asarray(X, dtype=np.float64))
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "_exact")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # ---------------------------------------------------------------- ONNX, through the package's exporter

    def to_onnx(self, path: str | Path | None = None) -> Any:
        """The fitted model as an ONNX graph (the same exporter as ``fashion-mlp export``): input
        ``pixels`` float32 [batch, n_features_in_], used as given; outputs ``probabilities`` float32
        [batch, n_classes] and ``label`` int64 [batch], an index into ``classes_``. The metadata holds
        ``class_names`` (the labels as text) and ``classes`` (JSON, the labels as given). Written
        atomically to ``path`` if given. Needs the onnx extra."""
        from .export import to_onnx
        from .files import atomic_write_bytes

        check_is_fitted(self, "_exact")
        n = self.n_features_in_
        names = ", ".join(self.feature_names_in_[:3]) + ", ..." if hasattr(self, "feature_names_in_") else ""
        description = f"pixels: float32 [batch, {n}], the estimator's features as given" + (
            f" ({names})" if names else ""
        )
        labels = [str(c) for c in self.classes_]
        model = to_onnx(_as_dtype(self._exact, np.float32), labels, None, description)
        model.metadata_props.add(key="classes", value=json.dumps(self.classes_.tolist()))
        if path is not None:
            atomic_write_bytes(Path(path), model.SerializeToString())
        return model

    # ---------------------------------------------------------------- persistence without pickle

    def save(self, path: str | Path) -> None:
        """Write the fitted model as a fashion-mlp checkpoint (.npz arrays + JSON, no pickle), with
        the classes, the feature names and the settings in its metadata."""
        check_is_fitted(self, "_exact")
        classes = self.classes_
        meta = {
            "estimator": ESTIMATOR_FORMAT,
            "normalisation": {"offset": 0.0, "scale": 1.0},  # the estimator takes X as it is
            "class_names": [str(c) for c in classes],
            "classes": classes.tolist(),
            "classes_dtype": classes.dtype.str,
            "feature_names": None
            if not hasattr(self, "feature_names_in_")
            else self.feature_names_in_.tolist(),
            "params": _jsonable(self.get_params()),
            "loss_curve": self.loss_curve_,
            "n_iter": self.n_iter_,
        }
        model = (
            self._resumable_state().model
            if hasattr(self, "_state") or hasattr(self, "_state_arrays")
            else self._exact
        )
        checkpoint.save(path, _as_dtype(model, np.float32), meta)

    @classmethod
    def load(cls, path: str | Path) -> MLPClassifier:
        """Read a file written by ``save``; CheckpointError if it is not one."""
        loaded = checkpoint.load(path)
        meta = loaded.meta
        if meta.get("estimator") != ESTIMATOR_FORMAT:
            raise checkpoint.CheckpointError(
                f"{path}: a fashion-mlp checkpoint, but not a saved MLPClassifier"
            )
        try:
            params = dict(meta["params"])
            if isinstance(params.get("hidden_sizes"), list):
                params["hidden_sizes"] = tuple(params["hidden_sizes"])
            estimator = cls(**params)
            classes = np.array(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        except (KeyError, TypeError, ValueError) as err:
            raise checkpoint.CheckpointError(f"{path}: its estimator metadata is damaged ({err})") from None
        if len(classes) != loaded.model.sizes[-1]:
            raise checkpoint.CheckpointError(
                f"{path}: {len(classes)} classes for {loaded.model.sizes[-1]} outputs"
            )
        estimator.classes_ = classes
        estimator.n_features_in_ = loaded.model.sizes[0]
        if meta.get("feature_names") is not None:
            estimator.feature_names_in_ = np.array(meta["feature_names"], dtype=object)
        estimator.loss_curve_ = list(meta.get("loss_curve", []))
        estimator.n_iter_ = int(meta.get("n_iter", 0))
        estimator._set_predictor(loaded.model)
        return estimator


def _as_dtype(model: MLP, dtype: type) -> MLP:
    """The model itself if it is in ``dtype``, else a copy of its weights, biases and input mean in it."""
    if model.linears[0].weight.value.dtype == dtype:
        return model
    mean = None if model.centre is None else model.centre.mean
    copy = MLP(model.sizes, dtype=dtype, input_mean=mean)
    copy.load_state_dict(model.state_dict())
    return copy


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if isinstance(value, np.random.RandomState):
            value = None  # a generator's state is not a setting; the saved weights already fix the model
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        json.dumps(value)  # raises for anything else that JSON cannot hold
        out[key] = value
    return out
