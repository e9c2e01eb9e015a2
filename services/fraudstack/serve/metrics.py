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

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from fraudstack.histograms import Tally

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
        self._requests: dict[tuple[str, str], Tally] = {}
        self._scores: dict[str, Tally] = {}
        self._ages = Tally(AGE_BUCKETS)
        self._unavailable = 0

    def observe(self, model_version: str, outcome: str, seconds: float | None) -> None:
        """Count one answered request (and its latency when it was timed)."""
        tally = self._requests.get((model_version, outcome))
        if tally is None:
            tally = self._requests[(model_version, outcome)] = Tally(LATENCY_BUCKETS)
        if seconds is None:  # refused before it was timed: counted, no latency
            tally.count += 1
        else:
            tally.add(seconds)

    def observe_score(self, model_version: str, probability: float) -> None:
        """Count one fraud probability ``model_version`` gave."""
        tally = self._scores.get(model_version)
        if tally is None:
            tally = self._scores[model_version] = Tally(SCORE_BUCKETS)
        tally.add(probability)

    def observe_age(self, seconds: float) -> None:
        self._ages.add(seconds)

    def store_down(self) -> None:
        self._unavailable += 1

    def flush(self) -> None:
        """Write every tally to the metrics (shared files under gunicorn)."""
        requests, self._requests = self._requests, {}
        for (version, outcome), tally in requests.items():
            self.requests.labels(version, outcome).inc(tally.count)
            if any(tally.buckets):  # requests that failed before timing have no latency
                tally.write(self.latency.labels(version, outcome))
        scores, self._scores = self._scores, {}
        for version, tally in scores.items():
            tally.write(self.score.labels(version))
        ages, self._ages = self._ages, Tally(AGE_BUCKETS)
        if ages.count:
            ages.write(self.feature_age)
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
