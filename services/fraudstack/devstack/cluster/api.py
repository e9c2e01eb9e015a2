"""Talking to the cluster as its admin: the cached kubectl and plain API reads."""

from __future__ import annotations

import subprocess
from typing import Any

from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.cluster.node import NODE_NAME
from fraudstack.devstack.kube import api_request
from fraudstack.errors import DevstackError


def kubectl(info: ServerInfo, *arguments: str, timeout: float = 120) -> str:
    """Run the cached kubectl against the cluster; its output, or a DevstackError."""
    result = subprocess.run(
        [info["kubectl"], f"--kubeconfig={info['kubeconfig']}", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise DevstackError(f"kubectl {' '.join(arguments)} failed: {result.stderr.strip()[:400]}")
    return result.stdout


def api_get(info: ServerInfo, path: str) -> dict[str, Any] | None:
    """GET an API path as the admin; None when it is not there (yet)."""
    response = api_request(info, path)
    if response is None or response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body


def node_ready(info: ServerInfo) -> bool:
    node = api_get(info, f"/api/v1/nodes/{NODE_NAME}")
    conditions = (node or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def available(info: ServerInfo, namespace: str, resource: str, name: str) -> bool:
    """Whether a Deployment or StatefulSet (``resource``: ``deployments``, ``statefulsets``) has
    a replica available; False while it does not exist yet."""
    workload = api_get(info, f"/apis/apps/v1/namespaces/{namespace}/{resource}/{name}")
    return bool((workload or {}).get("status", {}).get("availableReplicas"))
