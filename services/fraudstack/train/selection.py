"""Choosing one model from the candidates' validation scores.

A fraud model is judged on three numbers: AUC ROC (the ranking of all transactions), average
precision (the ranking at the top, where investigators look) and Card Precision@100 (the cards
a team of investigators can check in a day). Picking on one of them alone lets a model that
leads that one by a hair win over a model that is clearly better on the other two.

The default rule, :data:`ALL_METRICS`, ranks the candidates on each of the three validation
scores (1 for the best; equal scores share a rank; a missing or NaN score ranks last), adds the
three ranks and picks the lowest sum; a tie goes to the better validation average precision,
then to the candidate named first. A metric's name instead picks the best on that metric alone.
Only validation scores are ever given here: the test period never chooses a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

METRICS = ("auc_roc", "average_precision", "card_precision_at_100")
#: The default rule: the lowest sum of ranks over :data:`METRICS`.
ALL_METRICS = "all"
#: What ``--select-by`` accepts.
RULES = (ALL_METRICS, *METRICS)
TIE_BREAK = "average_precision"


def describe(rule: str) -> str:
    """The rule in words, for reports and model metadata."""
    if rule == ALL_METRICS:
        return (
            "lowest sum of ranks on validation AUC ROC, average precision and Card Precision@100"
            f" (ties: the better {TIE_BREAK})"
        )
    return f"best validation {rule}"


def select(candidates: Mapping[str, Mapping[str, Any]], rule: str = ALL_METRICS) -> str:
    """The name of the candidate the rule picks, from each candidate's validation scores."""
    if not candidates:
        raise ValueError("no candidates to select from")
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; one of {', '.join(RULES)}")
    names = list(candidates)
    if rule != ALL_METRICS:
        return max(names, key=lambda name: _score(candidates[name], rule))
    totals = {name: 0 for name in names}
    for metric in METRICS:
        for name, rank in ranks([_score(candidates[n], metric) for n in names]).items():
            totals[names[name]] += rank
    return min(
        names,
        key=lambda name: (totals[name], -_score(candidates[name], TIE_BREAK), names.index(name)),
    )


def ranks(scores: Sequence[float]) -> dict[int, int]:
    """Each score's rank by position: 1 plus the number of strictly better scores."""
    return {index: 1 + sum(other > score for other in scores) for index, score in enumerate(scores)}


def _score(scores: Mapping[str, Any], metric: str) -> float:
    value = scores.get(metric)
    if value is None or math.isnan(value):
        return -math.inf
    return float(value)
