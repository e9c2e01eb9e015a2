"""The ONNX export gives scikit-learn's probabilities, for every model family, to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.scoring import Scorer
from fraudstack.train.dataset import LabelledSet
from fraudstack.train.export import max_difference, to_onnx
from fraudstack.train.models import HANDBOOK_MODELS, final_estimator

from .conftest import model_metadata


@pytest.mark.parametrize("name", HANDBOOK_MODELS)
def test_onnx_equals_scikit_learn(name: str, fitted: dict, labelled: LabelledSet) -> None:
    model = fitted[name]
    onnx_model = to_onnx(model, len(FEATURE_NAMES))
    # every transaction of the simulation: far more rows than the model was fitted on
    assert max_difference(model, onnx_model, labelled.features) <= 1e-5


@pytest.mark.parametrize(
    "name", ["decision_tree_depth_2", "random_forest", "gradient_boosting", "forest_logistic_blend"]
)
def test_tree_thresholds_are_float32_values(name: str, fitted: dict) -> None:
    estimator = final_estimator(fitted[name])
    if name == "forest_logistic_blend":
        estimator = estimator.estimators_[0]  # its forest
    trees = [estimator] if hasattr(estimator, "tree_") else list(np.ravel(estimator.estimators_))
    for tree in trees:
        split = tree.tree_.children_left != -1
        thresholds = tree.tree_.threshold[split]
        assert np.array_equal(thresholds.astype(np.float32).astype(np.float64), thresholds)


def test_scorer_single_row_equals_batch_and_scikit_learn(
    fitted: dict, labelled: LabelledSet
) -> None:
    model = fitted["gradient_boosting"]
    scorer = Scorer(
        to_onnx(model, len(FEATURE_NAMES)), model_metadata("v-test", "gradient_boosting")
    )
    rows = labelled.features[:500]
    batch = scorer.score_many(rows)
    single = np.array([scorer.score(list(row)) for row in rows])
    assert np.array_equal(single.astype(np.float32), batch)
    np.testing.assert_allclose(batch, model.predict_proba(rows)[:, 1], atol=1e-5)
    with pytest.raises(ValueError):
        scorer.score_many(rows[:, :5])
