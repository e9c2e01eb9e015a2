"""The ``inference_score`` histogram: the fraud probability each model gave, by ``model_version``,
as the operator's score-drift gate (``fraudmodel_operator.gates``) reads it."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraudmodel_operator.gates import score_drift
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.routing import RoutingDocument
from fraudstack.scoring import load_scorer
from fraudstack.serve.app import create_app
from fraudstack.serve.metrics import SCORE_BUCKETS, ServeMetrics
from support.serving import CANDIDATE, STABLE, serve_settings

from .test_app import BrokenScorer

# the bucket bounds themselves (a bound is inclusive), both ends, and a little either side
PROBABILITIES = [0.0, 0.01, 0.05, 0.0500001, 0.1, 0.15, 0.5, 0.77, 0.95, 0.99, 1.0]


def score_buckets(text: bytes) -> dict[str, dict[float, float]]:
    """``inference_score_bucket`` per version, keyed the way the gates key it (``le`` as float).

    Only ``model_version`` and ``le`` may label the series: the gates sum by exactly those.
    """
    found: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "inference_score_bucket":
                assert set(sample.labels) == {"model_version", "le"}
                version = sample.labels["model_version"]
                found.setdefault(version, {})[float(sample.labels["le"])] = sample.value
    return found


def test_score_tallies_give_the_same_histogram_as_one_observe_per_score() -> None:
    metrics = ServeMetrics()
    registry = CollectorRegistry()
    reference = Histogram(
        "reference", "", ("model_version",), buckets=SCORE_BUCKETS, registry=registry
    )
    for probability in PROBABILITIES:
        metrics.observe_score("v1", probability)
        reference.labels("v1").observe(probability)
    text, _ = metrics.exposition()
    ours = score_buckets(text)["v1"]
    theirs = {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.name == "reference_bucket"
    }
    assert ours == theirs
    # buckets every 0.05 on 0..1, with labels that read as such
    assert sorted(ours) == [*(round(0.05 * step, 2) for step in range(1, 21)), math.inf]
    assert b'le="0.15"' in text
    assert ours[0.05] == 3 and ours[1.0] == ours[math.inf] == len(PROBABILITIES)
    # a second flush adds only what came since
    metrics.observe_score("v1", 0.3)
    assert score_buckets(metrics.exposition()[0])["v1"][math.inf] == len(PROBABILITIES) + 1


def test_the_drift_gate_reads_the_exposed_buckets() -> None:
    metrics = ServeMetrics()
    for probability in PROBABILITIES:
        metrics.observe_score("stable", probability)
        metrics.observe_score("same", probability)
        metrics.observe_score("shifted", min(1.0, probability + 0.5))
    buckets = score_buckets(metrics.exposition()[0])
    assert score_drift(buckets["stable"], buckets["same"]) == 0.0
    drift = score_drift(buckets["stable"], buckets["shifted"])
    assert drift is not None and drift > 0.5


@contextmanager
def shadow_service(
    store: PrivateRedis, registry_root: str, loader: Any = None
) -> Iterator[TestClient]:
    """The service in-process, following a published routing: the candidate in the shadow of
    stable for every customer."""
    key = f"fraudstack:routing:score-{uuid.uuid4().hex[:8]}"
    routing = RoutingDocument(
        stable=STABLE,
        candidate=CANDIDATE,
        candidate_share=100.0,
        mode="shadow",
        source="fraudstack/score-test",
    )
    with redis.Redis.from_url(store.url) as connection:
        connection.set(key, routing.to_json())
        try:
            settings = serve_settings(store.url, registry_root, routing_key=key)
            with TestClient(create_app(settings, loader=loader)) as client:
                yield client
        finally:
            connection.delete(key)


@pytest.fixture
def shadow_client(store: PrivateRedis, registry_root: str) -> Iterator[TestClient]:
    with shadow_service(store, registry_root) as client:
        yield client


def test_answered_and_shadow_scores_are_observed_by_version(
    shadow_client: TestClient, transactions: pa.Table
) -> None:
    customers = sorted(set(transactions["customer_id"].to_pylist()))[:40]
    answered = []
    for customer in customers:
        response = shadow_client.get(f"/predict/{customer}")
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == STABLE
        answered.append(response.json()["fraud_probability"])
    text = shadow_client.get("/metrics").content
    buckets = score_buckets(text)
    assert buckets[STABLE][math.inf] == len(customers)
    assert buckets[CANDIDATE][math.inf] == len(customers)  # scored aside, never answered
    sums = {
        sample.labels["model_version"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "inference_score_sum"
    }
    assert sums[STABLE] == pytest.approx(sum(answered))


def test_a_failing_shadow_candidate_does_not_fail_the_answer(
    store: PrivateRedis, registry_root: str, transactions: pa.Table
) -> None:
    def loader(root: str, version: str) -> Any:
        return load_scorer(root, version) if version == STABLE else BrokenScorer(version)

    customer = transactions["customer_id"][0].as_py()
    with shadow_service(store, registry_root, loader) as client:
        response = client.get(f"/predict/{customer}")
        text = client.get("/metrics").text
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == STABLE
    assert (
        f'inference_requests_total{{model_version="{CANDIDATE}",outcome="shadow_error"}} 1.0'
        in text
    )
