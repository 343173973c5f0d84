"""The estimator's state outside the process: pickling (for scikit-learn, joblib and dask), our own
files (a checkpoint, no pickle) and ONNX.

Both pickling and files carry one record of training state: ``TrainState.record()`` (JSON) with the
model's and the optimiser's named arrays. Nothing else: no cached activation, no float64 copy for
predicting, no second copy of the weights in ``coefs_``; those are rebuilt on arrival.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checkpoint
from ..config import TrainConfig
from ..files import atomic_write_bytes
from ..nn import CENTRE_MEAN, MLP, Dropout
from ..train import TrainState, build_model, build_optimizer
from .params import check, translate_old

if TYPE_CHECKING:
    from .estimator import MLPClassifier

FORMAT = "fashion-mlp-sklearn"
# Fitted bookkeeping saved with a file (pickling keeps the whole __dict__ anyway).
BOOKKEEPING = ("loss_curve_", "n_iter_", "t_", "loss_", "best_loss_", "validation_scores_",
               "best_validation_score_", "_no_improvement_count", "_learning_rate")  # fmt: skip
REBUILT = ("_state", "_exact", "coefs_", "intercepts_")  # never pickled: made again from the record


def around(model: MLP, config: TrainConfig) -> TrainState:
    """A new training state for weights we already have: a fresh optimiser and generator."""
    rng = np.random.default_rng(config.seed)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.rng = rng
    return TrainState(config, model, build_optimizer(config, model), rng)


def pack(state: TrainState) -> dict[str, Any]:
    return {
        "record": state.record(),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "sizes": list(state.model.sizes),
    }


def unpack(packed: dict[str, Any]) -> TrainState:
    """The training state ``pack`` described, the model rebuilt from its config and sizes."""
    record, arrays, sizes = packed["record"], packed["model"], packed["sizes"]
    model = _rebuild(TrainConfig.from_record(record["config"]), arrays, sizes)
    return TrainState.restore(record, model, packed["optimizer"])


def _rebuild(config: TrainConfig, arrays: dict[str, np.ndarray], sizes: list[int]) -> MLP:
    mean = arrays.get(CENTRE_MEAN)  # only in files saved before the estimator stopped centring
    config = config.replace(centre_inputs=mean is not None, hidden_sizes=tuple(sizes[1:-1]))
    model = build_model(config, np.random.default_rng(config.seed), mean, sizes[0], sizes[-1])
    model.load_state_dict(arrays)
    return model


def getstate(estimator: MLPClassifier) -> dict[str, Any]:
    state = {k: v for k, v in estimator.__dict__.items() if k not in REBUILT}
    train_state = estimator.__dict__.get("_state")
    if train_state is not None:
        state["_packed"] = pack(train_state)
    return state


def setstate(estimator: MLPClassifier, state: dict[str, Any]) -> None:
    state = dict(state)
    packed = state.pop("_packed", None)
    estimator.__dict__.update(state)
    if packed is not None:
        estimator._state = unpack(packed)
        estimator._fitted()


def as_dtype(model: MLP, dtype: type) -> MLP:
    """The model itself if it is in ``dtype``, else a copy of its weights, biases and input mean in it."""
    if model.linears[0].weight.value.dtype == dtype:
        return model
    mean = None if model.centre is None else model.centre.mean
    copy = MLP(model.sizes, dtype=dtype, input_mean=mean)
    copy.load_state_dict(model.state_dict())
    return copy


def save(estimator: MLPClassifier, path: str | Path) -> None:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "coefs_")
    state: TrainState = estimator._state
    classes = estimator.classes_
    names = getattr(estimator, "feature_names_in_", None)
    meta = {
        "estimator": FORMAT,
        "normalisation": {"offset": 0.0, "scale": 1.0},  # the estimator takes X as it is
        "class_names": [str(c) for c in classes],
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "feature_names": None if names is None else names.tolist(),
        "params": _jsonable(estimator.get_params()),
        "fitted": {k: _finite(getattr(estimator, k, None)) for k in BOOKKEEPING},
        "train_state": state.record(),
    }
    checkpoint.save(path, state.model, meta, state.optimizer.state_dict())


def load(cls: type[MLPClassifier], path: str | Path) -> MLPClassifier:
    loaded = checkpoint.load(path)
    meta = loaded.meta
    if meta.get("estimator") != FORMAT:
        raise checkpoint.CheckpointError(f"{path}: a fashion-mlp checkpoint, but not a saved MLPClassifier")
    model = loaded.model
    try:
        params = translate_old(dict(meta["params"]))
        if isinstance(params.get("hidden_layer_sizes"), list):
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        estimator = cls(**params)
        settings = check(estimator.get_params())  # a file's settings are checked as a caller's are
        classes = np.array(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        if len(classes) != model.sizes[-1]:
            raise ValueError(f"{len(classes)} classes for {model.sizes[-1]} outputs")
        if classes.ndim != 1 or not np.array_equal(np.unique(classes), classes):
            raise ValueError("the classes are not distinct and sorted")
        names = meta.get("feature_names")
        if names is not None and (not isinstance(names, list) or len(names) != model.sizes[0]):
            raise ValueError(f"feature_names must list the {model.sizes[0]} features")
        arrays = model.state_dict()
        if "train_state" in meta and loaded.optimizer_state:
            record = meta["train_state"]
            rebuilt = _rebuild(TrainConfig.from_record(record["config"]), arrays, model.sizes)
            estimator._state = TrainState.restore(record, rebuilt, loaded.optimizer_state)
        else:  # saved before the file held the optimiser: training continues from the weights
            config = settings.config(0, settings.batch_size_for(10**9))
            estimator._state = around(_rebuild(config, arrays, model.sizes), config)
        fitted = meta.get(
            "fitted", {"loss_curve_": meta.get("loss_curve", []), "n_iter_": meta.get("n_iter", 0)}
        )
        for key in BOOKKEEPING:
            value = fitted.get(key)
            setattr(estimator, key, list(value) if isinstance(value, list) else value)
        estimator.classes_ = classes
        estimator.n_features_in_ = model.sizes[0]
        if names is not None:
            estimator.feature_names_in_ = np.array(names, dtype=object)
        _defaults(estimator)
        estimator._fitted()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as err:
        raise checkpoint.CheckpointError(f"{path}: its estimator metadata is damaged ({err!r})") from None
    return estimator


def _defaults(estimator: MLPClassifier) -> None:
    """Bookkeeping a file may not hold (older files), at what a fresh fit would have."""
    settings = {"loss_curve_": [], "n_iter_": 0, "t_": 0, "_no_improvement_count": 0,
                "_learning_rate": float(estimator.learning_rate_init)}  # fmt: skip
    for key, value in settings.items():
        if getattr(estimator, key, None) is None:
            setattr(estimator, key, value)
    if estimator.best_loss_ is None and not estimator.early_stopping:
        estimator.best_loss_ = min(estimator.loss_curve_, default=np.inf)


def to_onnx(estimator: MLPClassifier, path: str | Path | None) -> Any:
    from ..export import to_onnx as export

    n = estimator.n_features_in_
    names = getattr(estimator, "feature_names_in_", None)
    shown = "" if names is None else " (" + ", ".join(names[:3]) + ", ...)"
    description = f"pixels: float32 [batch, {n}], the estimator's features as given{shown}"
    labels = [str(c) for c in estimator.classes_]
    model = export(as_dtype(estimator._model(), np.float32), labels, None, description)
    model.metadata_props.add(key="classes", value=json.dumps(estimator.classes_.tolist()))
    if path is not None:
        atomic_write_bytes(Path(path), model.SerializeToString())
    return model


def _finite(value: Any) -> Any:
    """JSON holds no infinity: a best score not yet set is saved as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


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
