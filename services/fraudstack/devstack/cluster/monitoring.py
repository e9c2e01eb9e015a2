"""The cluster's monitoring add-ons, as users have them beside fraudstack.

* **metrics-server** in kube-system behind the ``v1beta1.metrics.k8s.io`` APIService, so the
  chart's HorizontalPodAutoscaler reads CPU and ``kubectl top`` works. The API server reaches it
  through the aggregation layer (its front-proxy flags, see :mod:`fraudstack.devstack.cluster`);
  it reads the kubelet's ``/metrics/resource`` over the kubelet's self-signed certificate.
* **the Prometheus Operator** and its config reloader in ``monitoring``, with the operator's
  own CRDs and ClusterRoles, copied from its Go module by ``deploy/prometheus-operator/build.sh``.
  This is the part of kube-prometheus-stack that fraudstack's chart relies on.
* **Prometheus** itself (:func:`prometheus_manifest`), a ``Prometheus`` resource the operator
  runs, named and labelled as kube-prometheus-stack's: it selects ServiceMonitors and
  PrometheusRules carrying :data:`RELEASE_LABELS` in every namespace, and its Service answers at
  :data:`PROMETHEUS_URL`. It is the version the operator's module requires, built by the same
  script with Kubernetes service discovery (Debian's package has none, so the image ``make
  images`` builds from it serves docker compose, not a cluster).

Every image is a FROM-scratch image of the static binary, pushed to the cluster's registry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fraudstack.devstack.cluster.registry import REGISTRY_ADDRESS

METRICS_SERVER_VERSION = "v0.8.0"
OPERATOR_VERSION = "v0.93.1"
#: the Prometheus release the operator's module requires (the newest it supports)
PROMETHEUS_VERSION = "v3.13.1"
NAMESPACE = "monitoring"
#: what kube-prometheus-stack calls its Prometheus (and that Prometheus' Service)
PROMETHEUS_NAME = "kube-prometheus-stack-prometheus"
PROMETHEUS_URL = f"http://{PROMETHEUS_NAME}.{NAMESPACE}:9090"
#: the StatefulSet the operator runs it in (its pod: ``<this>-0``)
PROMETHEUS_STATEFULSET = f"prometheus-{PROMETHEUS_NAME}"
#: the label kube-prometheus-stack's Prometheus selects ServiceMonitors and rules by
RELEASE_LABELS = {"release": "kube-prometheus-stack"}

#: repository -> (tag, cached binary name, path in the image)
IMAGES = {
    "fraudstack/metrics-server": (
        METRICS_SERVER_VERSION,
        f"metrics-server-{METRICS_SERVER_VERSION}",
        "/metrics-server",
    ),
    "fraudstack/prometheus-operator": (
        OPERATOR_VERSION,
        f"prometheus-operator-{OPERATOR_VERSION}",
        "/bin/operator",
    ),
    # the operator runs it as /bin/prometheus-config-reloader
    "fraudstack/prometheus-config-reloader": (
        OPERATOR_VERSION,
        f"prometheus-config-reloader-{OPERATOR_VERSION}",
        "/bin/prometheus-config-reloader",
    ),
    "fraudstack/prometheus": (
        PROMETHEUS_VERSION,
        f"prometheus-{PROMETHEUS_VERSION}",
        "/bin/prometheus",
    ),
}
BINARIES = [binary for _, binary, _ in IMAGES.values()]
#: what ``deploy/prometheus-operator/build.sh`` builds
OPERATOR_BINARIES = [binary for binary in BINARIES if binary.startswith("prometheus")]
OPERATOR_MANIFESTS = f"prometheus-operator-{OPERATOR_VERSION}.manifests"


def image(repository: str) -> str:
    return f"{REGISTRY_ADDRESS}/{repository}:{IMAGES[repository][0]}"


#: a container as the upstream manifests run it: no root, nothing written but its volumes
_LOCKED_DOWN = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
_NOBODY = {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}}


def _binding(name: str, role: str, account: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def _account(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
    }


def _deployment(
    name: str, namespace: str, labels: dict[str, str], container: dict[str, Any], **pod: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": _NOBODY,
                    "containers": [{"securityContext": _LOCKED_DOWN, **container}],
                    **pod,
                },
            },
        },
    }


def _write(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    return path


def metrics_server_manifest(path: Path) -> Path:
    """metrics-server's objects (upstream's ``manifests/base``, for this node) as one List."""
    system = "kube-system"
    labels = {"k8s-app": "metrics-server"}
    container = {
        "name": "metrics-server",
        "image": image("fraudstack/metrics-server"),
        "args": [
            "--cert-dir=/tmp",
            "--secure-port=10250",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            # the kubelet serves a self-signed certificate (no serving-cert approver here)
            "--kubelet-insecure-tls",
            "--metric-resolution=15s",
        ],
        "ports": [{"name": "https", "containerPort": 10250}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 5,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    items = [
        _account("metrics-server", system),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"
                    for role in ("view", "edit", "admin")
                },
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:metrics-server"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        _binding("system:metrics-server", "system:metrics-server", "metrics-server", system),
        _binding(
            "metrics-server:system:auth-delegator",
            "system:auth-delegator",
            "metrics-server",
            system,
        ),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "metrics-server-auth-reader", "namespace": system},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "metrics-server", "namespace": system}],
        },
        _deployment(
            "metrics-server",
            system,
            labels,
            container,
            priorityClassName="system-cluster-critical",
            volumes=[{"name": "tmp", "emptyDir": {}}],
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": system, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "https", "port": 443, "targetPort": "https"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "service": {"name": "metrics-server", "namespace": system},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    return _write(path, items)


def operator_files(bin_dir: Path) -> list[Path]:
    """The operator's CRDs and the ClusterRoles of the operator (``prometheus-operator``) and of
    the Prometheus servers it runs (``prometheus``), as the module ships them, for ``kubectl
    apply --server-side`` (the CRDs are too big for a client-side apply's annotation)."""
    folder = bin_dir / OPERATOR_MANIFESTS
    roles = ("prometheus-operator-cluster-role.yaml", "prometheus-cluster-role.yaml")
    return [*sorted(folder.glob("monitoring.coreos.com_*.yaml")), *(folder / r for r in roles)]


def operator_manifest(path: Path) -> Path:
    """The Prometheus Operator (upstream's ``example/rbac/prometheus-operator``) as one List;
    its ClusterRole comes with :func:`operator_files`."""
    labels = {"app.kubernetes.io/name": "prometheus-operator"}
    container = {
        "name": "prometheus-operator",
        "image": image("fraudstack/prometheus-operator"),
        "args": [
            f"--prometheus-config-reloader={image('fraudstack/prometheus-config-reloader')}",
            "--log-level=info",
        ],
        "env": [{"name": "GOGC", "value": "30"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "200Mi"}},
    }
    items = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        _account("prometheus-operator", NAMESPACE),
        _binding("prometheus-operator", "prometheus-operator", "prometheus-operator", NAMESPACE),
        _deployment("prometheus-operator", NAMESPACE, labels, container),
    ]
    return _write(path, items)


def prometheus_manifest(path: Path) -> Path:
    """A ``Prometheus`` like kube-prometheus-stack's, with its ServiceAccount and its Service,
    as one List."""
    items = [
        _account(PROMETHEUS_NAME, NAMESPACE),
        _binding(PROMETHEUS_NAME, "prometheus", PROMETHEUS_NAME, NAMESPACE),
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Prometheus",
            "metadata": {"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
            "spec": {
                "image": image("fraudstack/prometheus"),
                "version": PROMETHEUS_VERSION,
                "replicas": 1,
                "serviceAccountName": PROMETHEUS_NAME,
                "scrapeInterval": "10s",
                "evaluationInterval": "10s",
                "retention": "6h",
                # every namespace, by label: kube-prometheus-stack's defaults with
                # serviceMonitorSelectorNilUsesHelmValues
                "serviceMonitorSelector": {"matchLabels": RELEASE_LABELS},
                "serviceMonitorNamespaceSelector": {},
                "ruleSelector": {"matchLabels": RELEASE_LABELS},
                "ruleNamespaceSelector": {},
                "podMonitorSelector": {"matchLabels": RELEASE_LABELS},
                "podMonitorNamespaceSelector": {},
                "securityContext": {**_NOBODY, "fsGroup": 65534},
                "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
            "spec": {
                "selector": {"operator.prometheus.io/name": PROMETHEUS_NAME},
                "ports": [{"name": "http-web", "port": 9090, "targetPort": 9090}],
            },
        },
    ]
    return _write(path, items)
