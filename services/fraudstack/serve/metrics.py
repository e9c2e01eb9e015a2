"""Prometheus metrics of the inference service, right across gunicorn workers.

Under gunicorn every worker is its own process, so the metrics run in the client library's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set (and the folder wiped) by the gunicorn
master before any worker starts (:mod:`fraudstack.serve.gunicorn_conf`), each worker writes its
values to memory-mapped files there, ``mark_process_dead`` runs when a worker exits, and
``/metrics`` merges the files of every worker at scrape time. Without that variable (one process,
as in tests that build the app in-process) the app's own registry is exposed.

=====================================  =========  =================================================
metric                                 type       labels / meaning
=====================================  =========  =================================================
``inference_requests_total``           counter    ``model_version``, ``outcome`` (``ok``,
                                                  ``not_found``, ``unavailable``, ``invalid``,
                                                  ``error``; ``shadow`` for a candidate that
                                                  scored in the shadow of the stable model)
``inference_latency_seconds``          histogram  same labels; time spent inside the service
``inference_score``                    histogram  ``model_version``; the fraud probability a model
                                                  gave (answered, or scored in the shadow), buckets
                                                  every 0.05 on 0..1: the operator's score-drift
                                                  gate compares the versions' distributions
``feature_age_seconds``                histogram  now minus the newest event in the customer's
                                                  stored features (pipeline lag + inactivity)
``online_store_unavailable_total``     counter    requests answered 503 because Redis was down
                                                  or refused a command
=====================================  =========  =================================================
"""

from __future__ import annotations

import os
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

#: Fine enough to see a sub-millisecond service, wide enough to see it struggle.
LATENCY_BUCKETS = (
    0.0001,
    0.0002,
    0.0003,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
#: From seconds (streaming is keeping up) to a month (the customer has gone quiet).
AGE_BUCKETS = (
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6 * 3600.0,
    86400.0,
    7 * 86400.0,
    30 * 86400.0,
)
#: Every 0.05 on 0..1, the resolution of the operator's score-drift gate (rounded so that the
#: exposed ``le`` labels read 0.05, 0.1, ... rather than 0.15000000000000002).
SCORE_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))
#: How often the request path's tallies are written to the shared metrics.
FLUSH_SECONDS = 0.25
#: No model was chosen (the request was refused before routing).
NO_VERSION = "none"


class _Tally:
    """Observations of one histogram child not yet written to the shared files."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self, bucket_count: int) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (bucket_count + 1)  # the last one is +Inf


class ServeMetrics:
    """The service's metrics, registered in ``registry`` (a fresh one per app by default).

    Why the tallies: in multiprocess mode every ``inc`` or ``observe`` takes a lock and writes a
    memory-mapped file, about 7 µs a request for these metrics, a tenth of what a prediction
    costs. The request path adds to plain Python tallies instead, and :meth:`flush` (every
    :data:`FLUSH_SECONDS` from the app's lifespan, at each ``/metrics`` and at shutdown) writes
    each tally in one go. A scrape therefore lags the requests by at most that interval, and a
    worker killed outright loses at most that much.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "inference_requests_total",
            "Scoring requests answered, by model and outcome.",
            ("model_version", "outcome"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "inference_latency_seconds",
            "Time to answer a scoring request inside the service.",
            ("model_version", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.score = Histogram(
            "inference_score",
            "Fraud probability given by a model, answered or scored in the shadow.",
            ("model_version",),
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.feature_age = Histogram(
            "feature_age_seconds",
            "Age of the newest event in the stored features a request used.",
            buckets=AGE_BUCKETS,
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "online_store_unavailable_total",
            "Requests answered 503 because the online store could not be reached or refused.",
            registry=self.registry,
        )
        self._requests: dict[tuple[str, str], _Tally] = {}
        self._scores: dict[str, _Tally] = {}
        self._ages = _Tally(len(AGE_BUCKETS))
        self._unavailable = 0

    def observe(self, model_version: str, outcome: str, seconds: float | None) -> None:
        """Count one answered request (and its latency when it was timed)."""
        tally = self._requests.get((model_version, outcome))
        if tally is None:
            tally = self._requests[(model_version, outcome)] = _Tally(len(LATENCY_BUCKETS))
        tally.count += 1
        if seconds is not None:
            tally.total += seconds
            tally.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def observe_score(self, model_version: str, probability: float) -> None:
        """Count one fraud probability ``model_version`` gave."""
        tally = self._scores.get(model_version)
        if tally is None:
            tally = self._scores[model_version] = _Tally(len(SCORE_BUCKETS))
        tally.count += 1
        tally.total += probability
        tally.buckets[bisect_left(SCORE_BUCKETS, probability)] += 1

    def observe_age(self, seconds: float) -> None:
        ages = self._ages
        ages.count += 1
        ages.total += seconds
        ages.buckets[bisect_left(AGE_BUCKETS, seconds)] += 1

    def store_down(self) -> None:
        self._unavailable += 1

    def flush(self) -> None:
        """Write every tally to the metrics (shared files under gunicorn)."""
        requests, self._requests = self._requests, {}
        for (version, outcome), tally in requests.items():
            self.requests.labels(version, outcome).inc(tally.count)
            if any(tally.buckets):  # requests that failed before timing have no latency
                _add(self.latency.labels(version, outcome), tally)
        scores, self._scores = self._scores, {}
        for version, tally in scores.items():
            _add(self.score.labels(version), tally)
        ages, self._ages = self._ages, _Tally(len(AGE_BUCKETS))
        if ages.count:
            _add(self.feature_age, ages)
        if self._unavailable:
            self.store_unavailable.inc(self._unavailable)
            self._unavailable = 0

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every worker's metrics (or this app's, in one process)."""
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _add(histogram: Histogram, tally: _Tally) -> None:
    """Add a tally to a histogram child: one write per bucket touched, not one per request.

    The client library has no public call for this; its histogram children keep one value per
    bucket (``_buckets``, not cumulative) and the sum (``_sum``), as they have for years. The
    service's tests read the scraped buckets back, so a change there would not go unnoticed.
    """
    histogram._sum.inc(tally.total)
    for index, hits in enumerate(tally.buckets):
        if hits:
            histogram._buckets[index].inc(hits)
