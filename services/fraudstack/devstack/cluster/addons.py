"""CoreDNS, the cluster's DNS, as a Deployment in kube-system, from an image in the registry.

Its Corefile has no ``forward`` plugin: names outside ``cluster.local`` get no answer, so
nothing in the cluster resolves (or is led to) an address outside this machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fraudstack.devstack.cluster.network import DNS_SERVICE_IP
from fraudstack.devstack.cluster.registry import REGISTRY_ADDRESS

COREDNS_VERSION = "v1.12.4"
COREDNS_REPOSITORY = "fraudstack/coredns"
COREDNS_IMAGE = f"{REGISTRY_ADDRESS}/{COREDNS_REPOSITORY}:{COREDNS_VERSION}"

COREFILE = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loadbalance
}
"""


def coredns_manifest(path: Path) -> Path:
    """Write the CoreDNS objects as one ``List`` (JSON) for ``kubectl apply -f``."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"namespace": "kube-system"}
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                # the kubernetes plugin watches these to answer for Services and pods
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", **meta}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "labels": labels, **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": COREDNS_IMAGE,
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "initialDelaySeconds": 30,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "64Mi"},
                                    "limits": {"memory": "170Mi"},
                                },
                                "volumeMounts": [
                                    {
                                        "name": "config",
                                        "mountPath": "/etc/coredns",
                                        "readOnly": True,
                                    }
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "labels": labels, **meta},
            "spec": {
                "selector": labels,
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    return path


#: The default StorageClass: static hostPath volumes, made by ``up``, bound to any claim.
STORAGE_CLASS = "local-hostpath"
VOLUME_COUNT = 4
VOLUME_SIZE = "20Gi"


def storage_manifest(path: Path, volumes: Path) -> Path:
    """Write a default StorageClass and :data:`VOLUME_COUNT` hostPath volumes of that class.

    A chart's claims (no ``storageClassName``) get the default class and bind to one of these
    volumes, as they would to kind's provisioner. hostPath ignores a pod's ``fsGroup``, so each
    folder is world-writable (mode 0777, as local-path-provisioner makes them): pods running as
    any uid can write it. The folders live under the cluster's state, which ``down`` removes.
    """
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }
    ]
    for number in range(1, VOLUME_COUNT + 1):
        folder = volumes / f"pv-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        items.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{STORAGE_CLASS}-{number}"},
                "spec": {
                    "storageClassName": STORAGE_CLASS,
                    "capacity": {"storage": VOLUME_SIZE},
                    # one node: every pod of a claim shares the folder, whatever the mode
                    "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(folder), "type": "Directory"},
                },
            }
        )
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    return path
