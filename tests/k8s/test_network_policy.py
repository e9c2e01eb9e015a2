"""The chart's NetworkPolicies, read as a network plugin would (``support.network_policy``):
who may reach each port of the release, for the default values and the variants."""

from __future__ import annotations

import pytest

from support.kube import CHART, Helm, Manifest
from support.network_policy import Pod, allows, network_policies, release_pods, selects

RELEASE = "fraudstack"


@pytest.fixture(scope="module")
def default(helm: Helm) -> Manifest:
    return helm.template()


NAMESPACE = "fraudstack"
# Pods of the cluster that are not the release's: a neighbour in its namespace, a pod of the
# payments namespace, Prometheus, and a client outside the cluster.
NEIGHBOUR = Pod("neighbour", {"app": "other"}, NAMESPACE)
PAYMENTS = Pod("payments", {"app": "gateway"}, "payments")
PROMETHEUS = Pod("prometheus", {"app.kubernetes.io/name": "prometheus"}, "monitoring")
OUTSIDE = Pod("outside")
STRANGERS = (NEIGHBOUR, PAYMENTS, PROMETHEUS, OUTSIDE)


def reachers(manifest: Manifest, target: str, port: int) -> set[str]:
    """Every pod (the release's by component, the strangers by name) that may connect to
    ``port`` of the ``target`` component's pods."""
    pods = release_pods(manifest, NAMESPACE)
    policies = network_policies(manifest)
    sources = [*pods.values(), *STRANGERS]
    return {pod.name for pod in sources if allows(policies, pod, pods[target], port)}


def test_network_policies_isolate_every_pod_of_the_release(default: Manifest) -> None:
    policies = network_policies(default)
    for pod in release_pods(default, NAMESPACE).values():
        assert any(selects(p["spec"]["podSelector"], pod.labels) for p in policies), pod.name
    for policy in policies:
        # Ingress only: egress stays open (values.yaml says why).
        assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize(
    ("sets", "redis_clients", "kafka_clients"),
    [
        ([], {"aggregate", "inference", "operator"}, {"ingest", "aggregate", "snapshot"}),
        # snapshot reads Redis only when it snapshots the online features
        (
            ["config.extraEnv.FRAUDSTACK_SNAPSHOT_FEATURES_EVERY=300"],
            {"aggregate", "inference", "operator", "snapshot"},
            {"ingest", "aggregate", "snapshot"},
        ),
        (
            ["operator.enabled=false", "ingest.enabled=false"],
            {"aggregate", "inference"},
            {
                "aggregate",
                "snapshot",
            },
        ),
        # no client left: the policy must then let nobody in (an empty `from` is everybody)
        (
            [f"{c}.enabled=false" for c in ("aggregate", "inference", "operator", "ingest")]
            + ["snapshot.enabled=false"],
            set(),
            set(),
        ),
    ],
    ids=["default", "snapshot-features", "no-operator-no-ingest", "no-clients"],
)
def test_only_their_clients_reach_redis_and_kafka(
    helm: Helm, sets: list[str], redis_clients: set[str], kafka_clients: set[str]
) -> None:
    manifest = helm.template(sets=sets)
    assert reachers(manifest, "redis", 6379) == redis_clients
    assert reachers(manifest, "kafka", 9092) == kafka_clients
    # The KRaft controller listens on the pod's loopback only: nobody reaches it from outside.
    assert reachers(manifest, "kafka", 9093) == set()
    assert reachers(manifest, "redis", 6380) == set()


def test_apis_are_open_and_metrics_reach_every_namespace_by_default(default: Manifest) -> None:
    everyone_inside = set(release_pods(default, NAMESPACE)) | {
        "neighbour",
        "payments",
        "prometheus",
    }
    assert reachers(default, "ingest", 8000) == everyone_inside | {"outside"}
    assert reachers(default, "inference", 8080) == everyone_inside | {"outside"}
    for component in ("aggregate", "snapshot"):
        assert reachers(default, component, 9100) == everyone_inside
    # Probes come from the node; the operator's health port is open to all on top of that.
    assert reachers(default, "operator", 8080) == everyone_inside | {"outside"}
    assert reachers(default, "operator", 9000) == set()
    assert reachers(default, "train", 8080) == set()


def test_restricted_api_and_metrics_peers(helm: Helm) -> None:
    payments = (
        '[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "payments"}}}]'
    )
    monitoring = (
        '[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},'
        ' "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]'
    )
    manifest = helm.template(
        set_json=[
            f"networkPolicy.apiAllowedFrom={payments}",
            f"networkPolicy.metricsAllowedFrom={monitoring}",
        ],
    )
    # /metrics shares the API port, so Prometheus reaches it as well.
    assert reachers(manifest, "ingest", 8000) == {"payments", "prometheus"}
    assert reachers(manifest, "inference", 8080) == {"payments", "prometheus"}
    assert reachers(manifest, "aggregate", 9100) == {"prometheus"}
    nobody = helm.template(set_json=["networkPolicy.metricsAllowedFrom=[]"])
    assert reachers(nobody, "snapshot", 9100) == set()


def test_network_policies_can_be_turned_off(helm: Helm) -> None:
    assert not network_policies(helm.template(sets=["networkPolicy.enabled=false"]))
    external = helm.template(CHART / "ci" / "external-deps-values.yaml")
    # No in-chart Redis or Kafka: no policy for them, the rest as usual.
    components = {
        p["metadata"]["labels"].get("app.kubernetes.io/component")
        for p in network_policies(external)
    }
    assert components == {None, "ingest", "inference", "aggregate", "snapshot", "operator"}


# -- values the schema or the chart must refuse -----------------------------------------------
