"""Choosing a model from validation scores: ranks over the three metrics, or one metric."""

from __future__ import annotations

import math

import pytest

from fraudstack.train.selection import ALL_METRICS, ranks, select


def _scores(auc: float, ap: float, cp: float) -> dict[str, float]:
    return {"auc_roc": auc, "average_precision": ap, "card_precision_at_100": cp}


def test_best_on_two_metrics_wins_over_a_hair_ahead_on_one() -> None:
    # the figures of the handbook protocol's validation means over seeds 0-4 (fs-v2)
    candidates = {
        "logistic_regression": _scores(0.8747, 0.6596, 0.3004),
        "random_forest": _scores(0.8710, 0.7112, 0.3096),
        "forest_logistic_blend": _scores(0.8797, 0.7111, 0.3114),
    }
    assert select(candidates) == "forest_logistic_blend"
    assert select(candidates, "average_precision") == "random_forest"
    assert select(candidates, "auc_roc") == "forest_logistic_blend"


def test_equal_rank_sums_go_to_the_better_average_precision_then_the_first() -> None:
    candidates = {
        "a": _scores(0.90, 0.60, 0.30),  # ranks 1 + 2 + 2
        "b": _scores(0.80, 0.70, 0.31),  # ranks 2 + 1 + 1: wins
        "c": _scores(0.85, 0.65, 0.29),
    }
    assert select(candidates) == "b"
    tied = {"a": _scores(0.9, 0.6, 0.3), "b": _scores(0.8, 0.7, 0.3)}  # 1+2+1 and 2+1+1
    assert select(tied) == "b"
    same = {"first": _scores(0.9, 0.6, 0.3), "second": _scores(0.9, 0.6, 0.3)}
    assert select(same) == "first"


def test_a_missing_or_nan_score_ranks_last() -> None:
    candidates = {
        "no_frauds_seen": _scores(math.nan, math.nan, 0.5),
        "fine": _scores(0.7, 0.3, 0.2),
    }
    assert select(candidates) == "fine"
    assert select({"partial": {"auc_roc": 0.9}, "full": _scores(0.8, 0.5, 0.2)}) == "full"
    assert ranks([0.5, 0.7, 0.7, -math.inf]) == {0: 3, 1: 1, 2: 1, 3: 4}


def test_bad_rules_and_empty_candidates_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown selection rule"):
        select({"a": _scores(0.9, 0.6, 0.3)}, "accuracy")
    with pytest.raises(ValueError, match="no candidates"):
        select({}, ALL_METRICS)
