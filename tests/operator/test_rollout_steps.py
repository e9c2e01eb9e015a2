"""Rollouts end to end: the operator walks the steps, reads the gates from the real Prometheus
(which scrapes a target serving the inference metrics of both versions), and promotes the
candidate, or rolls it back by itself when it is slow. Steps last the CRD's minimum, 10 s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kubernetes import client
from operator_support import (
    GROUP,
    PLURAL,
    VERSION,
    CreateFraudModel,
    MetricsTarget,
    condition,
    events_of,
    fraud_model,
    published,
    wait_for_status,
)

from fraudmodel_operator.handlers import routing_document
from fraudmodel_operator.publish import PublishResult, RoutingPublisher
from fraudmodel_operator.resource import Split, Status
from fraudstack.routing import RoutingDocument
from support.waiting import eventually

GATES = {"minRequests": 20, "maxLatencyP99Ratio": 1.5, "maxErrorRateDelta": 0.05}


@dataclass
class Rollout:
    """Watches one FraudModel's rollout: the routing it publishes and the status it writes."""

    store: redis.Redis
    routing_key: str
    objects: client.CustomObjectsApi
    namespace: str
    name: str

    def published(self, what: str, *fields: object, timeout: float = 20.0) -> RoutingDocument:
        """The routing document once its routing fields are ``fields``."""

        def probe() -> RoutingDocument | None:
            document = published(self.store, self.routing_key)
            same = document is not None and document.routing_fields() == fields
            return document if same else None

        return eventually(probe, f"{what} published", timeout)

    def status(self, timeout: float = 20.0, **expected: object) -> dict[str, Any]:
        """The FraudModel once its status holds every ``expected`` field."""
        return wait_for_status(
            self.objects,
            self.namespace,
            self.name,
            ", ".join(f"{key}={value}" for key, value in expected.items()),
            lambda body: all(body.get("status", {}).get(k) == v for k, v in expected.items()),
            timeout,
        )


#: (FraudModel, routing fields published, the split its stored status held at that moment)
Publication = tuple[str, tuple[str, str | None, float, str], Split | None]


@pytest.fixture
def publications(
    monkeypatch: pytest.MonkeyPatch, objects: client.CustomObjectsApi
) -> list[Publication]:
    """Every routing the operator publishes, next to what its FraudModel's stored status said."""
    seen: list[Publication] = []
    publish = RoutingPublisher.publish

    async def watched(
        self: RoutingPublisher, document: RoutingDocument, *, take_over: bool = False
    ) -> PublishResult:
        namespace, _, name = document.source.partition("/")
        try:
            body = await asyncio.to_thread(
                objects.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except client.ApiException as exc:  # another test's FraudModel, being deleted
            if exc.status != 404:
                raise
        else:
            stored = Status.from_dict(body.get("status")).split
            seen.append((document.source, document.routing_fields(), stored))
        return await publish(self, document, take_over=take_over)

    monkeypatch.setattr(RoutingPublisher, "publish", watched)
    return seen


def start_rollout(
    fraudmodels: CreateFraudModel,
    publish_version: Callable[..., str],
    metrics_target: MetricsTarget,
    name: str,
    candidate_latency: float,
    shares: tuple[int, int],
) -> tuple[str, str]:
    """Publish ``<name>-stable`` and ``<name>-candidate``, feed their metrics (stable answers in
    2 ms, the candidate in ``candidate_latency`` s) and apply a FraudModel rolling the candidate
    out in two 10-second steps of ``shares``; returns (stable, candidate)."""
    stable, candidate = publish_version(f"{name}-stable"), publish_version(f"{name}-candidate")
    metrics_target.profiles[stable] = (0.002, 0.0, 0.10)
    metrics_target.profiles[candidate] = (candidate_latency, 0.0, 0.10)
    steps = [{"share": share, "durationSeconds": 10} for share in shares]
    fraudmodels(
        fraud_model(
            name,
            stableVersion=stable,
            candidateVersion=candidate,
            rollout={"steps": steps},
            gates=GATES,
        )
    )
    return stable, candidate


def test_the_rollout_walks_its_steps_and_promotes(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    publish_version: Callable[..., str],
    metrics_target: MetricsTarget,
) -> None:
    # the candidate as good as stable
    stable, candidate = start_rollout(
        fraudmodels, publish_version, metrics_target, "walker", 0.002, (10, 30)
    )

    rollout = Rollout(store, routing_key, objects, namespace, "walker")
    rollout.published("step 1", stable, candidate, 10.0, "canary")
    # the routing is published before the status is written: wait for the status too
    body = rollout.status(currentStep=1)
    assert body["status"]["phase"] == "Progressing"
    assert condition(body, "Progressing")["status"] == "True"

    rollout.published("step 2", stable, candidate, 30.0, "canary", timeout=60)
    body = rollout.status(currentStep=2)["status"]
    assert body["currentStep"] == 2 and body["candidateShare"] == 30
    assert body["rollout"]["lastGateCheck"]["verdict"] == "Pass"

    rollout.published("promotion", candidate, None, 0.0, "canary", timeout=60)
    body = rollout.status(phase="Promoted")
    assert body["status"]["stableVersion"] == candidate
    assert condition(body, "Progressing")["reason"] == "Promoted"
    assert condition(body, "Ready")["status"] == "True"
    assert condition(body, "Degraded")["status"] == "False"


def test_a_slow_candidate_is_rolled_back_by_the_operator(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    publish_version: Callable[..., str],
    metrics_target: MetricsTarget,
    publications: list[Publication],
) -> None:
    # the candidate a hundred times slower
    stable, candidate = start_rollout(
        fraudmodels, publish_version, metrics_target, "slowpoke", 0.2, (20, 50)
    )
    rollout = Rollout(store, routing_key, objects, namespace, "slowpoke")
    rollout.published("step 1", stable, candidate, 20.0, "canary")
    body = rollout.status(timeout=40, phase="RolledBack")
    degraded = condition(body, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "GateFailed"
    assert "p99 latency" in degraded["message"] and candidate in degraded["message"]
    progressing = condition(body, "Progressing")
    assert progressing["status"] == "False" and progressing["reason"] == "RolledBack"
    assert body["status"]["rollout"]["lastGateCheck"]["verdict"] == "Fail"
    assert body["status"]["rollout"]["lastGateCheck"]["figures"]["latencyP99Ratio"] > 1.5
    assert body["status"]["candidateShare"] == 0 and "candidateVersion" not in body["status"]
    # the rollback is stored in the status before it is published: wait for the routing too
    rollout.published("the rollback", stable, None, 0.0, "canary")
    # Each routing was stored in the status before it was published: an operator stopped in
    # between starts again from the rollback, never from the step before it.
    ours = [publication for publication in publications if "/slowpoke" in publication[0]]
    assert (stable, None, 0.0, "canary") in [fields for _, fields, _ in ours]
    for source, fields, stored in ours:
        assert stored is not None
        assert routing_document(stored, source, 0, 0).routing_fields() == fields

    # and `kubectl describe` tells the story
    def rolled_back_events() -> list[client.CoreV1Event]:
        return events_of(core, namespace, "slowpoke", "RolledBack")

    (event,) = eventually(rolled_back_events, "the RolledBack event")
    assert event.type == "Warning" and "p99 latency" in (event.message or "")
