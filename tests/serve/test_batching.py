"""Dynamic batching gives every request the probability it would get alone (trees exactly; a
linear model to float32 rounding, as onnxruntime's matrix kernels sum in another order)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.scoring import load_scorer
from fraudstack.serve.batching import BatchingScorer

from .conftest import CANDIDATE, STABLE


@pytest.mark.parametrize("version", [STABLE, CANDIDATE])
async def test_rows_scored_together_get_their_own_probabilities(
    registry_root: str, offline_features: pa.Table, version: str
) -> None:
    scorer = load_scorer(registry_root, version)
    matrix = np.column_stack([offline_features[name].to_numpy() for name in FEATURE_NAMES])
    rows = [row.tolist() for row in matrix[:150]]
    batching = BatchingScorer(scorer, max_batch=64)
    together = await asyncio.gather(*(batching.score(row) for row in rows))
    assert together == pytest.approx([scorer.score(row) for row in rows], abs=1e-6, rel=0)
    assert await batching.score(rows[0]) == scorer.score(rows[0])  # a batch of one
    alone = batching.score(rows[1], alone=True)
    assert alone.done()  # scored at once, no event-loop hop
    assert await alone == scorer.score(rows[1])


class Failing:
    version = "failing"
    feature_names = FEATURE_NAMES

    def score(self, vector: Any) -> float:
        raise ValueError("bad row")

    def score_many(self, matrix: Any) -> list[float]:
        raise ValueError("bad batch")


async def test_a_failing_model_fails_every_request_of_the_batch() -> None:
    batching = BatchingScorer(Failing())
    results = await asyncio.gather(
        *(batching.score([0.0] * len(FEATURE_NAMES)) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, ValueError) for result in results)


async def test_a_lone_request_that_fails_gets_the_failure() -> None:
    batching = BatchingScorer(Failing())
    with pytest.raises(ValueError, match="bad row"):
        await batching.score([0.0] * len(FEATURE_NAMES), alone=True)


async def test_a_lone_request_still_joins_a_batch_already_waiting() -> None:
    batching = BatchingScorer(Counting())
    first = batching.score([0.0] * len(FEATURE_NAMES))
    second = batching.score([1.0] * len(FEATURE_NAMES), alone=True)
    assert not second.done()
    assert await asyncio.gather(first, second) == [0.0, 1.0]
    assert batching.scorer.batches == [2]


class Counting:
    """Answers each row's first value and records the size of every model call."""

    version = "counting"
    feature_names = FEATURE_NAMES

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, vector: Any) -> float:
        self.batches.append(1)
        return float(vector[0])

    def score_many(self, matrix: Any) -> list[float]:
        self.batches.append(len(matrix))
        return [float(row[0]) for row in matrix]
