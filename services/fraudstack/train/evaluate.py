"""Fraud-detection metrics: AUC ROC, average precision and Card Precision@k.

Card Precision@k follows the Fraud Detection Handbook (ch. 4.4): for each day, rank the cards
(customers) by their highest score of the day, take the top ``k``, count those with a fraud that
day and divide by ``k``; a card detected on an earlier day is no longer ranked (it has been
blocked); the result is the mean over the days.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score

Floats = npt.NDArray[np.floating]
Ints = npt.NDArray[np.integer]


class Scores(TypedDict):
    auc_roc: float
    average_precision: float
    card_precision_at_100: float


def card_precision_at_k(
    day: Ints, card: Ints, score: Floats, is_fraud: npt.ArrayLike, k: int = 100
) -> float:
    """Mean daily share of frauded cards among the ``k`` highest-scored cards (see module)."""
    fraud = np.asarray(is_fraud).astype(bool)
    detected: set[int] = set()
    daily = []
    for this_day in np.unique(day):
        on_day = day == this_day
        cards, inverse = np.unique(card[on_day], return_inverse=True)
        best = np.full(len(cards), -np.inf)
        np.maximum.at(best, inverse, score[on_day])
        frauded = np.zeros(len(cards), dtype=bool)
        np.logical_or.at(frauded, inverse, fraud[on_day])
        candidates = np.array([int(item) not in detected for item in cards], dtype=bool)
        cards, best, frauded = cards[candidates], best[candidates], frauded[candidates]
        top = np.argsort(-best, kind="stable")[:k]
        hits = cards[top][frauded[top]]
        daily.append(len(hits) / k)
        detected.update(int(item) for item in hits)
    return float(np.mean(daily)) if daily else float("nan")


def evaluate(is_fraud: npt.ArrayLike, score: Floats, day: Ints, card: Ints, k: int = 100) -> Scores:
    """The three metrics of the handbook protocol for one set of predictions."""
    truth = np.asarray(is_fraud).astype(np.int8)
    both_classes = 0 < truth.sum() < len(truth)
    return Scores(
        auc_roc=float(roc_auc_score(truth, score)) if both_classes else float("nan"),
        average_precision=(
            float(average_precision_score(truth, score)) if both_classes else float("nan")
        ),
        card_precision_at_100=card_precision_at_k(day, card, score, truth, k),
    )
