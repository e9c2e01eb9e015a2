"""Fixtures for the operator tests: every part is the real one.

* the API server (etcd + kube-apiserver) with the CRDs: the session fixtures of the
  ``support.kube`` plugin, shared with the chart tests;
* Redis and Prometheus of the test devstack (``tests/conftest.py``);
* a model registry in a temporary folder, with versions published through
  :class:`~fraudstack.adapters.registry.ModelRegistry` (metadata and a placeholder file: the
  operator reads the metadata and hashes the files, it never loads a model);
* the operator itself, in this process, through ``kopf.testing.KopfRunner``, with a reconcile
  timer of one second and a 10-second gate window so steps of the CRD's minimum (10 s) run;
* a scrape target serving the inference metrics (``inference_requests_total``,
  ``inference_latency_seconds``, ``inference_score``) of whatever versions a test describes, fed
  continuously by a thread: the gates read real series from the real Prometheus.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kopf.testing import KopfRunner
from kubernetes import client
from operator_support import (
    GROUP,
    PLURAL,
    VERSION,
    MetricsTarget,
    delete_and_wait,
    running_operator,
)

from fraudstack.adapters.registry import ModelMetadata, ModelRegistry
from fraudstack.adapters.scrape import register_target
from fraudstack.devstack.base import ServerInfo
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION


@pytest.fixture(scope="session")
def namespace(crds: list[str], create_namespace: Callable[[str], str]) -> str:
    return create_namespace("fraudmodel-operator")


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def publish_version(model_registry: ModelRegistry) -> Callable[..., str]:
    """Publish a version (metadata plus a placeholder artifact); returns its name."""

    def publish(version: str, feature_set_version: str = FEATURE_SET_VERSION) -> str:
        metadata = ModelMetadata(
            version=version,
            model_type="logistic_regression",
            feature_names=list(FEATURE_NAMES),
            feature_set_version=feature_set_version,
            training_window={
                "start": "2018-04-01T00:00:00+00:00",
                "end": "2018-04-08T00:00:00+00:00",
            },
            metrics={},
        )
        model_registry.publish(metadata, {"model.onnx": b"not a model: never loaded here"})
        return version

    return publish


@pytest.fixture(scope="session")
def routing_key() -> str:
    return f"fraudstack:routing:test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def store(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def operator(
    kube: ServerInfo,
    namespace: str,
    redis_url: str,
    prometheus: ServerInfo,
    model_registry: ModelRegistry,
    routing_key: str,
) -> Iterator[KopfRunner]:
    """The operator, running in a thread of this process for the whole session."""
    with running_operator(
        str(kube["kubeconfig"]),
        namespace=namespace,
        redis_url=redis_url,
        prometheus_url=str(prometheus["address"]),
        model_registry_uri=str(model_registry.root),
        routing_key=routing_key,
        gate_min_window_seconds=10.0,
    ) as runner:
        yield runner


@pytest.fixture
def fraudmodels(
    operator: KopfRunner, objects: client.CustomObjectsApi, namespace: str
) -> Iterator[Callable[[dict[str, Any]], dict[str, Any]]]:
    """Create FraudModels; each is deleted (and waited for) when the test ends."""
    created: list[str] = []

    def create(body: dict[str, Any]) -> dict[str, Any]:
        result = objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
        created.append(body["metadata"]["name"])
        assert isinstance(result, dict)
        return result

    yield create
    for name in created:
        delete_and_wait(objects, namespace, name)


@pytest.fixture(scope="session")
def metrics_target(prometheus: ServerInfo) -> Iterator[MetricsTarget]:
    target = MetricsTarget()
    registration = register_target(
        prometheus["targets_dir"], "operator-gates", f"127.0.0.1:{target.port}"
    )
    try:
        yield target
    finally:
        registration.unlink(missing_ok=True)
        target.close()
