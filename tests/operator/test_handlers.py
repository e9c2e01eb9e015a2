"""The operator against the real API server, Redis and model registry: a FraudModel's routing is
published to Redis and mirrored in a ConfigMap, follows spec changes, stays put when a version
is missing, rolls back a candidate whose files fail their hash check, and is withdrawn when the
FraudModel goes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kubernetes import client
from operator_support import (
    GROUP,
    PLURAL,
    VERSION,
    CreateFraudModel,
    condition,
    events_of,
    fraud_model,
    is_gone,
    published,
    routing_of,
    wait_for_status,
)

from fraudmodel_operator.publish import PublishResult, RoutingPublisher
from fraudstack.adapters.registry import ModelRegistry
from fraudstack.errors import StoreUnavailable
from fraudstack.routing import RoutingDocument
from support.waiting import eventually


@pytest.fixture(scope="module")
def versions(publish_version: Callable[..., str]) -> dict[str, str]:
    return {
        "stable": publish_version("handlers-2026-01-01"),
        "candidate": publish_version("handlers-2026-01-15"),
        "late": "handlers-2026-02-01",  # published by a test, later
        "other-features": publish_version("handlers-old-features", feature_set_version="fs-v0"),
    }


def ready(body: dict[str, Any]) -> bool:
    generation = body["metadata"]["generation"]
    return (
        body.get("status", {}).get("observedGeneration") == generation
        and condition(body, "Ready").get("status") == "True"
    )


def serve_split(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    namespace: str,
    name: str,
    versions: dict[str, str],
    share: int,
) -> dict[str, Any]:
    """Create a FraudModel giving the candidate ``share`` % by hand; its body once Ready."""
    fraudmodels(
        fraud_model(
            name,
            stableVersion=versions["stable"],
            candidateVersion=versions["candidate"],
            candidateShare=share,
        )
    )
    return wait_for_status(objects, namespace, name, "Ready", ready)


def mirror_of(core: client.CoreV1Api, namespace: str, name: str) -> client.V1ConfigMap:
    """FraudModel ``name``'s routing ConfigMap, which the operator writes after the routing."""

    def probe() -> client.V1ConfigMap | None:
        try:
            return core.read_namespaced_config_map(f"{name}-routing", namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return eventually(probe, f"{name}-routing to be written")


def is_degraded(body: dict[str, Any]) -> bool:
    return condition(body, "Degraded").get("status") == "True"


def patch_spec(
    objects: client.CustomObjectsApi, namespace: str, name: str, **spec: Any
) -> dict[str, Any]:
    result = objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}
    )
    assert isinstance(result, dict)
    return result


def degrades_and_stays_put(
    objects: client.CustomObjectsApi,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    name: str,
    reason: str,
    **spec: Any,
) -> dict[str, Any]:
    """Patch ``spec`` into FraudModel ``name``, which serves 20% by hand, and wait until it is
    Degraded for ``reason``; the status still shows what is published, and what is published
    has not moved. Its body then."""
    serving = store.get(routing_key)
    patch_spec(objects, namespace, name, **spec)
    body = wait_for_status(objects, namespace, name, "Degraded", is_degraded)
    assert condition(body, "Degraded")["reason"] == reason
    assert body["status"]["candidateShare"] == 20
    assert store.get(routing_key) == serving
    return body


def recovers(
    objects: client.CustomObjectsApi,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    name: str,
) -> tuple[dict[str, Any], RoutingDocument]:
    """FraudModel ``name`` once Ready again, giving the candidate 50%, and the routing published."""
    body = wait_for_status(objects, namespace, name, "Ready again", ready)
    assert body["status"]["candidateShare"] == 50
    document = routing_of(store, routing_key, body)
    assert document.candidate_share == 50.0
    return body, document


def test_applying_publishes_the_routing_and_sets_ready(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
) -> None:
    body = serve_split(fraudmodels, objects, namespace, "scorer", versions, 10)
    status = body["status"]
    assert status["phase"] == "Serving"
    assert status["stableVersion"] == versions["stable"]
    assert status["candidateVersion"] == versions["candidate"]
    assert status["candidateShare"] == 10
    assert condition(body, "Degraded")["status"] == "False"
    assert condition(body, "Progressing")["reason"] == "ManualSplit"

    document = routing_of(store, routing_key, body)
    assert document.routing_fields() == (versions["stable"], versions["candidate"], 10.0, "canary")
    assert document.source == f"{namespace}/scorer"
    assert document.generation == 1

    mirror = mirror_of(core, namespace, "scorer")
    assert mirror.data is not None and mirror.metadata is not None
    assert RoutingDocument.from_json(mirror.data["routing.json"]) == document
    (owner,) = mirror.metadata.owner_references or []
    assert (owner.kind, owner.name, owner.uid) == (
        "FraudModel",
        "scorer",
        body["metadata"]["uid"],
    )
    assert owner.controller is True


def test_changing_the_share_changes_the_routing(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
) -> None:
    body = serve_split(fraudmodels, objects, namespace, "share", versions, 5)
    before = routing_of(store, routing_key, body)
    assert before.candidate_share == 5.0

    patch_spec(objects, namespace, "share", candidateShare=40)
    body = wait_for_status(objects, namespace, "share", "share 40 observed", ready)
    assert body["status"]["candidateShare"] == 40 and body["status"]["observedGeneration"] == 2
    after = routing_of(store, routing_key, body)
    assert after.routing_fields() == (versions["stable"], versions["candidate"], 40.0, "canary")
    assert after.generation == 2 and after.updated_at >= before.updated_at

    def mirrored() -> dict[str, str] | None:
        data = core.read_namespaced_config_map("share-routing", namespace).data or {}
        return data if data.get("candidateShare") == "40" else None

    data = eventually(mirrored, "the ConfigMap to follow")
    assert json.loads(data["routing.json"])["candidate_share"] == 40.0

    patch_spec(objects, namespace, "share", mode="shadow")
    body = wait_for_status(objects, namespace, "share", "shadow observed", ready)
    shadow = routing_of(store, routing_key, body)
    assert shadow.mode == "shadow" and shadow.candidate_share == 40.0


def test_a_missing_version_degrades_and_leaves_the_routing_alone(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
    publish_version: Callable[..., str],
) -> None:
    serve_split(fraudmodels, objects, namespace, "missing", versions, 20)
    body = degrades_and_stays_put(
        objects,
        store,
        routing_key,
        namespace,
        "missing",
        "VersionNotFound",
        candidateVersion=versions["late"],
        candidateShare=50,
    )
    degraded = condition(body, "Degraded")
    assert (
        f"candidate version {versions['late']} is not in the model registry"
        in (degraded["message"])
    )
    assert body["status"]["phase"] == "Degraded"
    assert condition(body, "Ready")["status"] == "False"
    assert body["status"]["candidateVersion"] == versions["candidate"]

    # the training job publishes the version: the operator picks it up by itself
    publish_version(versions["late"])
    body, document = recovers(objects, store, routing_key, namespace, "missing")
    assert body["status"]["candidateVersion"] == versions["late"]
    assert document.candidate == versions["late"]


def test_a_split_redis_does_not_take_is_not_left_in_the_status(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new split is saved in the status before it is published; when Redis then refuses it,
    the status goes back to what is published, with the problem, and the split is published
    (and shown) once Redis takes it. (Redis refusing is played by the publisher: the session's
    Redis is shared by every test.)"""
    serve_split(fraudmodels, objects, namespace, "unpublished", versions, 20)
    publish = RoutingPublisher.publish

    async def refused(
        self: RoutingPublisher, document: RoutingDocument, *, take_over: bool = False
    ) -> PublishResult:
        raise StoreUnavailable("online store unreachable: connection refused")

    monkeypatch.setattr(RoutingPublisher, "publish", refused)
    degrades_and_stays_put(
        objects,
        store,
        routing_key,
        namespace,
        "unpublished",
        "RoutingNotPublished",
        candidateShare=50,
    )

    monkeypatch.setattr(RoutingPublisher, "publish", publish)
    recovers(objects, store, routing_key, namespace, "unpublished")


def test_a_version_of_another_feature_set_degrades(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
) -> None:
    fraudmodels(fraud_model("features", stableVersion=versions["other-features"]))
    body = wait_for_status(objects, namespace, "features", "Degraded", is_degraded)
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "FeatureSetMismatch"
    assert versions["other-features"] in degraded["message"] and "fs-v0" in degraded["message"]
    # nothing was ever published for it
    assert "stableVersion" not in body["status"]
    document = published(store, routing_key)
    assert document is None or document.source != f"{namespace}/features"


def test_a_candidate_whose_file_was_altered_is_rolled_back(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
    model_registry: ModelRegistry,
    publish_version: Callable[..., str],
) -> None:
    """No inference worker would load the candidate, so its step would never see traffic: the
    operator rolls it back at once, publishes stable alone and says why, once."""
    serve_split(fraudmodels, objects, namespace, "tampered", versions, 20)
    candidate = publish_version("handlers-tampered")
    (model_registry.path(candidate) / "model.onnx").write_bytes(b"altered after publishing")
    steps = [{"share": 10, "durationSeconds": 600}]
    patch_spec(objects, namespace, "tampered", candidateVersion=candidate, rollout={"steps": steps})

    def rolled_back(body: dict[str, Any]) -> bool:
        status = body.get("status", {})
        return status.get("observedGeneration") == 2 and status.get("phase") == "RolledBack"

    body = wait_for_status(objects, namespace, "tampered", "RolledBack", rolled_back)
    degraded = condition(body, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ArtifactCorrupt"
    assert candidate in degraded["message"] and "model.onnx has sha256" in degraded["message"]
    assert condition(body, "Ready")["status"] == "True"
    assert body["status"]["candidateShare"] == 0 and "candidateVersion" not in body["status"]
    document = routing_of(store, routing_key, body)
    assert document.routing_fields() == (versions["stable"], None, 0.0, "canary")

    def rolled_back_events() -> list[client.CoreV1Event]:
        return events_of(core, namespace, "tampered", "RolledBack")

    (event,) = eventually(rolled_back_events, "the RolledBack event")
    assert event.type == "Warning" and "model.onnx has sha256" in (event.message or "")
    time.sleep(3)  # three more reconciles (the timer runs every second): nothing more to say
    assert len(rolled_back_events()) == 1
    assert published(store, routing_key) == document  # not written again: nothing changed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"candidateShare": 101}, "should be less than or equal to 100"),
        ({"candidateShare": 10}, "candidateShare needs a candidateVersion"),
        ({"candidateVersion": "v1"}, "candidateVersion must differ from stableVersion"),
        (
            {"rollout": {"steps": [{"share": 10, "durationSeconds": 60}]}},
            "rollout steps need a candidateVersion",
        ),
        (
            {
                "candidateVersion": "v2",
                "rollout": {"steps": [{"share": 100, "durationSeconds": 60}]},
            },
            "a canary rollout step must stay below 100",
        ),
        ({"canaryPercent": 10}, 'unknown field "spec.canaryPercent"'),
    ],
)
def test_an_invalid_spec_is_refused_by_the_api_server(
    objects: client.CustomObjectsApi, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = fraud_model("invalid", stableVersion="v1", **spec)
    with pytest.raises(client.ApiException) as refused:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    assert refused.value.status in (400, 422)
    assert message in json.loads(refused.value.body or "{}")["message"]


def test_a_shadow_rollout_may_go_to_100(objects: client.CustomObjectsApi, namespace: str) -> None:
    steps = [{"share": 100, "durationSeconds": 60}]
    body = fraud_model(
        "shadow-100",
        stableVersion="v1",
        candidateVersion="v2",
        mode="shadow",
        rollout={"steps": steps},
    )
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shadow-100")


def test_deleting_withdraws_the_routing(
    fraudmodels: CreateFraudModel,
    objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    store: redis.Redis,
    routing_key: str,
    namespace: str,
    versions: dict[str, str],
) -> None:
    """Deleting the FraudModel removes the Redis key through the operator's delete handler (a
    finalizer holds the deletion until it has run), and the ConfigMap carries the owner
    reference that makes Kubernetes' garbage collector delete it with the FraudModel. The
    garbage collector is part of kube-controller-manager, which this local API server does not
    run, so the ConfigMap's cascading deletion itself is not observed here: the test checks the
    owner reference and the finalizer."""
    created = fraudmodels(fraud_model("doomed", stableVersion=versions["stable"]))
    body = wait_for_status(objects, namespace, "doomed", "Ready", ready)
    assert "fraudstack.io/operator" in body["metadata"]["finalizers"]
    routing_of(store, routing_key, body)
    mirror = mirror_of(core, namespace, "doomed")
    assert mirror.metadata is not None
    (owner,) = mirror.metadata.owner_references or []
    assert owner.uid == created["metadata"]["uid"] and owner.block_owner_deletion is True

    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "doomed")

    eventually(lambda: is_gone(objects, namespace, "doomed"), "the FraudModel to be gone")
    assert store.get(routing_key) is None
