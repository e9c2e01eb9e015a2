"""Fixtures for the Kubernetes bundle: helm, and a real API server (etcd + kube-apiserver).

The API server is the one ``fraudstack devstack up --kube`` runs (``fraudstack.devstack.kube``),
started here in a folder of its own for the session. Binaries come from the fraudstack cache and
are built on first use (``deploy/kube-apiserver/build.sh``, ``deploy/tools.sh``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from k8s_support import CRDS, Helm, ensure_tools
from kubernetes import client, config

from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.kube import start_kube, stop_kube
from fraudstack.paths import cache_dir


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    return ensure_tools()


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for rendering and linting: needs no cluster."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-offline"))


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """etcd + the real kube-apiserver for the whole session."""
    started = time.monotonic()
    info = start_kube(tmp_path_factory.mktemp("kube-state"), cache_dir())
    print(f"\nkube-apiserver {info['version']} ready in {time.monotonic() - started:.1f}s")
    try:
        yield info
    finally:
        stop_kube(info)


@pytest.fixture(scope="session")
def api(kube: ServerInfo) -> client.ApiClient:
    return config.new_client_from_config(config_file=kube["kubeconfig"])


@pytest.fixture(scope="session")
def objects(api: client.ApiClient) -> client.CustomObjectsApi:
    """Custom objects (FraudModels) on the session's API server."""
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="session")
def crds(api: client.ApiClient) -> list[str]:
    """Our FraudModel CRD and the Prometheus Operator's two, installed and Established."""
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in CRDS:
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            extensions.create_custom_resource_definition(body)
        except client.ApiException as exc:
            if exc.status != 409:  # already there from an earlier fixture use
                raise
    deadline = time.monotonic() + 30
    for name in names:
        while not _established(extensions.read_custom_resource_definition(name)):
            assert time.monotonic() < deadline, f"CRD {name} not Established within 30 s"
            time.sleep(0.2)
    return names


def _established(crd: client.V1CustomResourceDefinition) -> bool:
    conditions = (crd.status and crd.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def cluster_helm(
    helm_binary: Path, kube: ServerInfo, crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Helm:
    """helm pointed at the real API server, with the CRDs the chart needs already in."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-cluster"), kube["kubeconfig"])


@pytest.fixture(scope="session")
def create_namespace(api: client.ApiClient) -> Callable[[str], str]:
    core = client.CoreV1Api(api)

    def create(name: str) -> str:
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        return name

    return create
