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
``feature_age_seconds``                histogram  now minus the newest event in the customer's
                                                  stored features (pipeline lag + inactivity)
``online_store_unavailable_total``     counter    requests answered 503 because Redis was down
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
#: No model was chosen (the request was refused before routing).
NO_VERSION = "none"


class ServeMetrics:
    """The service's metrics, registered in ``registry`` (a fresh one per app by default)."""

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
        self.feature_age = Histogram(
            "feature_age_seconds",
            "Age of the newest event in the stored features a request used.",
            buckets=AGE_BUCKETS,
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "online_store_unavailable_total",
            "Requests answered 503 because the online store could not be reached.",
            registry=self.registry,
        )
        # label lookups take a lock and a dict search; the hot path reuses the children
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, model_version: str, outcome: str, seconds: float | None) -> None:
        """Count one answered request (and its latency when it was timed)."""
        key = (model_version, outcome)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(model_version, outcome),
                self.latency.labels(model_version, outcome),
            )
            self._children[key] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every worker's metrics (or this app's, in one process)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
