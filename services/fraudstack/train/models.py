"""The candidate models, and what makes their ONNX export exact.

Every candidate exports to ONNX with skl2onnx. The gradient-boosted model is scikit-learn's
``GradientBoostingClassifier``: ``HistGradientBoostingClassifier`` does not convert with the
skl2onnx of this scikit-learn, and its bin thresholds are compared to float64 inputs, which a
float32 ONNX graph cannot reproduce exactly.

Float32 exactness of trees: scikit-learn trees compare the float32 value of a feature with a
float64 threshold (a midpoint between two float32 values), while the ONNX tree ensembles store
thresholds as float32, and rounding a midpoint to float32 can flip ``x <= threshold`` for a
value equal to the rounded threshold. :func:`make_float32_exact` lowers every threshold to the
largest float32 not above it: no float32 lies in between, so scikit-learn's decisions do not
change at all, and the ONNX graph then holds the very same thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.base import ClassifierMixin

# scikit-learn is imported by the functions that need it, so `fraudstack train --help` is fast

#: Models compared by ``fraudstack train``; the handbook protocol adds the book's baselines.
DEFAULT_MODELS = ("logistic_regression", "random_forest", "gradient_boosting")
HANDBOOK_MODELS = ("decision_tree_depth_2", *DEFAULT_MODELS)


def _logistic_regression(seed: int, jobs: int) -> ClassifierMixin:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000, random_state=seed))


def _decision_tree_depth_2(seed: int, jobs: int) -> ClassifierMixin:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=2, random_state=seed)


def _random_forest(seed: int, jobs: int) -> ClassifierMixin:
    from sklearn.ensemble import RandomForestClassifier

    # the book's forest: 100 fully grown trees
    return RandomForestClassifier(n_estimators=100, n_jobs=jobs, random_state=seed)


def _gradient_boosting(seed: int, jobs: int) -> ClassifierMixin:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(
        n_estimators=100, max_depth=3, learning_rate=0.1, random_state=seed
    )


MODELS: dict[str, Callable[[int, int], ClassifierMixin]] = {
    "logistic_regression": _logistic_regression,
    "decision_tree_depth_2": _decision_tree_depth_2,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
}


def build(name: str, seed: int = 0, jobs: int = 2) -> ClassifierMixin:
    """A fresh, unfitted candidate."""
    try:
        return MODELS[name](seed, jobs)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}") from None


def fit(
    name: str, features: np.ndarray, target: np.ndarray, seed: int = 0, jobs: int = 2
) -> ClassifierMixin:
    """Fit a candidate and make it float32-exact (see the module docstring)."""
    model = build(name, seed, jobs)
    model.fit(features, target)
    make_float32_exact(model)
    if "n_jobs" in model.get_params():
        # the pickled model scores one row per request: a thread pool per call costs ms
        model.set_params(n_jobs=None)
    return model


def final_estimator(model: ClassifierMixin) -> ClassifierMixin:
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        last: ClassifierMixin = model.steps[-1][1]
        return last
    return model


def make_float32_exact(model: ClassifierMixin) -> None:
    """Lower each tree threshold to the largest float32 not above it (decisions unchanged)."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    estimator = final_estimator(model)
    if isinstance(estimator, DecisionTreeClassifier):
        trees = [estimator]
    elif isinstance(estimator, RandomForestClassifier | GradientBoostingClassifier):
        trees = list(np.ravel(estimator.estimators_))
    else:
        return
    for tree in trees:
        thresholds = tree.tree_.threshold  # a view on the tree's nodes: edited in place
        split = tree.tree_.children_left != -1
        rounded = thresholds.astype(np.float32)
        too_high = rounded.astype(np.float64) > thresholds
        rounded[too_high] = np.nextafter(rounded[too_high], np.float32(-np.inf))
        thresholds[split] = rounded[split].astype(np.float64)
