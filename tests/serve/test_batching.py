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
from support.serving import CANDIDATE, STABLE


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


class Short:
    """A model that answers one row fewer than it was given."""

    version = "short"
    feature_names = FEATURE_NAMES

    def score(self, vector: Any) -> float:
        return 0.5

    def score_many(self, matrix: Any) -> list[float]:
        return [0.5] * (len(matrix) - 1)


async def test_a_model_answering_the_wrong_number_of_rows_fails_the_batch_not_hangs() -> None:
    batching = BatchingScorer(Short())
    results = await asyncio.wait_for(
        asyncio.gather(
            *(batching.score([0.0] * len(FEATURE_NAMES)) for _ in range(3)),
            return_exceptions=True,
        ),
        timeout=2,
    )
    assert all(isinstance(result, ValueError) for result in results)


class Counting:
    """A model that records how it was called."""

    version = "counting"
    feature_names = FEATURE_NAMES

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, vector: Any) -> float:
        self.calls.append(1)
        return 0.25

    def score_many(self, matrix: Any) -> list[float]:
        self.calls.append(len(matrix))
        return [0.25] * len(matrix)


async def test_a_request_alone_is_scored_at_once_and_others_still_batch() -> None:
    model = Counting()
    batching = BatchingScorer(model)
    row = [0.0] * len(FEATURE_NAMES)
    alone = batching.score(row, alone=True)
    assert alone.done() and alone.result() == 0.25 and model.calls == [1]  # no loop hop
    # a row already queued this turn: one said to be alone joins it rather than overtake it
    queued = batching.score(row)
    joining = batching.score(row, alone=True)
    assert not joining.done()
    assert await asyncio.gather(queued, joining) == [0.25, 0.25]
    assert model.calls == [1, 2]


async def test_a_failing_model_fails_a_request_alone_with_its_error() -> None:
    future = BatchingScorer(Failing()).score([0.0] * len(FEATURE_NAMES), alone=True)
    with pytest.raises(ValueError, match="bad row"):
        await future
