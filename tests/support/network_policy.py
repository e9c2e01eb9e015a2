"""Who may open a connection to whom under a set of NetworkPolicies (networking.k8s.io/v1).

Nothing here enforces policies (the test API server runs no CNI), so the chart tests judge the
rendered policies with this model of the rules the Kubernetes documentation states:

- a pod selected by no policy of type Ingress accepts everything; once selected, it accepts
  only what some ingress rule of some policy selecting it allows (rules add up, never subtract);
- a rule allows a connection when its ``ports`` match (absent or empty: every port) and its
  ``from`` matches (absent or empty: every source);
- a peer with only a ``podSelector`` means pods of the policy's own namespace; with only a
  ``namespaceSelector``, every pod of the matching namespaces; with both, the matching pods of
  the matching namespaces; an ``ipBlock`` is taken to mean clients outside the cluster.

Traffic from the pod's own node (the kubelet's probes) is always allowed and not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = list[dict[str, Any]]


@dataclass(frozen=True)
class Pod:
    """A source or destination of a connection. ``namespace`` None is a client outside the
    cluster (a NodePort or LoadBalancer user), which only ``ipBlock`` peers match."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: str | None = None
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports

    @property
    def namespace_labels(self) -> dict[str, str]:
        """What every namespace carries (the API server sets it)."""
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels; an empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], source: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return source.namespace is None
    if source.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], source.namespace_labels)
    else:
        namespace_ok = source.namespace == policy_namespace
    return namespace_ok and selects(peer.get("podSelector"), source.labels)


def _port_matches(rule_port: Mapping[str, Any], port: int, destination: Pod) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    if "port" not in rule_port:
        return True
    wanted = rule_port["port"]
    if isinstance(wanted, str):
        return destination.ports.get(wanted) == port
    return bool(wanted <= port <= rule_port.get("endPort", wanted))


def _is_ingress_policy(policy: Mapping[str, Any]) -> bool:
    # policyTypes defaults to Ingress (plus Egress when egress rules are given)
    return "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])


def allows(policies: Iterable[Mapping[str, Any]], source: Pod, destination: Pod, port: int) -> bool:
    """Whether ``source`` may open a TCP connection to ``port`` of ``destination``. Policies
    without a namespace in their metadata (as ``helm template`` renders them) live in the
    destination's namespace."""
    applicable = [
        policy
        for policy in policies
        if _is_ingress_policy(policy)
        and policy["metadata"].get("namespace", destination.namespace) == destination.namespace
        and selects(policy["spec"]["podSelector"], destination.labels)
    ]
    if not applicable:
        return True
    for policy in applicable:
        namespace = policy["metadata"].get("namespace", destination.namespace) or ""
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports") or [{}]
            peers = rule.get("from") or [{"namespaceSelector": {}}, {"ipBlock": {}}]
            if any(_port_matches(p, port, destination) for p in ports) and any(
                _peer_matches(peer, source, namespace) for peer in peers
            ):
                return True
    return False


def network_policies(manifest: Manifest) -> list[dict[str, Any]]:
    return [document for document in manifest if document["kind"] == "NetworkPolicy"]


def release_pods(manifest: Manifest, namespace: str) -> dict[str, Pod]:
    """The pod of every Deployment, StatefulSet and CronJob, by its component label."""
    pods = {}
    for document in manifest:
        kind, spec = document["kind"], document.get("spec", {})
        if kind in ("Deployment", "StatefulSet"):
            template = spec["template"]
        elif kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
        else:
            continue
        labels = template["metadata"]["labels"]
        ports = {
            port["name"]: port["containerPort"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
            if "name" in port
        }
        component = labels["app.kubernetes.io/component"]
        pods[component] = Pod(component, labels, namespace, ports)
    return pods
