"""The model holder: sticky routing by customer, swaps in one step, shadow mode, refusals."""

from __future__ import annotations

import pytest

from fraudstack.errors import ModelError, ModelNotFound
from fraudstack.routing import RoutingDocument
from fraudstack.serve.models import BUCKETS, ModelHolder, RoutingSpec, customer_bucket
from support.serving import CANDIDATE, STABLE

CUSTOMERS = [str(number) for number in range(10_000)]


@pytest.fixture(scope="module")
def holder(registry_root: str) -> ModelHolder:
    return ModelHolder(registry_root)


def test_buckets_are_stable_and_spread_evenly() -> None:
    buckets = [customer_bucket(customer) for customer in CUSTOMERS]
    assert buckets == [customer_bucket(customer) for customer in CUSTOMERS]
    assert customer_bucket("42") == 1738  # the same in every process and every run
    assert all(0 <= bucket < BUCKETS for bucket in buckets)
    tenth = sum(bucket < BUCKETS // 10 for bucket in buckets) / len(buckets)
    assert tenth == pytest.approx(0.10, abs=0.02)


@pytest.mark.parametrize("share", [0.0, 5.0, 25.0, 50.0, 100.0])
def test_the_candidate_scores_its_share_of_customers(holder: ModelHolder, share: float) -> None:
    routing = holder.apply(RoutingSpec(STABLE, CANDIDATE, share))
    chosen = [routing.scorer_for(customer).version for customer in CUSTOMERS]
    assert chosen.count(CANDIDATE) / len(CUSTOMERS) * 100 == pytest.approx(share, abs=2.0)


def test_a_customer_keeps_its_model_and_a_larger_share_only_adds_customers(
    holder: ModelHolder,
) -> None:
    small = holder.apply(RoutingSpec(STABLE, CANDIDATE, 10.0))
    first = {c for c in CUSTOMERS if small.scorer_for(c).version == CANDIDATE}
    assert first == {c for c in CUSTOMERS if small.scorer_for(c).version == CANDIDATE}
    large = holder.apply(RoutingSpec(STABLE, CANDIDATE, 30.0))
    second = {c for c in CUSTOMERS if large.scorer_for(c).version == CANDIDATE}
    assert first < second


def test_a_swap_is_one_step_and_leaves_earlier_routings_whole(holder: ModelHolder) -> None:
    before = holder.apply(RoutingSpec(STABLE))
    after = holder.apply(RoutingSpec(CANDIDATE))
    assert holder.routing is after
    # a request that read the routing before the swap finishes with the model it started with
    assert before.scorer_for("7").version == STABLE
    assert after.scorer_for("7").version == CANDIDATE
    assert before.stable.scorer.score([0.0] * len(before.stable.feature_names)) >= 0.0


def test_shadow_mode_answers_with_stable_and_scores_the_candidate_aside(
    holder: ModelHolder,
) -> None:
    document = RoutingDocument(
        stable=STABLE,
        candidate=CANDIDATE,
        candidate_share=50.0,
        mode="shadow",
        source="fraudstack/test",
    )
    routing = holder.apply(document)
    assert {routing.scorer_for(c).version for c in CUSTOMERS} == {STABLE}
    shadowed = [c for c in CUSTOMERS if routing.shadow_for(c) is not None]
    assert len(shadowed) / len(CUSTOMERS) == pytest.approx(0.5, abs=0.02)


async def test_a_routing_that_cannot_load_leaves_the_current_one(holder: ModelHolder) -> None:
    current = await holder.apply_async(RoutingSpec(STABLE))
    with pytest.raises(ModelNotFound):
        await holder.apply_async(RoutingSpec(STABLE, "not-published", 10.0))
    assert holder.routing is current
    with pytest.raises(ModelError):
        RoutingSpec(STABLE, None, 10.0)
    with pytest.raises(ModelError):
        RoutingSpec(STABLE, CANDIDATE, 120.0)
