"""Card Precision@k and the handbook split, on cases small enough to check by hand."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from fraudstack.train.dataset import LabelledSet
from fraudstack.train.evaluate import card_precision_at_k, evaluate
from fraudstack.train.handbook import TRAIN_START, fold_starts, split


def test_card_precision_ranks_cards_by_their_best_score_and_drops_detected_cards() -> None:
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    card = np.array([1, 1, 2, 3, 1, 2, 3])
    score = np.array([0.1, 0.9, 0.8, 0.2, 0.95, 0.5, 0.4])
    fraud = np.array([0, 1, 0, 0, 1, 0, 1])
    # day 0: top 2 = cards 1 (0.9, fraud) and 2 (0.8): 1/2. Day 1: card 1 detected before,
    # so cards 2 and 3 are ranked: card 3 is a fraud: 1/2.
    assert card_precision_at_k(day, card, score, fraud, k=2) == 0.5
    assert card_precision_at_k(day, card, score, fraud, k=1) == 0.5  # day 0: 1/1, day 1: 0/1
    metrics = evaluate(fraud, score, day, card, k=2)
    assert metrics["card_precision_at_100"] == 0.5 and 0 < metrics["auc_roc"] <= 1


def _set(day_offsets: list[int], customers: list[int], frauds: list[int]) -> LabelledSet:
    first = (TRAIN_START - date(1970, 1, 1)).days
    ts = (first + np.array(day_offsets, dtype=np.int64)) * 86_400_000 + 3_600_000
    return LabelledSet(
        txn_id=np.array([str(i) for i in range(len(ts))], dtype=object),
        ts=ts,
        customer=np.array(customers, dtype=np.int64),
        features=np.zeros((len(ts), 2)),
        is_fraud=np.array(frauds, dtype=bool),
    )


def test_split_removes_known_compromised_cards_from_each_test_day() -> None:
    data = _set(
        # card 1: fraud in training; card 2: fraud on day 7 (first delay day); card 3 clean
        day_offsets=[0, 7, 14, 14, 14, 15, 15, 15, 20],
        customers=[1, 2, 1, 2, 3, 1, 2, 3, 2],
        frauds=[1, 1, 0, 0, 0, 0, 0, 0, 0],
    )
    train, test = split(data, TRAIN_START)
    assert list(train.customer) == [1]
    # day 14: card 1 known (training); card 2's fraud (day 7) is known from day 15 on
    assert sorted(zip(test.day - test.day.min(), test.customer, strict=True)) == [
        (0, 2),
        (0, 3),
        (1, 3),
    ]


def test_validation_folds_never_touch_the_test_week() -> None:
    starts = fold_starts(3)
    assert starts[0] == date(2018, 7, 11)
    assert [starts[0] - start for start in starts] == [timedelta(days=7 * n) for n in range(3)]
    # the latest fold validates on the test split's training week, as in the book (ch. 5.2)
    test_start = TRAIN_START + timedelta(days=14)
    assert all(start + timedelta(days=21) <= test_start for start in starts)
    assert starts[0] + timedelta(days=14) == TRAIN_START
