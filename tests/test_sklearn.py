"""The scikit-learn estimator: scikit-learn's own checks, Pipeline and GridSearchCV, and our promises."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the sklearn extra: pip install -e '.[sklearn]'")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fashion_mlp.checkpoint import CheckpointError  # noqa: E402
from fashion_mlp.sklearn import MLPClassifier  # noqa: E402

# Short fits on purpose: scikit-learn's warning that max_iter came before convergence is expected.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
QUICK = {"hidden_layer_sizes": (32,), "max_iter": 20, "batch_size": 16, "random_state": 0}
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
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(**{**QUICK, "max_iter": 8}))])
    grid = {"mlp__hidden_layer_sizes": [(16,), (64,)], "mlp__learning_rate_init": [0.001, 0.01]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert set(grid.best_params_) == {"mlp__hidden_layer_sizes", "mlp__learning_rate_init"}
    assert grid.best_score_ > 0.85
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


@pytest.mark.parametrize(
    "settings",
    [
        {"learning_rate_init": 0.001},
        {"solver": "sgd", "learning_rate_init": 0.01},
        {"solver": "sgd", "learning_rate": "invscaling", "learning_rate_init": 1.0},
    ],
    ids=["adam", "sgd", "sgd-invscaling"],
)
def test_fifty_partial_fits_keep_learning(digits, settings):
    """Every call changes the weights, however many there are, and the loss falls (the cosine schedule
    of old reached 0 after `epochs` calls and froze the weights)."""
    X, y = digits
    X = X / 16
    clf = MLPClassifier(hidden_layer_sizes=(32,), batch_size=20, random_state=0, **settings)
    before = None
    for call in range(50):
        chunk = slice(call % 8 * 200, call % 8 * 200 + 200)
        clf.partial_fit(X[chunk], y[chunk], classes=np.arange(10))
        if before is not None:
            assert not np.array_equal(clf.coefs_[0], before), f"call {call + 1} changed nothing"
        before = clf.coefs_[0].copy()
    assert clf.n_iter_ == 1 and clf.t_ == 50 * 200 and len(clf.loss_curve_) == 50  # as scikit-learn's
    assert np.mean(clf.loss_curve_[-10:]) < np.mean(clf.loss_curve_[:10]) - 0.3
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :10], y)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**QUICK).partial_fit(X, y)
    with pytest.raises(ValueError, match="is not the same as on the last call"):
        clf.partial_fit(X, y, classes=np.arange(11))


def _nudged(clf, X, y):
    """partial_fit with a learning rate too small to move the weights visibly."""
    clf.set_params(learning_rate_init=1e-9)
    return clf.partial_fit(X, y)


def test_fit_then_partial_fit_continues_from_the_fitted_weights(digits):
    X, y = digits
    X = X / 16
    clf = MLPClassifier(**QUICK).fit(X, y)
    weights, score = [c.copy() for c in clf.coefs_], clf.score(X, y)
    _nudged(clf, X, y)
    for before, after in zip(weights, clf.coefs_):
        assert not np.array_equal(before, after)
        np.testing.assert_allclose(after, before, atol=1e-6)
    assert clf.score(X, y) == pytest.approx(score, abs=0.002) and score > 0.95


def test_load_then_partial_fit_continues_the_saved_run(digits, tmp_path):
    """The file keeps the optimiser's state and generator too: a loaded estimator's next partial_fit is
    the very step the saved one would have taken."""
    X, y = digits
    X = X / 16
    clf = MLPClassifier(**{**QUICK, "solver": "sgd", "learning_rate_init": 0.05})
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.arange(10))
    clf.save(tmp_path / "clf.npz")
    loaded = MLPClassifier.load(tmp_path / "clf.npz")
    assert loaded.t_ == clf.t_ and loaded.loss_curve_ == clf.loss_curve_
    clf.partial_fit(X, y)
    loaded.partial_fit(X, y)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    weights = [c.copy() for c in loaded.coefs_]
    _nudged(MLPClassifier.load(tmp_path / "clf.npz"), X, y)  # from the file's weights, not fresh ones
    for before, after in zip(weights, MLPClassifier.load(tmp_path / "clf.npz").coefs_):
        assert np.abs(before - after).max() < 0.5


def test_a_file_saved_under_the_old_parameter_names_loads_and_trains(digits, tmp_path):
    """Before it took scikit-learn's names, the estimator saved hidden_sizes, epochs, lr, l2, ... and
    no optimiser state; such a file still predicts as saved and trains on."""
    from fashion_mlp import checkpoint
    from fashion_mlp.nn import MLP

    X, y = digits
    model = MLP([64, 16, 10], np.random.default_rng(0), input_mean=(X / 16).mean(axis=0))
    old = {"hidden_sizes": [16], "epochs": 5, "lr": 0.05, "l2": 1e-4, "batch_size": 32,
           "optimizer": "sgd", "schedule": "cosine", "decay": 0.0, "init": "he", "centre_inputs": True,
           "random_state": 0}  # fmt: skip
    meta = {"estimator": "fashion-mlp-sklearn", "normalisation": {"offset": 0.0, "scale": 1.0},
            "class_names": [str(c) for c in range(10)], "classes": list(range(10)), "classes_dtype": "<i8",
            "feature_names": None, "params": old, "loss_curve": [2.0], "n_iter": 1}  # fmt: skip
    checkpoint.save(tmp_path / "old.npz", model, meta)
    clf = MLPClassifier.load(tmp_path / "old.npz")
    assert clf.get_params()["hidden_layer_sizes"] == (16,) and clf.get_params()["max_iter"] == 5
    assert clf.alpha == pytest.approx(1e-4 * 32) and clf.solver == "sgd"
    np.testing.assert_allclose(clf.predict_proba(X / 16), model.predict_proba(X / 16), rtol=1e-5)
    for _ in range(5):
        clf.partial_fit(X / 16, y)
    assert clf.score(X / 16, y) > 0.8


def test_partial_fit_after_unpickling_continues_the_same_run(digits):
    X, y = digits
    X = X / 16
    a = MLPClassifier(**QUICK)
    for _ in range(2):
        a.partial_fit(X, y, classes=np.arange(10))
    b = pickle.loads(pickle.dumps(a))
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))  # the optimiser state came along


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_the_fitted_attributes_are_the_whole_state(digits, solver):
    """Copies of every fitted attribute, put in place of the originals, continue the run exactly as
    the originals do: nothing the next partial_fit needs lives anywhere else."""
    X, y = digits
    X = X / 16
    settings = {**QUICK, "solver": solver, "dropout": 0.2, "learning_rate": "cosine", "max_iter": 5}
    a, b = MLPClassifier(**settings), MLPClassifier(**settings)
    for clf in (a, b):
        clf.partial_fit(X, y, classes=np.arange(10))
    assert a.coefs_[0] is not b.coefs_[0] and set(a.optimizer_state_) > {"steps"}
    b.coefs_ = [c.copy() for c in b.coefs_]
    b.intercepts_ = [c.copy() for c in b.intercepts_]
    b.optimizer_state_ = {k: v.copy() for k, v in b.optimizer_state_.items()}
    b.rng_state_ = dict(b.rng_state_)
    for clf in (a, b):
        clf.partial_fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.n_epochs_ == b.n_epochs_ == 2 and a.n_steps_ == b.n_steps_ == 2 * -(-len(X) // 16)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_pickle_holds_the_weights_and_optimiser_state_and_nothing_more(solver):
    """Not the last batch's activations, not a float64 copy for predicting, not coefs_ twice."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3000, 300)).astype(np.float32), rng.integers(0, 10, 3000)
    clf = MLPClassifier(hidden_layer_sizes=(512, 512), solver=solver, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    clf.predict_proba(X)  # a prediction leaves nothing behind either
    weights = sum(c.nbytes + b.nbytes for c, b in zip(clf.coefs_, clf.intercepts_))
    buffers = 1 if solver == "sgd" else 2  # velocity; or Adam's two moments
    size = len(pickle.dumps(clf))
    assert weights * (1 + buffers) < size < weights * (1 + buffers) + 64 * 1024
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X[:50]), clf.predict_proba(X[:50]))


def test_early_stopping_tracks_validation_and_keeps_the_best(digits):
    X, y = digits
    clf = MLPClassifier(**{**QUICK, "max_iter": 40, "early_stopping": True, "n_iter_no_change": 3})
    clf.fit(X / 16, y)
    assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.loss_curve_) < 40 and clf.best_loss_ is None
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.85
    assert clf.score(X / 16, y) > 0.9
    clf.set_params(early_stopping=False).fit(X / 16, y)  # a fit without it leaves none of its results
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        clf.set_params(early_stopping=True).partial_fit(X, y)


def test_early_stopping_on_700000_rows():
    """The validation set is the data's fraction, not a share of Fashion-MNIST's 60,000."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((700_000, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), batch_size=2000, max_iter=3, early_stopping=True,
                        learning_rate_init=0.01, random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert len(clf.validation_scores_) == 3 and clf.best_validation_score_ > 0.98
    assert clf.t_ == 3 * 630_000


def test_warm_start_continues_the_weights_and_the_curves(digits):
    X, y = digits
    clf = MLPClassifier(**{**QUICK, "max_iter": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X / 16, y)
        weights = [c.copy() for c in clf.coefs_]
        clf.set_params(warm_start=True, max_iter=1, learning_rate_init=1e-9).fit(X / 16, y)
    assert len(clf.loss_curve_) == 6 and clf.n_iter_ == 1 and clf.t_ == 6 * len(y)
    for before, after in zip(weights, clf.coefs_):
        np.testing.assert_allclose(after, before, atol=1e-6)
    with pytest.raises(ValueError, match="warm_start can only be used where y has the same classes"):
        clf.fit(X / 16, y % 5)


def test_adaptive_divides_the_rate_by_five_when_the_loss_stalls(digits):
    """scikit-learn's "adaptive": after n_iter_no_change + 1 epochs that do not improve the loss by tol,
    the rate is divided by 5, and training stops once it is at or below 1e-6: as scikit-learn's own."""
    from sklearn.neural_network import MLPClassifier as Theirs

    X, y = digits
    params = {**QUICK, "solver": "sgd", "learning_rate": "adaptive", "learning_rate_init": 0.1,
              "tol": 10.0, "n_iter_no_change": 1, "max_iter": 100}  # fmt: skip
    ours = MLPClassifier(**params).fit(X / 16, y)  # tol 10: no epoch improves, the rate drops every other
    theirs = Theirs(**params).fit(X / 16, y)
    assert ours._learning_rate == pytest.approx(0.1 / 5**8) == theirs._optimizer.learning_rate
    assert ours.n_iter_ == theirs.n_iter_ == 19


def test_fitted_attributes_and_feature_names(digits):
    pandas = pytest.importorskip("pandas")
    X, y = digits
    frame = pandas.DataFrame(X, columns=[f"pixel{i}" for i in range(64)])
    clf = MLPClassifier(**QUICK).fit(frame, y)
    assert clf.n_features_in_ == 64 and list(clf.feature_names_in_) == list(frame.columns)
    assert [c.shape for c in clf.coefs_] == [(64, 32), (32, 10)]
    assert [b.shape for b in clf.intercepts_] == [(32,), (10,)]
    assert (clf.n_layers_, clf.n_outputs_, clf.out_activation_) == (3, 10, "softmax")
    assert clf.t_ == clf.n_iter_ * len(y) and clf.loss_ == clf.loss_curve_[-1]


SCRIPT = """
import warnings
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from {module} import MLPClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16, y, random_state=0)
results = {{}}
for name, params in {{
    "default": dict(random_state=0),
    "sgd": dict(solver="sgd", learning_rate_init=0.05, momentum=0.9, nesterovs_momentum=True,
                alpha=1e-3, batch_size=64, max_iter=30, random_state=0),
    "invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, power_t=0.25,
                       max_iter=30, random_state=0),
    "early": dict(hidden_layer_sizes=(64, 32), early_stopping=True, validation_fraction=0.2,
                  n_iter_no_change=5, tol=1e-3, random_state=0),
}}.items():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(**params).fit(X_train, y_train)
    results[name] = dict(
        score=clf.score(X_test, y_test), n_iter=clf.n_iter_, t=clf.t_, curve=len(clf.loss_curve_),
        loss=clf.loss_, best_loss=clf.best_loss_, validation=clf.validation_scores_,
        best_validation=clf.best_validation_score_, layers=clf.n_layers_, outputs=clf.n_outputs_,
        activation=clf.out_activation_, shapes=[c.shape for c in clf.coefs_],
        proba=clf.predict_proba(X_test[:3]).shape, classes=clf.classes_.tolist(),
    )
clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0)
for _ in range(10):
    for start in range(0, len(X_train), 300):
        clf.partial_fit(X_train[start:start + 300], y_train[start:start + 300], classes=np.arange(10))
results["partial"] = dict(score=clf.score(X_test, y_test), n_iter=clf.n_iter_, t=clf.t_,
                          curve=len(clf.loss_curve_))
"""


def test_one_script_runs_against_both_classes_changing_only_the_import():
    ran = {}
    for module in ("sklearn.neural_network", "fashion_mlp.sklearn"):
        scope: dict = {}
        exec(SCRIPT.format(module=module), scope)
        ran[module] = scope["results"]
    theirs, ours = ran["sklearn.neural_network"], ran["fashion_mlp.sklearn"]
    for name in theirs:
        a, b = theirs[name], ours[name]
        assert b["score"] >= a["score"] - 0.03, (name, a["score"], b["score"])
        assert b["curve"] == b["n_iter"] or name == "partial"
        for key in ("t", "n_iter") if name != "early" else ():
            assert b[key] == a[key] or a["n_iter"] < 30, (name, key, a[key], b[key])  # stopped early: tol
        for key in ("layers", "outputs", "activation", "shapes", "proba", "classes"):
            assert b.get(key) == a.get(key), (name, key)
        if name == "early":
            assert b["best_loss"] is None and a["best_loss"] is None
            assert len(b["validation"]) == b["n_iter"] and b["best_validation"] == max(b["validation"])
        elif name != "partial":
            assert b["validation"] is None and b["best_validation"] is None
            assert b["best_loss"] == pytest.approx(min(b["loss"], b["best_loss"]))


def test_the_data_is_never_modified_and_read_only_memmaps_work(digits, tmp_path):
    X, y = digits
    path = tmp_path / "X.npy"
    np.save(path, X.astype(np.float32))
    memmap = np.load(path, mmap_mode="r")
    before = np.array(memmap)
    MLPClassifier(**QUICK).fit(memmap, y).predict(memmap)
    np.testing.assert_array_equal(memmap, before)


def test_sample_weight_is_not_accepted_rather_than_ignored(digits):
    X, y = digits
    with pytest.raises(TypeError, match="sample_weight"):
        MLPClassifier(**QUICK).fit(X, y, sample_weight=np.ones(len(y)))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"activation": "tanh"}, "activation must be 'relu', got 'tanh'"),
        ({"solver": "lbfgs"}, "solver 'lbfgs' is not implemented"),
        ({"learning_rate_init": -1}, "learning_rate_init must be a number > 0, got -1"),
        ({"alpha": "x"}, "alpha must be a number >= 0"),
        ({"hidden_layer_sizes": (32, 0)}, r"hidden_layer_sizes must be > 0, got \[32, 0\]"),
        ({"hidden_layer_sizes": "32"}, "hidden_layer_sizes must be an integer or a tuple"),
        ({"batch_size": 0}, "batch_size must be 'auto' or an integer >= 1"),
        ({"learning_rate": "step"}, "learning_rate must be one of constant, invscaling, adaptive, cosine"),
        ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
        ({"shuffle": 1}, "shuffle must be True or False"),
    ],
)
def test_settings_are_checked_with_the_packages_messages(digits, params, message):
    X, y = digits
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**{**QUICK, **params}).fit(X, y)


def test_hidden_layer_sizes_as_scikit_learn_takes_them(digits):
    X, y = digits
    clf = MLPClassifier(**{**QUICK, "hidden_layer_sizes": 12}).fit(X / 16, y)
    assert [c.shape for c in clf.coefs_] == [(64, 12), (12, 10)]
    clf = MLPClassifier(**{**QUICK, "hidden_layer_sizes": np.array([12, 6]), "verbose": 0}).fit(X / 16, y)
    assert [c.shape for c in clf.coefs_] == [(64, 12), (12, 6), (6, 10)]


def test_cosine_is_a_schedule_with_an_end(digits):
    """Ours: from learning_rate_init to 0 over max_iter calls of partial_fit; after that, nothing moves."""
    X, y = digits
    clf = MLPClassifier(**{**QUICK, "learning_rate": "cosine", "max_iter": 3, "learning_rate_init": 0.01})
    for _ in range(3):
        clf.partial_fit(X / 16, y, classes=np.arange(10))
    before = [c.copy() for c in clf.coefs_]
    clf.partial_fit(X / 16, y)
    for a, b in zip(before, clf.coefs_):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_round_trip_without_pickle(digits, tmp_path):
    pandas = pytest.importorskip("pandas")
    X, y = digits
    frame = pandas.DataFrame(X / 16, columns=[f"p{i}" for i in range(64)])
    labels = np.array([f"digit {d}" for d in y])
    clf = MLPClassifier(**QUICK).fit(frame, labels)
    clf.save(tmp_path / "clf.npz")
    loaded = MLPClassifier.load(tmp_path / "clf.npz")
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    assert list(loaded.feature_names_in_) == list(frame.columns) and loaded.get_params() == clf.get_params()
    for key in ("n_iter_", "t_", "loss_", "best_loss_", "loss_curve_", "n_layers_", "n_outputs_"):
        assert getattr(loaded, key) == getattr(clf, key), key
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
    clf = MLPClassifier(**{**QUICK, "hidden_layer_sizes": (24, 16)}).fit(X / 16, labels)
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


def test_our_additions_learn_noisy_overlapping_classes():
    """The hardest third is off by default: on data like this (label noise, overlapping classes), the
    Fashion-MNIST recipe's hardest third learned nothing at all in make bench-sklearn."""
    X, y = make_classification(
        n_samples=3000, n_features=20, n_informative=12, n_classes=5, flip_y=0.05, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(hidden_layer_sizes=(128, 128), max_iter=10, dropout=0.2, label_smoothing=0.05,
                        random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:2400], y[:2400])
    assert clf.get_params()["hardest_of"] == 1 and clf.score(X[2400:], y[2400:]) > 0.6


def test_verbose_prints_what_scikit_learn_prints(digits, capsys):
    X, y = digits
    MLPClassifier(**{**QUICK, "max_iter": 2, "early_stopping": True, "verbose": True}).fit(X / 16, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Iteration 1, loss = ") and lines[1].startswith("Validation score: ")
    assert len(lines) == 4
