"""The single-node cluster of ``fraudstack devstack up --cluster``, checked for real.

A busybox pod from the local registry serves a page; the host reaches it through a ClusterIP
Service (kube-proxy's iptables rules), ``kubectl logs`` and ``exec`` reach the kubelet, CoreDNS
answers cluster names and nothing else, a pod calls the API server with its service-account
token through the ``kubernetes`` Service, and ``down`` leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraudstack.devstack.cluster import network
from fraudstack.devstack.cluster.node import NODE_NAME
from fraudstack.devstack.kube import KUBE_VERSION
from support.cluster import TEST_PAGE, Cluster
from support.waiting import eventually

pytestmark = pytest.mark.cluster

NAMESPACE = "cluster-test"
WEB = "web"


@pytest.fixture(scope="module")
def web(cluster: Cluster, busybox_image: str) -> Iterator[dict[str, Any]]:
    """A pod serving /www on 8080 and a ClusterIP Service in front of it."""
    labels = {"app": WEB}
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": WEB, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "containers": [
                    {
                        "name": WEB,
                        "image": busybox_image,
                        "args": ["-c", "echo hello from the pod; exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }
                ],
                "terminationGracePeriodSeconds": 0,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": WEB, "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    pod = cluster.wait_pod_ready(NAMESPACE, WEB)
    yield pod
    if cluster.is_up():
        cluster.run("delete", "namespace", NAMESPACE, "--wait=false")


def exec_in(cluster: Cluster, *command: str) -> subprocess.CompletedProcess[str]:
    return cluster.run("exec", "-n", NAMESPACE, WEB, "--", *command)


def http_get_in_pod(cluster: Cluster, host: str, path: str) -> subprocess.CompletedProcess[str]:
    request = f"GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    return exec_in(cluster, "sh", "-c", f"printf '{request}' | nc -w 3 {host} 80")


def test_the_node_is_ready_at_the_cluster_version(cluster: Cluster) -> None:
    node = cluster.get(f"/api/v1/nodes/{NODE_NAME}")
    assert node is not None
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBE_VERSION
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == [network.NODE_IP]
    assert ipaddress.ip_address(internal[0]) in ipaddress.ip_network("198.19.128.0/17")


def test_a_pod_from_the_local_registry_runs_with_logs_and_exec(
    cluster: Cluster, web: dict[str, Any]
) -> None:
    assert ipaddress.ip_address(web["status"]["podIP"]) in ipaddress.ip_network(network.POD_CIDR)
    assert web["status"]["containerStatuses"][0]["image"].startswith("127.0.0.1:5000/")
    logs = cluster.kubectl("logs", "-n", NAMESPACE, WEB)
    assert "hello from the pod" in logs
    page = exec_in(cluster, "cat", "/www/index.html")
    assert page.returncode == 0, page.stderr
    assert page.stdout.encode() == TEST_PAGE


def test_a_cluster_ip_service_answers_from_the_host_through_kube_proxy(
    cluster: Cluster, web: dict[str, Any]
) -> None:
    service = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/services/{WEB}")
    assert service is not None
    address = service["spec"]["clusterIP"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(network.SERVICE_CIDR)

    def fetch() -> bytes | None:
        try:
            response = httpx.get(f"http://{address}/index.html", timeout=2)
        except httpx.HTTPError:
            return None
        return response.content if response.status_code == 200 else None

    assert eventually(fetch, f"the page through Service {address}", timeout=30) == TEST_PAGE


def test_a_pod_reaches_a_service_by_its_dns_name(cluster: Cluster, web: dict[str, Any]) -> None:
    """pod -> CoreDNS (a Service) -> the web Service -> a pod on the same bridge."""
    url = f"http://{WEB}.{NAMESPACE}.svc.cluster.local/index.html"

    def fetch() -> str | None:
        result = http_get_in_pod(cluster, f"{WEB}.{NAMESPACE}.svc.cluster.local", "/index.html")
        return result.stdout if result.returncode == 0 and " 200 " in result.stdout else None

    response = eventually(fetch, f"GET {url} in the pod", timeout=30)
    assert response.encode().endswith(b"\n\n" + TEST_PAGE)  # kubectl turned \r\n into \n


def test_coredns_answers_cluster_names_and_nothing_outside(
    cluster: Cluster, web: dict[str, Any]
) -> None:
    inside = exec_in(cluster, "nslookup", "kubernetes.default.svc.cluster.local")
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert network.API_SERVICE_IP in inside.stdout
    assert network.DNS_SERVICE_IP in inside.stdout  # the answer came from CoreDNS's Service
    outside = exec_in(cluster, "nslookup", "example.com")
    assert outside.returncode != 0, f"an outside name resolved:\n{outside.stdout}"


def test_a_pod_calls_the_api_with_its_service_account_token(
    cluster: Cluster, web: dict[str, Any]
) -> None:
    """kubectl in the pod: in-cluster config, the mounted token, the CA from kube-root-ca.crt."""
    who = exec_in(
        cluster, "kubectl", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert who.returncode == 0, who.stdout + who.stderr
    assert who.stdout == f"system:serviceaccount:{NAMESPACE}:default"
    # The token carries no more than its RBAC: the default account may not list pods.
    refused = exec_in(cluster, "kubectl", "get", "pods")
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr


def test_nothing_in_the_cluster_reaches_outside_the_machine(
    cluster: Cluster, web: dict[str, Any]
) -> None:
    """A pod's packet to an address off the machine dies in the guard chain."""
    before = _guard_drops()
    gateway = _default_gateway()
    outside = exec_in(
        cluster, "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {gateway} 80"
    )
    assert "HTTP/" not in outside.stdout
    assert _guard_drops() > before


def test_down_leaves_nothing_behind_and_up_comes_back(cluster: Cluster) -> None:
    sysctls = cluster.info["sysctls"]
    folder = Path(cluster.info["marker"])
    pids = list(cluster.info["pids"])
    before = list(cluster.info["cni_results_before"])
    netns_before = list(cluster.info["netns_before"])
    try:
        cluster.down()
        _assert_nothing_left(folder, pids, sysctls, before, netns_before)
    finally:
        # Back up, so a later test (the chart install) finds the cluster running.
        info = cluster.up()
    assert info["ready_seconds"] < 120


def _assert_nothing_left(
    folder: Path,
    pids: list[int],
    sysctls: dict[str, str],
    cni_results_before: list[str],
    netns_before: list[str],
) -> None:
    """What ``down`` must remove: only what this cluster made (a killed earlier run may have
    left network namespaces and CNI results that are not ours to delete)."""
    assert not network.link_exists(network.NODE_BRIDGE)
    assert not network.link_exists(network.POD_BRIDGE)
    for command in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([command], capture_output=True, text=True, check=True).stdout
        assert "KUBE-" not in rules and network.GUARD_CHAIN not in rules
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(folder) not in mounts
    assert set(network.list_netns()) <= set(netns_before)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
    assert network.read_sysctls() == sysctls
    results = {path.name for path in Path("/var/lib/cni/results").glob("*")}
    assert results <= set(cni_results_before)
    assert not folder.exists()


def _default_gateway() -> str:
    """An address off this machine: the next hop of the default route."""
    route = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True)
    words = route.stdout.split()
    return words[words.index("via") + 1] if "via" in words else "192.0.2.1"


def _guard_drops() -> int:
    listing = subprocess.run(
        ["iptables", "-L", network.GUARD_CHAIN, "-v", "-x", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in listing.splitlines() if "DROP" in line)
