"""The estimator on a dask cluster: dask-ml's Incremental feeds our partial_fit block by block from a
dask array, and GridSearchCV fits on the cluster through joblib's dask backend. A real LocalCluster
with two worker processes on 127.0.0.1: the estimator crosses process boundaries by pickle."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the sklearn extra: pip install -e '.[dask]'")
da = pytest.importorskip("dask.array", reason="the dask extra: pip install -e '.[dask]'")
distributed = pytest.importorskip("distributed", reason="the dask extra: pip install -e '.[dask]'")
wrappers = pytest.importorskip("dask_ml.wrappers", reason="the dask extra: pip install -e '.[dask]'")

import joblib  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from fashion_mlp.sklearn import MLPClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32), y


def test_incremental_trains_over_the_blocks_of_a_dask_array(client, digits):
    X, y = digits
    dX, dy = da.from_array(X[:1500], chunks=250), da.from_array(y[:1500], chunks=250)
    clf = MLPClassifier(hidden_layer_sizes=(32,), batch_size=25, learning_rate_init=0.005, random_state=0)
    model = wrappers.Incremental(clf, scoring="accuracy", random_state=0)  # the blocks' order, seeded
    scores, curves = [], []
    for _ in range(4):  # four passes over the six blocks: 24 calls of partial_fit on the workers
        model.partial_fit(dX, dy, classes=np.arange(10))
        scores.append(model.score(da.from_array(X[1500:], chunks=150), da.from_array(y[1500:], chunks=150)))
        curves.append(list(model.estimator_.loss_curve_))
    fitted = model.estimator_
    assert isinstance(fitted, MLPClassifier) and fitted.t_ == 4 * 1500 and len(fitted.loss_curve_) == 24
    assert curves[-1][: len(curves[0])] == curves[0]  # each pass continued the one before
    assert min(scores[2:]) > scores[0] and scores[-1] > 0.85, scores
    assert client.run(lambda: True)  # the workers are alive after it all


def test_grid_search_fits_on_the_cluster_through_joblibs_dask_backend(client, digits):
    X, y = digits
    grid = GridSearchCV(
        MLPClassifier(max_iter=15, learning_rate_init=0.01, random_state=0),
        {"hidden_layer_sizes": [(16,), (64,)], "alpha": [1e-4, 1e-2]},
        cv=3,
    )

    def executed():
        return client.run(lambda dask_worker: dask_worker.state.executed_count)

    before = executed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with joblib.parallel_backend("dask"):
            grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4 and grid.best_score_ > 0.9
    assert isinstance(grid.best_estimator_, MLPClassifier)
    after = executed()
    assert len(after) == 2 and all(after[w] > before[w] for w in after), (before, after)  # both fitted
