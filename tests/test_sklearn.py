"""The scikit-learn estimator: scikit-learn's own checks, Pipeline and GridSearchCV, and our promises."""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the sklearn extra: pip install -e '.[sklearn]'")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fashion_mlp.checkpoint import CheckpointError  # noqa: E402
from fashion_mlp.sklearn import MLPClassifier  # noqa: E402

QUICK = {
    "hidden_sizes": (32,),
    "epochs": 20,
    "batch_size": 16,
    "hardest_of": 1,
    "dropout": 0.0,
    "label_smoothing": 0.0,
    "centre_inputs": False,
    "random_state": 0,
}
EXPECTED_FAILURES: dict = {}


@parametrize_with_checks(
    [MLPClassifier(**QUICK)], legacy=True, expected_failed_checks=lambda e: EXPECTED_FAILURES
)
def test_scikit_learns_own_checks(estimator, check, monkeypatch):
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")  # else scikit-learn skips its array-API input check
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


def test_clone_keeps_the_settings_and_drops_the_fit(digits):
    X, y = digits
    fitted = MLPClassifier(**QUICK).fit(X[:200], y[:200])
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "classes_")


def test_pipeline_inside_grid_search_over_hidden_sizes_and_lr(digits):
    X, y = digits
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(**{**QUICK, "epochs": 8}))])
    grid = GridSearchCV(pipe, {"mlp__hidden_sizes": [(16,), (64,)], "mlp__lr": [0.01, 0.1]}, cv=3)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"mlp__hidden_sizes", "mlp__lr"} and grid.best_score_ > 0.85
    assert len(grid.cv_results_["params"]) == 4


def test_cross_val_score_on_digits(digits):
    X, y = digits
    scores = cross_val_score(Pipeline([("s", StandardScaler()), ("m", MLPClassifier(**QUICK))]), X, y, cv=5)
    assert scores.mean() > 0.9


@pytest.mark.parametrize("kind", ["strings", "minus-one-one", "two", "many"])
def test_labels_of_every_kind(kind):
    X, y = make_classification(n_samples=300, n_features=8, n_informative=6, n_classes=4, random_state=0)
    labels = {
        "strings": np.array(["ant", "bee", "cat", "dog"])[y],
        "minus-one-one": np.where(y % 2, 1, -1),
        "two": np.array(["no", "yes"])[y % 2],
        "many": y * 7 + 3,
    }[kind]
    clf = MLPClassifier(**QUICK).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    predicted = clf.predict(X)
    assert set(predicted) <= set(labels) and (predicted == labels).mean() > 0.6
    assert clf.predict_proba(X).shape == (300, len(np.unique(labels)))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X[:5])), clf.predict_proba(X[:5]))


def test_two_fits_with_one_random_state_predict_alike(digits):
    X, y = digits
    a = MLPClassifier(**{**QUICK, "dropout": 0.2, "hardest_of": 2, "random_state": 3}).fit(X, y)
    b = MLPClassifier(**{**QUICK, "dropout": 0.2, "hardest_of": 2, "random_state": 3}).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_partial_fit_continues_and_its_loss_falls(digits):
    X, y = digits
    X = X / 16
    clf = MLPClassifier(**{**QUICK, "schedule": "constant", "lr": 0.05})
    for _ in range(6):
        clf.partial_fit(X, y, classes=np.arange(10))
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6
    assert clf.loss_curve_[-1] < clf.loss_curve_[2] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :10], y)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**QUICK).partial_fit(X, y)


def test_partial_fit_after_unpickling_continues_the_same_run(digits):
    X, y = digits
    X = X / 16
    a = MLPClassifier(**{**QUICK, "schedule": "constant"})
    for _ in range(2):
        a.partial_fit(X, y, classes=np.arange(10))
    b = pickle.loads(pickle.dumps(a))
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))  # the optimiser state came along


def test_early_stopping_tracks_validation_and_keeps_the_best(digits):
    X, y = digits
    clf = MLPClassifier(**{**QUICK, "epochs": 40, "early_stopping": True, "n_iter_no_change": 3}).fit(
        X / 16, y
    )
    assert (
        len(clf.validation_scores_) == len(clf.validation_loss_curve_) == clf.n_iter_ == len(clf.loss_curve_)
    )
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.85


def test_fitted_attributes_and_feature_names(digits):
    pandas = pytest.importorskip("pandas")
    X, y = digits
    frame = pandas.DataFrame(X, columns=[f"pixel{i}" for i in range(64)])
    clf = MLPClassifier(**QUICK).fit(frame, y)
    assert clf.n_features_in_ == 64 and list(clf.feature_names_in_) == list(frame.columns)
    assert [c.shape for c in clf.coefs_] == [(64, 32), (32, 10)] and [b.shape for b in clf.intercepts_] == [
        (32,),
        (10,),
    ]


def test_the_data_is_never_modified_and_read_only_memmaps_work(digits, tmp_path):
    X, y = digits
    path = tmp_path / "X.npy"
    np.save(path, X.astype(np.float32))
    memmap = np.load(path, mmap_mode="r")
    before = np.array(memmap)
    MLPClassifier(**{**QUICK, "centre_inputs": True}).fit(memmap, y).predict(memmap)
    np.testing.assert_array_equal(memmap, before)


def test_sample_weight_is_not_accepted_rather_than_ignored(digits):
    X, y = digits
    with pytest.raises(TypeError, match="sample_weight"):
        MLPClassifier(**QUICK).fit(X, y, sample_weight=np.ones(len(y)))


def test_settings_are_checked_with_the_packages_messages(digits):
    X, y = digits
    with pytest.raises(ValueError, match="learning rate must be positive"):
        MLPClassifier(**{**QUICK, "lr": -1}).fit(X, y)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        MLPClassifier(**{**QUICK, "lr": float("inf")}).fit(X, y)
    with pytest.raises(ValueError, match="hidden_sizes must be a tuple of integers"):
        MLPClassifier(**{**QUICK, "hidden_sizes": 32}).fit(X, y)


def test_save_and_load_round_trip_without_pickle(digits, tmp_path):
    pandas = pytest.importorskip("pandas")
    X, y = digits
    frame = pandas.DataFrame(X / 16, columns=[f"p{i}" for i in range(64)])
    labels = np.array([f"digit {d}" for d in y])
    clf = MLPClassifier(**{**QUICK, "centre_inputs": True}).fit(frame, labels)
    clf.save(tmp_path / "clf.npz")
    loaded = MLPClassifier.load(tmp_path / "clf.npz")
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    assert list(loaded.feature_names_in_) == list(frame.columns) and loaded.get_params() == clf.get_params()
    from fashion_mlp import checkpoint
    from fashion_mlp.nn import MLP

    # the file says what the estimator applies to X (nothing), so every loader of it answers alike
    plain = checkpoint.load(tmp_path / "clf.npz")
    assert plain.meta["normalisation"] == {"offset": 0.0, "scale": 1.0}
    x = frame.to_numpy(np.float32)
    np.testing.assert_allclose(
        plain.inference().predict_proba(x), clf.predict_proba(frame), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(CheckpointError, match="not a saved MLPClassifier"):
        identity = {"normalisation": {"offset": 0, "scale": 1}}
        checkpoint.save(tmp_path / "plain.npz", MLP([64, 4, 10]), identity)
        MLPClassifier.load(tmp_path / "plain.npz")


def test_a_fitted_estimator_exports_to_onnx(digits, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import json

    import onnx

    X, y = digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    clf = MLPClassifier(**{**QUICK, "centre_inputs": True, "hidden_sizes": (24, 16)}).fit(X / 16, labels)
    clf.to_onnx(tmp_path / "digits.onnx")
    model = onnx.load(str(tmp_path / "digits.onnx"))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == clf.classes_.tolist() == json.loads(props["class_names"])
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 64
    session = ort.InferenceSession(str(tmp_path / "digits.onnx"), providers=["CPUExecutionProvider"])
    probabilities, label = session.run(None, {"pixels": (X / 16).astype(np.float32)})
    np.testing.assert_allclose(probabilities, clf.predict_proba(X / 16), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(clf.classes_[label], clf.predict(X / 16))


def test_the_default_learns_noisy_overlapping_classes():
    """The estimator's default learns from every example: the recipe's hardest third, on data like this
    (label noise, overlapping classes), learned nothing at all in make bench-sklearn."""
    X, y = make_classification(
        n_samples=3000, n_features=20, n_informative=12, n_classes=5, flip_y=0.05, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(hidden_sizes=(128, 128), epochs=10, random_state=0).fit(X[:2400], y[:2400])
    assert clf.get_params()["hardest_of"] == 1 and clf.score(X[2400:], y[2400:]) > 0.6
