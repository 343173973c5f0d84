"""The engine as scikit-learn's MLPClassifier, under scikit-learn's own parameter names and defaults.

    from fashion_mlp.sklearn import MLPClassifier      # instead of sklearn.neural_network's
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=20).fit(X, y)

- ``params``: the parameters, checked, and what the engine takes for them (no scikit-learn here);
- ``estimator``: the class, scikit-learn's fitting and stopping rules around the engine's epoch;
- ``persist``: pickling, our own files (no pickle) and ONNX, all from one record of training state.

Needs the ``sklearn`` extra: ``pip install 'fashion-mlp[sklearn]'``. docs/sklearn.md compares every
parameter and attribute with scikit-learn's, and shows dask-ml driving it on a cluster.
"""

from ..extras import require

require("sklearn", "sklearn")

from .estimator import MLPClassifier  # noqa: E402

__all__ = ["MLPClassifier"]
