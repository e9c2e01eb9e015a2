"""The gates' verdicts from their figures (pure), and reading them from Prometheus."""

from __future__ import annotations

import math

import httpx
import pytest

from fraudmodel_operator.gates import (
    GateFigures,
    PrometheusGates,
    VersionFigures,
    judge,
    score_drift,
)
from fraudmodel_operator.resource import Gates, Verdict
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.process import free_port

GATES = Gates(max_latency_p99_ratio=1.5, max_error_rate_delta=0.01, max_score_drift=0.2)
SCORES = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}


def figures(stable: VersionFigures, candidate: VersionFigures) -> GateFigures:
    return GateFigures(stable, candidate, window_seconds=600)


def healthy(requests: float = 1000, **changes: object) -> VersionFigures:
    fields: dict[str, object] = {
        "requests": requests,
        "errors": 0.0,
        "p99_seconds": 0.004,
        "score_buckets": SCORES,
    }
    fields.update(changes)
    return VersionFigures(**fields)  # type: ignore[arg-type]


def test_a_candidate_like_stable_passes() -> None:
    report = judge(figures(healthy(), healthy(requests=150)), GATES, "v1", "v2")
    assert report.verdict is Verdict.PASS
    assert report.figures["latencyP99Ratio"] == pytest.approx(1.0)
    assert report.figures["scoreDrift"] == 0.0
    assert "over 150 requests" in report.message


def test_too_few_candidate_requests_wait() -> None:
    report = judge(figures(healthy(), healthy(requests=99, p99_seconds=9.0)), GATES, "v1", "v2")
    assert report.verdict is Verdict.WAIT
    assert report.message == "v2 scored 99 requests in the last 600s; the gates need 100"


def test_no_stable_traffic_waits() -> None:
    report = judge(figures(healthy(requests=0), healthy()), GATES, "v1", "v2")
    assert report.verdict is Verdict.WAIT and "nothing to compare" in report.message


def test_a_slow_candidate_fails() -> None:
    report = judge(figures(healthy(), healthy(p99_seconds=0.008)), GATES, "v1", "v2")
    assert report.verdict is Verdict.FAIL
    assert "p99 latency 8.0 ms against 4.0 ms for v1 (x2.00 > x1.5)" in report.message


def test_a_failing_candidate_fails() -> None:
    report = judge(figures(healthy(errors=1), healthy(errors=30)), GATES, "v1", "v2")
    assert report.verdict is Verdict.FAIL
    assert "error rate 3.00% against 0.10% for v1" in report.message
    assert report.figures["errorRateDelta"] == pytest.approx(0.029)


def test_a_drifted_candidate_fails() -> None:
    drifted = {0.1: 10.0, 0.5: 40.0, 1.0: 100.0, math.inf: 100.0}
    report = judge(figures(healthy(), healthy(score_buckets=drifted)), GATES, "v1", "v2")
    assert report.verdict is Verdict.FAIL
    assert "score distribution drifted 0.500" in report.message


def test_without_a_score_histogram_drift_is_not_measured() -> None:
    report = judge(
        figures(healthy(score_buckets=None), healthy(score_buckets=None)), GATES, "v1", "v2"
    )
    assert report.verdict is Verdict.PASS and "score drift not measured" in report.message
    assert report.figures["scoreDrift"] is None


def test_no_latency_figures_wait() -> None:
    report = judge(figures(healthy(p99_seconds=None), healthy()), GATES, "v1", "v2")
    assert report.verdict is Verdict.WAIT and "no latency figures" in report.message


def test_in_shadow_mode_the_latency_gate_does_not_apply() -> None:
    # the candidate's latency is its scoring aside, not a request: no figure to compare
    report = judge(figures(healthy(), healthy(p99_seconds=None)), GATES, "v1", "v2", shadow=True)
    assert report.verdict is Verdict.PASS and "not compared in shadow mode" in report.message
    failing = judge(
        figures(healthy(), healthy(p99_seconds=None, errors=30)), GATES, "v1", "v2", shadow=True
    )
    assert failing.verdict is Verdict.FAIL  # the other gates still do


def test_score_drift_is_the_largest_gap_between_the_cumulative_shares() -> None:
    assert score_drift(SCORES, SCORES) == 0.0
    other = {0.1: 5.0, 0.5: 9.0, 1.0: 10.0, math.inf: 10.0}  # same shape, fewer observations
    assert score_drift(SCORES, other) == pytest.approx(0.0)
    assert score_drift(SCORES, {math.inf: 0.0}) is None
    assert score_drift(None, SCORES) is None


async def test_no_prometheus_means_wait() -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        unset = await PrometheusGates(http, "").evaluate("v1", "v2", GATES, 60)
        away = await PrometheusGates(http, f"http://127.0.0.1:{free_port()}").evaluate(
            "v1", "v2", GATES, 60
        )
    assert unset.verdict is Verdict.WAIT and "no Prometheus" in unset.message
    assert away.verdict is Verdict.WAIT and "cannot read the gate figures" in away.message


async def test_versions_without_traffic_read_as_zero_from_prometheus(
    prometheus: ServerInfo,
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        gates = PrometheusGates(http, str(prometheus["address"]), 'job="fraudstack"')
        read = await gates.figures("never.served-1", "never.served-2", 60)
        report = await gates.evaluate("never.served-1", "never.served-2", GATES, 60)
    assert read.stable == VersionFigures() and read.candidate == VersionFigures()
    assert report.verdict is Verdict.WAIT
