"""The promotion gates: candidate against stable, read from Prometheus over its HTTP API.

The inference service labels its metrics by ``model_version`` (:mod:`fraudstack.serve.metrics`),
so one query per figure compares the two versions over the same window: the step that has just
run (everything since it began, so a step kept waiting for traffic gathers more of it, but at
least ``FRAUDSTACK_OPERATOR_GATE_MIN_WINDOW_SECONDS``).
``V`` below is ``model_version=~"<stable>|<candidate>"`` plus the optional extra selector
(``FRAUDSTACK_OPERATOR_GATE_SELECTOR``)::

    requests  sum by (model_version) (increase(inference_requests_total{V}[W]))
    errors    sum by (model_version)
                  (increase(inference_requests_total{V, outcome=~"error|shadow_error"}[W]))
    p99       histogram_quantile(0.99, sum by (le, model_version)
                  (rate(inference_latency_seconds_bucket{V, outcome="ok"}[W])))
    scores    sum by (le, model_version) (increase(inference_score_bucket{V}[W]))

The gates (``spec.gates``):

* latency: candidate p99 / stable p99 at most ``maxLatencyP99Ratio`` (answered requests only;
  not applied in shadow mode, where the candidate answers no request of its own);
* errors: candidate error rate minus stable's at most ``maxErrorRateDelta``; an error is outcome
  ``error`` (the service failed) or ``shadow_error`` (the candidate failed in the shadow of
  stable, which still answered); a customer without features or Redis being away is not the
  model's fault and does not count;
* score drift: the largest gap between the two cumulative distributions of the fraud
  probability (the Kolmogorov-Smirnov distance on the histogram's buckets, 0..1) at most
  ``maxScoreDrift``. It needs the service to export the probability it answered as a histogram
  ``inference_score{model_version}`` (buckets on 0..1); where that metric is absent the drift is
  reported as not measured and does not block promotion, which the verdict's message says.

Not enough traffic (the candidate scored fewer than ``minRequests`` in the window, or the stable
none), no figures yet, or Prometheus away: the verdict is Wait, never Fail. A rollout with no
Prometheus configured therefore waits at its first step rather than promoting blind.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from fraudmodel_operator.resource import GateReport, Gates, Verdict
from fraudstack.errors import FraudstackError

QUANTILE = 0.99


class GatesUnavailable(FraudstackError):
    """Prometheus did not answer, or answered with an error: the gates cannot be judged now."""


@dataclass(frozen=True, slots=True)
class VersionFigures:
    requests: float = 0.0
    errors: float = 0.0
    p99_seconds: float | None = None
    #: upper bound ``le`` -> observations at or below it (cumulative), over the window
    score_buckets: Mapping[float, float] | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class GateFigures:
    stable: VersionFigures
    candidate: VersionFigures
    window_seconds: float

    @property
    def score_drift(self) -> float | None:
        return score_drift(self.stable.score_buckets, self.candidate.score_buckets)


def score_drift(
    stable: Mapping[float, float] | None, candidate: Mapping[float, float] | None
) -> float | None:
    """Kolmogorov-Smirnov distance between two bucketed distributions; None if either is empty."""
    if not stable or not candidate:
        return None
    stable_total, candidate_total = stable.get(math.inf, 0.0), candidate.get(math.inf, 0.0)
    if stable_total <= 0 or candidate_total <= 0:
        return None
    bounds = sorted(set(stable) & set(candidate))
    return max(
        abs(stable[bound] / stable_total - candidate[bound] / candidate_total) for bound in bounds
    )


def judge(
    figures: GateFigures, gates: Gates, stable: str, candidate: str, *, shadow: bool = False
) -> GateReport:
    """The verdict on one step from its figures (pure; see the module docstring)."""
    s, c = figures.stable, figures.candidate
    drift = figures.score_drift
    report = {
        "windowSeconds": figures.window_seconds,
        "stableRequests": s.requests,
        "candidateRequests": c.requests,
        "stableErrorRate": s.error_rate if s.requests else None,
        "candidateErrorRate": c.error_rate if c.requests else None,
        "stableP99Seconds": s.p99_seconds,
        "candidateP99Seconds": c.p99_seconds,
        "latencyP99Ratio": (
            c.p99_seconds / s.p99_seconds if c.p99_seconds is not None and s.p99_seconds else None
        ),
        "errorRateDelta": c.error_rate - s.error_rate if c.requests and s.requests else None,
        "scoreDrift": drift,
    }
    window = f"the last {figures.window_seconds:.0f}s"
    if c.requests < gates.min_requests:
        return GateReport(
            Verdict.WAIT,
            f"{candidate} scored {c.requests:.0f} requests in {window}; the gates need "
            f"{gates.min_requests}",
            report,
        )
    if s.requests < 1:
        return GateReport(
            Verdict.WAIT, f"{stable} scored no requests in {window}: nothing to compare", report
        )

    failures = []
    delta = c.error_rate - s.error_rate
    if delta > gates.max_error_rate_delta:
        failures.append(
            f"error rate {c.error_rate:.2%} against {s.error_rate:.2%} for {stable} "
            f"(+{delta:.2%} > {gates.max_error_rate_delta:.2%})"
        )
    # in shadow mode the candidate only scores aside, after stable answered: no request of its
    # own to time, so the latency gate does not apply
    ratio = None if shadow else report["latencyP99Ratio"]
    if ratio is not None and ratio > gates.max_latency_p99_ratio:
        failures.append(
            f"p99 latency {_ms(c.p99_seconds)} against {_ms(s.p99_seconds)} for {stable} "
            f"(x{ratio:.2f} > x{gates.max_latency_p99_ratio:g})"
        )
    if drift is not None and drift > gates.max_score_drift:
        failures.append(
            f"score distribution drifted {drift:.3f} from {stable}'s (> {gates.max_score_drift:g})"
        )
    if failures:
        return GateReport(
            Verdict.FAIL, f"{candidate} failed its gates: " + "; ".join(failures), report
        )
    if ratio is None and not shadow:
        return GateReport(
            Verdict.WAIT, f"no latency figures for both versions in {window} yet", report
        )
    latency_text = "p99 not compared in shadow mode" if ratio is None else f"p99 x{ratio:.2f}"
    drift_text = f"score drift {drift:.3f}" if drift is not None else "score drift not measured"
    return GateReport(
        Verdict.PASS,
        f"gates passed over {c.requests:.0f} requests: {latency_text}, error rate "
        f"{delta:+.2%}, {drift_text}",
        report,
    )


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


class PrometheusGates:
    """Reads the gate figures from Prometheus' HTTP API (``/api/v1/query``)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, selector: str = "") -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.selector = selector.strip().strip(",")

    async def evaluate(
        self,
        stable: str,
        candidate: str,
        gates: Gates,
        window_seconds: float,
        *,
        shadow: bool = False,
    ) -> GateReport:
        """The verdict; Prometheus being away or unset makes it Wait, with the reason."""
        if not self.base_url:
            return GateReport(Verdict.WAIT, "no Prometheus is configured to read the gates from")
        try:
            figures = await self.figures(stable, candidate, window_seconds)
        except GatesUnavailable as exc:
            return GateReport(Verdict.WAIT, f"cannot read the gate figures: {exc}")
        return judge(figures, gates, stable, candidate, shadow=shadow)

    async def figures(self, stable: str, candidate: str, window_seconds: float) -> GateFigures:
        versions = f'model_version=~"{_literal(stable)}|{_literal(candidate)}"'
        matchers = f"{versions}, {self.selector}" if self.selector else versions
        window = f"[{max(1, math.ceil(window_seconds))}s]"
        requests, errors, p99, scores = await asyncio.gather(
            self.query(
                f"sum by (model_version) (increase(inference_requests_total{{{matchers}}}{window}))"
            ),
            self.query(
                "sum by (model_version) (increase(inference_requests_total"
                f'{{{matchers}, outcome=~"error|shadow_error"}}{window}))'
            ),
            self.query(
                f"histogram_quantile({QUANTILE}, sum by (le, model_version) (rate("
                f'inference_latency_seconds_bucket{{{matchers}, outcome="ok"}}{window})))'
            ),
            self.query(
                "sum by (le, model_version) "
                f"(increase(inference_score_bucket{{{matchers}}}{window}))"
            ),
        )

        def per_version(version: str) -> VersionFigures:
            buckets = {
                _float(labels.get("le", "")): value
                for labels, value in scores
                if labels.get("model_version") == version
            }
            return VersionFigures(
                requests=_sum(requests, version),
                errors=_sum(errors, version),
                p99_seconds=_finite(_sum(p99, version, default=math.nan)),
                score_buckets=buckets or None,
            )

        return GateFigures(per_version(stable), per_version(candidate), window_seconds)

    async def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples as (labels, value) pairs."""
        try:
            response = await self.client.get(
                f"{self.base_url}/api/v1/query", params={"query": promql}
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise GatesUnavailable(f"Prometheus at {self.base_url}: {exc}") from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise GatesUnavailable(
                f"Prometheus refused {promql!r}: {body.get('error') or response.status_code}"
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise GatesUnavailable(f"Prometheus answered a {data.get('resultType')} to {promql!r}")
        return [(sample.get("metric", {}), _float(sample["value"][1])) for sample in data["result"]]


def _literal(version: str) -> str:
    """A version as a PromQL regex literal: versions are [A-Za-z0-9._-], only '.' is special."""
    return version.replace(".", "\\\\.")


def _sum(samples: list[tuple[dict[str, str], float]], version: str, default: float = 0.0) -> float:
    values = [value for labels, value in samples if labels.get("model_version") == version]
    return math.fsum(values) if values else default


def _float(text: str) -> float:
    try:
        return float(text)  # Prometheus writes +Inf, -Inf and NaN, which float() reads
    except ValueError:
        return math.nan


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
