"""The request path's metric tallies land in the Prometheus histograms as ``observe`` would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraudstack.serve.metrics import LATENCY_BUCKETS, ServeMetrics

SECONDS = [0.00005, 0.0001, 0.00015, 0.002, 0.7, 5.0]


def samples(text: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_tallies_give_the_same_histogram_as_one_observe_per_request() -> None:
    metrics = ServeMetrics()
    registry = CollectorRegistry()
    reference = Histogram(
        "reference_seconds",
        "",
        ("model_version", "outcome"),
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for seconds in SECONDS:
        metrics.observe("v1", "ok", seconds)
        reference.labels("v1", "ok").observe(seconds)
    metrics.observe("none", "invalid", None)
    text, _ = metrics.exposition()
    ours = samples(text, "inference_latency_seconds_bucket")
    expected = samples(generate_latest(registry), "reference_seconds_bucket")
    assert ours == expected
    assert samples(text, "inference_latency_seconds_sum")[
        (("model_version", "v1"), ("outcome", "ok"))
    ] == pytest.approx(sum(SECONDS))
    counts = samples(text, "inference_requests_total")
    assert counts[(("model_version", "none"), ("outcome", "invalid"))] == 1
    assert counts[(("model_version", "v1"), ("outcome", "ok"))] == len(SECONDS)


def test_ages_and_outages_are_counted() -> None:
    metrics = ServeMetrics()
    for age in (0.5, 30.0, 86_400.0 * 90):
        metrics.observe_age(age)
    metrics.store_down()
    metrics.store_down()
    text, _ = metrics.exposition()
    assert samples(text, "feature_age_seconds_count")[()] == 3
    assert samples(text, "feature_age_seconds_bucket")[(("le", "1.0"),)] == 1
    assert samples(text, "feature_age_seconds_bucket")[(("le", "+Inf"),)] == 3
    assert samples(text, "online_store_unavailable_total")[()] == 2
