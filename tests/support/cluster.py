"""The real single-node cluster in tests: one per run, the one ``devstack up --cluster`` starts.

``cluster`` (session) brings it up in the test run's state folder (``tests/conftest.py``) and
takes it down at the end, unless it was already up. Tests that bring it down themselves bring it
back with :meth:`Cluster.up`, so a later test (the chart install) finds it running. Needs root:
without it the cluster tests are skipped with the reason.

``busybox_image`` pushes Debian's static busybox (``busybox-static``) as a FROM-scratch image to
the cluster's registry (sh, nc, nslookup, httpd, cat), with the cached static kubectl beside it,
which in a pod uses the pod's service-account token (in-cluster config) as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fraudstack.devstack import Devstack
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.cluster import api_get, kubectl
from fraudstack.devstack.cluster.registry import push_files_image
from fraudstack.devstack.system import ensure_binary
from support.waiting import eventually

# Not wget: Debian's busybox-static 1.35 wget segfaults on this machine, on the host too.
BUSYBOX_APPLETS = ("sh", "nc", "nslookup", "httpd", "cat", "sleep", "echo", "printf", "ls")
TEST_PAGE = b"fraudstack cluster test page\n"


class Cluster:
    """The running cluster: its recorded state, kubectl, and ways to wait for objects."""

    def __init__(self, stack: Devstack) -> None:
        self.stack = stack

    @property
    def info(self) -> ServerInfo:
        return self.stack.read_state()["cluster"]

    @property
    def kubeconfig(self) -> str:
        return str(self.info["kubeconfig"])

    def is_up(self) -> bool:
        return "cluster" in self.stack.read_state()

    def up(self) -> ServerInfo:
        return self.stack.up(extra=["cluster"], progress=False, defaults=False)["cluster"]

    def down(self) -> None:
        self.stack.down(names=["cluster"])

    def kubectl(self, *arguments: str, timeout: float = 120) -> str:
        return kubectl(self.info, *arguments, timeout=timeout)

    def run(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """kubectl without raising: for commands that are meant to fail."""
        return subprocess.run(
            [self.info["kubectl"], f"--kubeconfig={self.kubeconfig}", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apply(self, *objects: dict[str, Any]) -> None:
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        subprocess.run(
            [self.info["kubectl"], f"--kubeconfig={self.kubeconfig}", "apply", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def get(self, path: str) -> dict[str, Any] | None:
        return api_get(self.info, path)

    def wait_pod_ready(self, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            pod = self.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            conditions = (pod or {}).get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return pod
            return None

        try:
            return eventually(ready, f"pod {namespace}/{name} Ready", timeout, interval=0.5)
        except AssertionError as exc:
            events = self.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")
            raise AssertionError(
                f"pod {namespace}/{name} never Ready; {self.why_not_ready(namespace, name)}"
                f"events:\n{events.stdout}"
            ) from exc

    def why_not_ready(self, namespace: str, name: str) -> str:
        """Each container's state and last termination, and the last lines a restarted
        container wrote before it ended: what a person runs ``kubectl describe`` for."""
        pod = self.get(f"/api/v1/namespaces/{namespace}/pods/{name}") or {}
        lines = []
        for status in pod.get("status", {}).get("containerStatuses", []):
            container = status["name"]
            lines.append(
                f"container {container}: ready={status.get('ready')} "
                f"restarts={status.get('restartCount', 0)} state={status.get('state')} "
                f"last={status.get('lastState')}"
            )
            if status.get("restartCount"):
                previous = self.run(
                    "logs", "-n", namespace, name, "-c", container, "--previous", "--tail=15"
                )
                lines.append(f"  its previous run ended with:\n{previous.stdout}{previous.stderr}")
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the cluster needs root (bridges, iptables, mounts)")
    stack = Devstack()
    handle = Cluster(stack)
    was_up = handle.is_up()
    handle.up()
    try:
        yield handle
    finally:
        if not was_up:
            handle.down()


@pytest.fixture(scope="session")
def busybox_image(cluster: Cluster) -> str:
    busybox = Path(ensure_binary("busybox", "busybox-static"))
    return push_files_image(
        "fraudstack-test/busybox",
        "1.35-static-kubectl",
        {
            "/bin/busybox": busybox,
            "/bin/kubectl": Path(cluster.info["kubectl"]),
            "/www/index.html": TEST_PAGE,
        },
        ["/bin/sh"],
        symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
    )
