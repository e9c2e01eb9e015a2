"""Helpers shared by the operator tests: FraudModel bodies, reading them back, waiting."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from kopf.testing import KopfRunner
from kubernetes import client
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from fraudmodel_operator.handlers import GROUP, PLURAL, VERSION, build_registry
from fraudmodel_operator.settings import OperatorSettings
from fraudstack.devstack.process import free_port
from fraudstack.routing import RoutingDocument
from fraudstack.serve.metrics import LATENCY_BUCKETS, SCORE_BUCKETS
from support.waiting import eventually

__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "CreateFraudModel",
    "MetricsTarget",
    "condition",
    "delete_and_wait",
    "events_of",
    "fraud_model",
    "is_gone",
    "published",
    "read",
    "routing_of",
    "running_operator",
    "wait_for_status",
]

T = TypeVar("T")
#: The ``fraudmodels`` fixture: creates a FraudModel, deleted when the test ends.
CreateFraudModel = Callable[[dict[str, Any]], dict[str, Any]]


@contextmanager
def running_operator(kubeconfig: str, **settings: Any) -> Iterator[KopfRunner]:
    """The operator in this process, watching ``settings["namespace"]`` of the local API server,
    with :class:`OperatorSettings` of ``settings`` and a reconcile timer of one second.

    kopf logs in with the kubeconfig, as the operator does outside a cluster.
    """
    operator_settings = OperatorSettings(**{"reconcile_seconds": 1.0, **settings})
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = kubeconfig
    try:
        with KopfRunner(
            ["run", "--standalone", "--namespace", operator_settings.namespace],
            registry=build_registry(operator_settings),
            timeout=60,
        ) as runner:
            yield runner
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


def fraud_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FraudModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def read(objects: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    found = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert isinstance(found, dict)
    return found


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in body.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def events_of(
    core: client.CoreV1Api, namespace: str, name: str, reason: str
) -> list[client.CoreV1Event]:
    """The Events with ``reason`` about the object ``name``: what ``kubectl describe`` shows."""
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [event for event in events.items if event.reason == reason]


def published(store: redis.Redis, key: str) -> RoutingDocument | None:
    raw = store.get(key)
    return None if raw is None else RoutingDocument.from_json(raw)


def routing_of(store: redis.Redis, key: str, body: dict[str, Any]) -> RoutingDocument:
    """The routing published once it is the split that FraudModel ``body``'s status shows.

    The operator stores a new status before it publishes the routing (so that a restart between
    the two publishes what the status says), so a status can be read a moment before its routing.
    """
    status = body["status"]
    share = float(status["candidateShare"]) if status.get("candidateVersion") else 0.0
    expected = (status["stableVersion"], status.get("candidateVersion"), share, status["mode"])

    def probe() -> RoutingDocument | None:
        document = published(store, key)
        return document if document and document.routing_fields() == expected else None

    return eventually(probe, f"the routing of {status} published")


def wait_for_status(
    objects: client.CustomObjectsApi,
    namespace: str,
    name: str,
    what: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> dict[str, Any]:
    """The FraudModel once ``predicate(body)`` holds."""

    def probe() -> dict[str, Any] | None:
        body = read(objects, namespace, name)
        return body if predicate(body) else None

    return eventually(probe, f"{name}: {what}", timeout)


def is_gone(objects: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    """Whether the FraudModel no longer exists (any other API error is raised)."""
    try:
        read(objects, namespace, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def delete_and_wait(
    objects: client.CustomObjectsApi, namespace: str, name: str, timeout: float = 20.0
) -> None:
    """Delete a FraudModel and wait until it is gone (the operator's finalizer has run)."""
    try:
        objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return
        raise
    eventually(lambda: is_gone(objects, namespace, name), f"{name} to be deleted", timeout)


class MetricsTarget:
    """A scrape target with the inference service's metrics for the versions in ``profiles``.

    ``profiles[version] = (latency_seconds, error_share, score)``; a thread serves 20 requests a
    second per version with those figures, so the counters and histograms grow as a live
    service's do.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_version", "outcome")
        self.requests = Counter(
            "inference_requests_total", "Requests.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "inference_latency_seconds",
            "Latency.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            "inference_score",
            "Fraud probability answered.",
            ("model_version",),
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.profiles: dict[str, tuple[float, float, float]] = {}
        self.stop = threading.Event()
        self.port = free_port()
        self.server, self.server_thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        tick = 0
        while not self.stop.wait(0.05):
            tick += 1
            for version, (latency, error_share, score) in list(self.profiles.items()):
                failed = error_share > 0 and tick % max(1, round(1 / error_share)) == 0
                outcome = "error" if failed else "ok"
                self.requests.labels(version, outcome).inc()
                self.latency.labels(version, outcome).observe(latency)
                if not failed:
                    # a narrow spread around the profile's score, the same for every version
                    self.scores.labels(version).observe(min(1.0, score + 0.01 * (tick % 5)))

    def close(self) -> None:
        self.stop.set()
        self.feeder.join(timeout=5)
        self.server.shutdown()
        self.server.server_close()
