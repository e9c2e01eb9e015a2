"""Configuration of the node's processes: containerd, kubelet, kube-proxy and the controllers.

Every file goes to the cluster's state folder, and every path a process writes to is under it
(containerd's root and state, runc's state, the kubelet's root and pod logs, the CNI config and
IP allocations), so ``down`` knows what to remove.

What this machine needs, learnt the hard way (see issue 17):

* root lacks ``CAP_SYS_RESOURCE``: runc cannot set ``oom_score_adj`` and every pod fails with
  "can't get final child's PID from pipe" unless containerd's CRI has
  ``restrict_oom_score_adj = true``;
* cgroup v1 in a hybrid layout: runc with the cgroupfs driver, the kubelet with
  ``cgroupDriver: cgroupfs`` and ``failCgroupV1: false`` (containerd 1.6 has no RuntimeConfig
  call, so the kubelet's own setting is the one that counts);
* podman's CNI config lives in /etc/cni/net.d: containerd gets a ``conf_dir`` of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from fraudstack.devstack.cluster.network import (
    DNS_SERVICE_IP,
    NODE_IP,
    POD_BRIDGE,
    POD_CIDR,
    POD_GATEWAY,
    SERVICE_CIDR,
)
from fraudstack.devstack.cluster.registry import REGISTRY_ADDRESS

NODE_NAME = "fraudstack-node"
CNI_BIN_DIR = "/usr/lib/cni"
PAUSE_REPOSITORY = "fraudstack/pause"
PAUSE_TAG = "3.10-fraudstack.1"
PAUSE_IMAGE = f"{REGISTRY_ADDRESS}/{PAUSE_REPOSITORY}:{PAUSE_TAG}"


def containerd_config(folder: Path, runc: str) -> Path:
    """containerd 1.6 (config version 2) with the CRI plugin set for this machine."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runtime = f"{cri}.containerd.runtimes.runc"
    hosts = folder / "certs.d" / REGISTRY_ADDRESS
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{REGISTRY_ADDRESS}"\n\n'
        f'[host."http://{REGISTRY_ADDRESS}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  skip_verify = true\n"
    )
    config = folder / "containerd.toml"
    config.write_text(
        f"""version = 2
root = "{folder / "root"}"
state = "{folder / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{containerd_socket(folder)}"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{runtime}]
  runtime_type = "io.containerd.runc.v2"

[{runtime}.options]
  BinaryName = "{runc}"
  Root = "{runc_root(folder)}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{folder / "net.d"}"
  max_conf_num = 1

[{cri}.registry]
  config_path = "{folder / "certs.d"}"
"""
    )
    return config


def containerd_socket(folder: Path) -> Path:
    return folder / "containerd.sock"


def runc_root(folder: Path) -> Path:
    return folder / "runc"


def cni_config(folder: Path) -> None:
    """The bridge plugin on ``fscni0``, addresses from host-local with its data in our folder."""
    net_d = folder / "net.d"
    net_d.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "fraudstack",
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # no NAT: pod traffic never leaves the machine
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(folder / "ipam"),
                },
            }
        ],
    }
    (net_d / "10-fraudstack.conflist").write_text(json.dumps(conflist, indent=2))


def kubelet_config(folder: Path, ca: Path, socket: Path, port: int, healthz_port: int) -> Path:
    # An empty resolv.conf: pods with dnsPolicy Default (CoreDNS itself) know no upstream.
    resolv = folder / "resolv.conf"
    resolv.write_text("# the devstack cluster resolves nothing outside it\n")
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(resolv),
        "podLogsDir": str(folder / "pod-logs"),
        "serializeImagePulls": False,
        # A developer's disk is often fuller than a server's: never evict or taint for it.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
        "registerNode": True,
    }
    path = folder / "kubelet.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def kube_proxy_config(folder: Path, kubeconfig: Path, healthz_port: int, metrics_port: int) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {
            # Service traffic is always SNAT-ed: pod -> Service -> pod on the same bridge works
            # without br_netfilter, and replies come back through the host.
            "masqueradeAll": True,
            "localhostNodePorts": False,  # would set route_localnet
        },
        # Leave the machine's conntrack settings alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    path = folder / "kube-proxy.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def controller_manager_args(kubeconfig: Path, pki: dict[str, Path], port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        f"--service-account-private-key-file={pki['service-account.key']}",
        f"--root-ca-file={pki['ca.crt']}",
        f"--cluster-cidr={POD_CIDR}",
        "--allocate-node-cidrs=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--use-service-account-credentials=false",
        "--v=1",
    ]


def scheduler_args(kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--v=1",
    ]
