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
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.base import ClassifierMixin

# scikit-learn is imported by the functions that need it, so `fraudstack train --help` is fast

#: The model ``fraudstack train`` publishes by default: over simulator seeds 0-4 of the
#: handbook protocol it is the one that beats the book's best on all three metrics (see
#: ``bench/results/model_quality.md``); the others stay available with ``--models``.
BLEND = "forest_logistic_blend"
DEFAULT_MODELS = (BLEND,)
BASELINES = ("logistic_regression", "random_forest", "gradient_boosting")
#: Models compared by the handbook protocol: the book's baselines and the blend.
HANDBOOK_MODELS = ("decision_tree_depth_2", *BASELINES, BLEND)
#: The blend's weights, P(fraud) = 0.5 forest + 0.5 logistic regression, and the forest's
#: smallest leaf: chosen by prequential validation over seeds 0-4 (``fraudstack.train.tuning``,
#: ``bench/results/blend_tuning.md``).
BLEND_WEIGHTS = (0.5, 0.5)
BLEND_MIN_SAMPLES_LEAF = 20


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


def _forest_logistic_blend(seed: int, jobs: int) -> ClassifierMixin:
    from sklearn.ensemble import RandomForestClassifier, VotingClassifier

    # The forest ranks the frauds it has seen patterns of; the linear term adds a smooth
    # ordering by the amount ratios and terminal risks, which trees cut into steps. Leaves of
    # at least 20 rows and balanced bootstrap samples keep the forest's probabilities from
    # collapsing to 0/1 on the 1 % of frauds, so the two average well.
    forest = RandomForestClassifier(
        n_estimators=200,
        min_samples_leaf=BLEND_MIN_SAMPLES_LEAF,
        class_weight="balanced_subsample",
        n_jobs=jobs,
        random_state=seed,
    )
    return VotingClassifier(
        [("forest", forest), ("logistic", _logistic_regression(seed, jobs))],
        voting="soft",
        weights=np.asarray(BLEND_WEIGHTS),  # an array: skl2onnx sums them
        flatten_transform=False,  # what skl2onnx converts
    )


MODELS: dict[str, Callable[[int, int], ClassifierMixin]] = {
    "logistic_regression": _logistic_regression,
    "decision_tree_depth_2": _decision_tree_depth_2,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    BLEND: _forest_logistic_blend,
}


def build(name: str, seed: int = 0, jobs: int = 2) -> ClassifierMixin:
    """A fresh, unfitted candidate."""
    try:
        return MODELS[name](seed, jobs)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}") from None


def signature(name: str) -> dict[str, Any]:
    """A candidate's hyperparameters as JSON values (the run's seed and thread count left out):
    equal signatures fit the same model on the same data and seed."""
    params = build(name, seed=0, jobs=1).get_params(deep=True)
    return {
        key: value if isinstance(value, bool | int | float | str | None) else repr(value)
        for key, value in sorted(params.items())
        if key.rsplit("__", 1)[-1] not in ("random_state", "n_jobs")
        and not _holds_estimators(value)  # members: their own parameters are listed
    }


def _holds_estimators(value: Any) -> bool:
    if hasattr(value, "get_params"):
        return True
    return isinstance(value, list) and any(
        isinstance(item, tuple) and hasattr(item[-1], "get_params") for item in value
    )


def fit(
    name: str, features: np.ndarray, target: np.ndarray, seed: int = 0, jobs: int = 2
) -> ClassifierMixin:
    """Fit a candidate and make it float32-exact (see the module docstring)."""
    model = build(name, seed, jobs)
    model.fit(features, target)
    make_float32_exact(model)
    _single_threaded(model)
    return model


def _single_threaded(model: ClassifierMixin) -> None:
    """The pickled model scores one row per request: a thread pool per call costs ms."""
    if "n_jobs" in model.get_params(deep=False):
        model.set_params(n_jobs=None)
    for member in getattr(final_estimator(model), "estimators_", []):
        if hasattr(member, "get_params"):  # a voting ensemble's fitted members
            _single_threaded(member)


def final_estimator(model: ClassifierMixin) -> ClassifierMixin:
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        last: ClassifierMixin = model.steps[-1][1]
        return last
    return model


def make_float32_exact(model: ClassifierMixin) -> None:
    """Lower each tree threshold to the largest float32 not above it (decisions unchanged)."""
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        RandomForestClassifier,
        VotingClassifier,
    )
    from sklearn.tree import DecisionTreeClassifier

    estimator = final_estimator(model)
    if isinstance(estimator, VotingClassifier):
        for member in estimator.estimators_:
            make_float32_exact(member)
        return
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
