"""The chart against the real API server: every object passes strict server-side validation,
`helm install` (no --wait: nothing runs pods here) and `helm upgrade` succeed."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from fraudstack.devstack.base import ServerInfo
from support.kube import CHART, CI_VALUES, Helm, Manifest, as_dict, parse_manifest

RELEASE = "fraudstack"
MONITORING = CHART / "ci" / "with-monitoring-values.yaml"


def strict_dry_run(
    api: client.ApiClient, kube: ServerInfo, document: dict[str, Any], namespace: str
) -> None:
    """Create ``document`` with dryRun=All and fieldValidation=Strict: the server validates it
    completely (schema, unknown fields, admission) and stores nothing."""
    resource = DynamicClient(api).resources.get(
        api_version=document["apiVersion"], kind=document["kind"]
    )
    path = resource.path(namespace=namespace if resource.namespaced else None)
    response = httpx.post(
        f"{kube['url']}{path}",
        params={"dryRun": "All", "fieldValidation": "Strict"},
        json=document,
        headers={"Authorization": f"Bearer {kube['token']}"},
        verify=ssl.create_default_context(cafile=kube["ca"]),
        timeout=30,
    )
    name = f"{document['kind']}/{document['metadata']['name']}"
    assert response.status_code == 201, f"{name} refused: {response.json().get('message')}"
    # Strict validation turns unknown fields into errors; warnings would still mean a problem.
    assert "warning" not in response.headers, f"{name}: {response.headers['warning']}"


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["default", *(path.stem for path in CI_VALUES)]
)
def test_every_rendered_object_passes_server_side_validation(
    cluster_helm: Helm,
    api: client.ApiClient,
    kube: ServerInfo,
    create_namespace: Callable[[str], str],
    values: Path | None,
) -> None:
    namespace = create_namespace(f"dry-{values.stem[:40] if values else 'default'}")
    arguments = ["template", RELEASE, str(CHART), "--namespace", namespace]
    arguments += ["-f", str(values)] if values else []
    manifest = parse_manifest(cluster_helm.run(*arguments).stdout)
    assert len(manifest) >= 15
    for document in manifest:
        strict_dry_run(api, kube, document, namespace)


def objects_of(api: client.ApiClient, manifest: Manifest, namespace: str) -> list[Any]:
    dynamic = DynamicClient(api)
    found = []
    for document in manifest:
        resource = dynamic.resources.get(api_version=document["apiVersion"], kind=document["kind"])
        found.append(
            resource.get(
                name=document["metadata"]["name"],
                namespace=namespace if resource.namespaced else None,
            )
        )
    return found


def secret_value(api: client.ApiClient, name: str, key: str, namespace: str) -> str:
    secret = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return base64.b64decode((secret.data or {})[key]).decode()


def read(api: client.ApiClient, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """One stored object as plain JSON (the API's own field names)."""
    reader = {
        "Deployment": client.AppsV1Api(api).read_namespaced_deployment,
        "ConfigMap": client.CoreV1Api(api).read_namespaced_config_map,
    }[kind]
    return as_dict(api.sanitize_for_serialization(reader(name, namespace)))


def test_install_then_upgrade(cluster_helm: Helm, api: client.ApiClient) -> None:
    namespace = "fraudstack"
    installed = cluster_helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "-f",
        str(MONITORING),
    )
    assert "STATUS: deployed" in installed.stdout
    assert "vegeta attack" in installed.stdout  # NOTES.txt tells what to run next
    assert '-H "X-API-Key: $API_KEY"' in installed.stdout
    assert f"get secret {RELEASE}-ingest" in installed.stdout
    manifest = parse_manifest(
        cluster_helm.run("get", "manifest", RELEASE, "--namespace", namespace).stdout
    )
    kinds = {document["kind"] for document in manifest}
    assert {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "CronJob"} <= kinds
    assert {"NetworkPolicy", "Secret"} <= kinds
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
    assert len(policies) == len([d for d in manifest if d["kind"] == "NetworkPolicy"]) == 8
    stored = objects_of(api, manifest, namespace)
    assert len(stored) == len(manifest)
    for item in stored:
        assert item.metadata.labels["app.kubernetes.io/instance"] == RELEASE

    before = read(api, "Deployment", f"{RELEASE}-inference", namespace)
    password = secret_value(api, f"{RELEASE}-redis", "redis-password", namespace)
    api_key = secret_value(api, f"{RELEASE}-ingest", "api-key", namespace)
    assert len(password) == 32 and len(api_key) == 32 and api_key != password

    upgraded = cluster_helm.run(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(MONITORING),
        "--set",
        "inference.autoscaling.enabled=false",
        "--set",
        "inference.replicaCount=3",
        "--set",
        "config.logLevel=DEBUG",
    )
    assert "REVISION: 2" in upgraded.stdout
    after = read(api, "Deployment", f"{RELEASE}-inference", namespace)
    assert after["spec"]["replicas"] == 3

    def checksum(deployment: dict[str, Any]) -> str:
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(after) != checksum(before)
    settings = read(api, "ConfigMap", f"{RELEASE}-config", namespace)
    assert settings["data"]["FRAUDSTACK_LOG_LEVEL"] == "DEBUG"
    hpas = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace)
    assert not hpas.items  # autoscaling off: helm removed it
    # The generated Redis password and API key survive the upgrade (the chart looks them up).
    assert secret_value(api, f"{RELEASE}-redis", "redis-password", namespace) == password
    assert secret_value(api, f"{RELEASE}-ingest", "api-key", namespace) == api_key

    refused = cluster_helm.run(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "inference.replicaCount=-2",
        check=False,
    )
    assert refused.returncode != 0
    assert "/inference/replicaCount" in refused.stderr
    status = cluster_helm.run("status", RELEASE, "--namespace", namespace).stdout
    assert "REVISION: 2" in status and "STATUS: deployed" in status
