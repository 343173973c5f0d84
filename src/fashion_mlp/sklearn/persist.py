"""The estimator's state in a file: our own checkpoint (no pickle), and ONNX.

The estimator's state is its fitted attributes, as in scikit-learn's ``neural_network``: the weights
(``coefs_``, ``intercepts_``), the optimiser's state (``optimizer_state_``), the generator that draws
its shuffles and dropout masks (``rng_state_``), and the counters and curves. This module works from
those alone, and from the parameters (``get_params``): it knows nothing of the estimator's class, so
the estimator imports it and not the other way round. Pickling needs nothing from here: the
attributes are plain arrays, lists and numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint
from ..files import atomic_write_bytes
from ..nn import CENTRE_MEAN, Network, mlp_records
from .params import DEFAULTS, check, translate_old

FORMAT = "fashion-mlp-sklearn"
# The fitted attributes a file keeps in its metadata; the weights and optimiser state are its arrays.
BOOKKEEPING = ("loss_curve_", "n_iter_", "t_", "loss_", "best_loss_", "validation_scores_",
               "best_validation_score_", "_no_improvement_count", "_learning_rate")  # fmt: skip


def network(
    coefs: list[np.ndarray], intercepts: list[np.ndarray], dropout: float = 0.0, dtype: type = np.float32
) -> Network:
    """The fully connected network of these weights and biases, in ``dtype``."""
    sizes = [coefs[0].shape[0], *(c.shape[1] for c in coefs)]
    model = Network(mlp_records(sizes, dropout), sizes[0], dtype=dtype)
    for layer, weight, bias in zip(model.of_kind("linear"), coefs, intercepts):
        layer.weight.value[...] = weight
        layer.bias.value[...] = bias
    return model


def save(estimator: Any, path: str | Path) -> None:
    """The fitted attributes as a checkpoint: the network of ``coefs_`` and ``intercepts_``, the
    optimiser's state as its arrays, and the rest as JSON."""
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
        "train_state": {
            "epoch": estimator.n_epochs_,
            "step": estimator.n_steps_,
            "rng_state": estimator.rng_state_,
        },
    }
    model = network(estimator.coefs_, estimator.intercepts_, float(estimator.dropout))
    checkpoint.save(path, model, meta, estimator.optimizer_state_)


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters and the fitted attributes a file written by ``save`` holds, read once; a
    CheckpointError if it is not one. Files from before keep working: the parameters under the
    estimator's old names, no optimiser state (training then continues from the weights with a fresh
    optimiser), and an input mean to subtract (folded into the first layer's bias)."""
    loaded = checkpoint.load(path)
    meta, model = loaded.meta, loaded.model
    if meta.get("estimator") != FORMAT:
        raise checkpoint.CheckpointError(f"{path}: a fashion-mlp checkpoint, but not a saved MLPClassifier")
    try:
        params = translate_old(dict(meta["params"]))
        if isinstance(params.get("hidden_layer_sizes"), list):
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        check({**DEFAULTS, **params})  # a file's settings are checked as a caller's are
        fitted = _fitted(meta, model, params)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as err:
        raise checkpoint.CheckpointError(f"{path}: its estimator metadata is damaged ({err!r})") from None
    fitted["optimizer_state_"] = loaded.optimizer_state or None
    return params, fitted


def _fitted(meta: dict[str, Any], model: Network, params: dict[str, Any]) -> dict[str, Any]:
    classes = np.array(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
    if len(classes) != model.n_classes:
        raise ValueError(f"{len(classes)} classes for {model.n_classes} outputs")
    if classes.ndim != 1 or not np.array_equal(np.unique(classes), classes):
        raise ValueError("the classes are not distinct and sorted")
    names = meta.get("feature_names")
    if names is not None and (not isinstance(names, list) or len(names) != model.n_inputs):
        raise ValueError(f"feature_names must list the {model.n_inputs} features")
    linears = model.of_kind("linear")
    coefs = [layer.weight.value for layer in linears]
    intercepts = [layer.bias.value for layer in linears]
    if model.centre is not None:  # saved before the estimator stopped centring: b - mean @ W
        mean = model.state_dict()[CENTRE_MEAN].astype(np.float64)
        intercepts[0] = (intercepts[0] - mean @ coefs[0].astype(np.float64)).astype(intercepts[0].dtype)
    train = meta.get("train_state", {})  # none: training continues from seed 0, as a warm start
    rng_state = train.get("rng_state") or np.random.default_rng(0).bit_generator.state
    fitted: dict[str, Any] = {
        "coefs_": coefs,
        "intercepts_": intercepts,
        "n_epochs_": int(train.get("epoch", 0)),
        "n_steps_": int(train.get("step", 0)),
        "rng_state_": rng_state,
        "classes_": classes,
        "n_features_in_": model.n_inputs,
    }
    if names is not None:
        fitted["feature_names_in_"] = np.array(names, dtype=object)
    saved = meta.get("fitted", {"loss_curve_": meta.get("loss_curve", []), "n_iter_": meta.get("n_iter", 0)})
    for key in BOOKKEEPING:
        value = saved.get(key)
        fitted[key] = list(value) if isinstance(value, list) else value
    # Bookkeeping an older file may not hold, at what a fresh fit would have.
    fresh = {"loss_curve_": [], "n_iter_": 0, "t_": 0, "_no_improvement_count": 0,
             "_learning_rate": float(params.get("learning_rate_init", 0.001))}  # fmt: skip
    fitted.update({k: v for k, v in fresh.items() if fitted.get(k) is None})
    if fitted["best_loss_"] is None and not params.get("early_stopping", False):
        fitted["best_loss_"] = min(fitted["loss_curve_"], default=np.inf)
    return fitted


def to_onnx(estimator: Any, path: str | Path | None) -> Any:
    from ..export import to_onnx as export

    n = estimator.n_features_in_
    names = getattr(estimator, "feature_names_in_", None)
    shown = "" if names is None else " (" + ", ".join(names[:3]) + ", ...)"
    description = f"pixels: float32 [batch, {n}], the estimator's features as given{shown}"
    labels = [str(c) for c in estimator.classes_]
    model = export(network(estimator.coefs_, estimator.intercepts_), labels, None, description)
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
