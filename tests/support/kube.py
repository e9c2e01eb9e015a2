"""The Kubernetes bundle in tests: paths, helm, manifests, API errors, and the session fixtures
of a real API server (etcd + kube-apiserver) with the CRDs installed.

Registered as a plugin in ``tests/conftest.py``, so the chart tests and the operator tests share
one API server per run. The API server is the one ``fraudstack devstack up --kube`` runs
(``fraudstack.devstack.kube``), started in a folder of its own; binaries come from the fraudstack
cache and are built on first use (``deploy/kube-apiserver/build.sh``, ``deploy/tools.sh``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.kube import start_kube, stop_kube
from fraudstack.devstack.system import ensure_binary
from fraudstack.paths import cache_dir
from support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fraudstack"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
CRDS = [
    CHART / "crds" / "fraudmodels.fraudstack.io.yaml",
    *sorted((ROOT / "tests" / "k8s" / "crds").glob("*.yaml")),
]
HELM_VERSION = "v3.19.0"  # keep in step with deploy/tools.sh

Manifest = list[dict[str, Any]]


class Helm:
    """The cached helm binary, with its own config folders and (optionally) a kubeconfig."""

    def __init__(self, binary: Path, home: Path, kubeconfig: str | None = None) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig:
            self.env["KUBECONFIG"] = kubeconfig

    def run(
        self, *arguments: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(arguments)} failed:\n{result.stderr}")
        return result

    def template(
        self,
        *values_files: Path,
        sets: Sequence[str] = (),
        set_json: Sequence[str] = (),
        release: str = "fraudstack",
    ) -> Manifest:
        arguments = ["template", release, str(CHART), "--namespace", "fraudstack"]
        for path in values_files:
            arguments += ["-f", str(path)]
        for assignment in sets:
            arguments += ["--set", assignment]
        for assignment in set_json:
            arguments += ["--set-json", assignment]
        return parse_manifest(self.run(*arguments).stdout)


def parse_manifest(text: str) -> Manifest:
    return [document for document in yaml.safe_load_all(text) if document]


def ensure_tools() -> Path:
    """The cached helm, installed by deploy/tools.sh (with vegeta) when missing."""
    binary = cache_dir() / "bin" / f"helm-{HELM_VERSION}"
    if not os.access(binary, os.X_OK):
        subprocess.run(["bash", str(ROOT / "deploy" / "tools.sh")], check=True)
    return binary


def vegeta_binary() -> Path:
    """The cached vegeta, installed by deploy/tools.sh (with helm) when missing."""
    binary = cache_dir() / "bin" / "vegeta"
    if not os.access(binary, os.X_OK):
        subprocess.run(["bash", str(ROOT / "deploy" / "tools.sh")], check=True)
    return binary


def api_error_message(exc: client.ApiException) -> str:
    """The API server's own message from a refused request."""
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except (TypeError, ValueError):
        return str(exc.body)


def as_dict(value: object) -> dict[str, Any]:
    """A custom object as the client returns it (a dict, typed as object)."""
    assert isinstance(value, dict), type(value)
    return value


def which_promtool() -> str:
    """promtool, from Debian's prometheus package (installed when missing)."""
    return ensure_binary("promtool", "prometheus")


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
    for name in names:
        eventually(
            lambda name=name: _established(extensions.read_custom_resource_definition(name)),
            f"CRD {name} Established",
            timeout=30,
        )
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
