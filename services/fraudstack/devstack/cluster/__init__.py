"""A real single-node Kubernetes cluster: ``fraudstack devstack up --cluster`` (needs root).

Processes, all at :data:`~fraudstack.devstack.kube.KUBE_VERSION` where they are Kubernetes'
own (built from the Go module proxy into the cache by ``deploy/*/build.sh``), the rest from
Debian (installed when missing):

* etcd and kube-apiserver (:class:`~fraudstack.devstack.kube.KubeServer`), here on the node
  address so pods reach it through the ``kubernetes`` Service with their service-account token;
* kube-controller-manager (signs service-account tokens, publishes ``kube-root-ca.crt``) and
  kube-scheduler;
* containerd 1.6 + runc (cgroupfs) with the CNI bridge plugin, pulling from a local
  ``docker-registry`` on 127.0.0.1:5000 over plain HTTP;
* the kubelet, kube-proxy (iptables), and CoreDNS as a Deployment in kube-system;
* the monitoring add-ons (:mod:`.monitoring`): metrics-server behind the API server's
  aggregation layer, the Prometheus Operator with its CRDs, and a Prometheus it runs as
  kube-prometheus-stack would;
* a default StorageClass with hostPath volumes under ``<state>/cluster/node/volumes``, so a
  chart's claims bind as they would on kind.

Addresses and the guard that keeps the cluster on this machine: :mod:`.network`. Everything
the node writes lives in ``<state>/cluster/``; ``down`` stops only what ``up`` started, then
removes the containers, mounts, network namespaces, bridges, iptables chains and cgroups, and
puts back the kernel settings the kubelet and the bridge plugin changed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.cluster import monitoring, network
from fraudstack.devstack.cluster.addons import (
    COREDNS_REPOSITORY,
    COREDNS_VERSION,
    coredns_manifest,
    storage_manifest,
)
from fraudstack.devstack.cluster.api import api_get, available, kubectl, node_ready
from fraudstack.devstack.cluster.node import (
    NODE_NAME,
    PAUSE_REPOSITORY,
    PAUSE_TAG,
    cni_config,
    containerd_config,
    containerd_socket,
    controller_manager_args,
    kube_proxy_config,
    kubelet_config,
    runc_root,
    scheduler_args,
)
from fraudstack.devstack.cluster.registry import (
    REGISTRY_ADDRESS,
    image_exists,
    push_files_image,
    start_registry,
)
from fraudstack.devstack.kube import KUBE_VERSION, KubeServer, kube_status, make_pki
from fraudstack.devstack.process import (
    command_line,
    free_port,
    run_checked,
    spawn,
    stop,
    wait_until,
)
from fraudstack.devstack.system import ensure_binary
from fraudstack.errors import DevstackError

NODE_COMPONENTS = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")
DEBIAN_PACKAGES = {  # binary -> package
    "containerd": "containerd",
    "runc": "runc",
    f"{network.CNI_BRIDGE_PLUGIN}": "containernetworking-plugins",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "docker-registry": "docker-registry",
}
__all__ = ["ClusterServer", "api_get", "kubectl"]

READY_TIMEOUT_SECONDS = 180.0
CNI_RESULTS = Path("/var/lib/cni/results")
_DEPLOY = Path(__file__).resolve().parents[4] / "deploy"


class ClusterServer(Server):
    name = "cluster"

    def prepare(self, context: Context) -> None:
        if os.geteuid() != 0:
            raise DevstackError("devstack up --cluster needs root (bridges, iptables, mounts)")
        self.binaries = {
            binary: ensure_binary(binary, pkg) for binary, pkg in DEBIAN_PACKAGES.items()
        }
        bin_dir = context.cache_dir / "bin"
        _build(
            "kubernetes", [bin_dir / f"{name}-{KUBE_VERSION}" for name in NODE_COMPONENTS], context
        )
        _build("coredns", [bin_dir / f"coredns-{COREDNS_VERSION}"], context)
        _build("pause", [bin_dir / f"pause-{PAUSE_TAG}"], context)
        _build(
            "metrics-server",
            [bin_dir / f"metrics-server-{monitoring.METRICS_SERVER_VERSION}"],
            context,
        )
        _build(
            "prometheus-operator",
            [bin_dir / binary for binary in monitoring.OPERATOR_BINARIES]
            + [bin_dir / monitoring.OPERATOR_MANIFESTS],
            context,
        )
        self.kube = KubeServer(
            bind_address=network.NODE_IP,
            extra_sans=(f"IP:{network.NODE_IP}", f"IP:{network.API_SERVICE_IP}"),
            folder_name=self.name,
        )
        self.kube.prepare(context)

    def start(self, context: Context) -> ServerInfo:
        started = time.monotonic()
        folder = context.server_dir(self.name)
        node = folder / "node"
        node.mkdir(exist_ok=True)
        info: ServerInfo = {
            "pids": [],
            "marker": str(folder),
            "address": "-",
            "sysctls": network.read_sysctls(),
            "netns_before": network.list_netns(),
            "cni_results_before": _cni_results(),
        }

        def step(what: str) -> None:
            print(f"  {self.name:<11} {what} ({time.monotonic() - started:.1f} s)", flush=True)

        try:
            self._start(context, folder, node, info, step)
        except BaseException:
            self.stop(info)
            raise
        step(
            "node Ready; CoreDNS, metrics-server, the Prometheus Operator and Prometheus available"
        )
        info["ready_seconds"] = round(time.monotonic() - started, 1)
        return info

    def _start(
        self, context: Context, folder: Path, node: Path, info: ServerInfo, step: Any
    ) -> None:
        bin_dir = context.cache_dir / "bin"
        network.set_up_node_network()
        step(f"node address {network.NODE_IP} on {network.NODE_BRIDGE}, guard chain set")

        registry_pid = start_registry(
            self.binaries["docker-registry"], folder, context.cache_dir / "registry"
        )
        if registry_pid is not None:
            info["pids"].append(registry_pid)
        _push_image(PAUSE_REPOSITORY, PAUSE_TAG, bin_dir / f"pause-{PAUSE_TAG}", "/pause")
        _push_image(
            COREDNS_REPOSITORY, COREDNS_VERSION, bin_dir / f"coredns-{COREDNS_VERSION}", "/coredns"
        )
        for repository, (tag, binary, path) in monitoring.IMAGES.items():
            _push_image(repository, tag, bin_dir / binary, path)
        step(f"registry at {REGISTRY_ADDRESS} holds pause, coredns and the add-ons")

        pki = make_pki(
            self.kube.openssl, folder / "pki", folder / "openssl.log", self.kube.extra_sans
        )
        openssl, log = self.kube.openssl, folder / "openssl.log"
        client = _client_cert(
            openssl,
            folder / "pki",
            log,
            "kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
        )
        self.kube.extra_args = (
            f"--kubelet-client-certificate={client[0]}",
            f"--kubelet-client-key={client[1]}",
            # the node's name is in no resolver; never ask the machine's DNS for it
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            *_aggregation_args(openssl, folder / "pki", log),
        )
        kube = self.kube.start(context)
        info["pids"] = kube["pids"] + info["pids"]  # stopped last, in this order
        info.update({key: kube[key] for key in ("address", "url", "kubeconfig", "ca", "token")})
        info["apiserver_log"] = kube["log"]
        kubeconfig = Path(kube["kubeconfig"])
        step(f"kube-apiserver {KUBE_VERSION} at {kube['url']}")

        def launch(name: str, argv: list[str]) -> int:
            pid = spawn(argv, folder / f"{name}.log")
            info["pids"].insert(0, pid)
            return pid

        launch(
            "kube-controller-manager",
            [
                str(bin_dir / f"kube-controller-manager-{KUBE_VERSION}"),
                *controller_manager_args(kubeconfig, pki, free_port()),
            ],
        )
        launch(
            "kube-scheduler",
            [
                str(bin_dir / f"kube-scheduler-{KUBE_VERSION}"),
                *scheduler_args(kubeconfig, free_port()),
            ],
        )

        containerd_dir = node / "containerd"
        containerd_dir.mkdir(exist_ok=True)
        cni_config(containerd_dir)
        config = containerd_config(containerd_dir, self.binaries["runc"])
        socket = containerd_socket(containerd_dir)
        containerd_pid = launch(
            "containerd", [self.binaries["containerd"], "--config", str(config)]
        )
        wait_until(socket.exists, "containerd", 30, containerd_pid, folder / "containerd.log")
        info["containerd_dir"] = str(containerd_dir)
        step("containerd up")

        kubelet_dir = node / "kubelet"
        kubelet_dir.mkdir(exist_ok=True)
        healthz_port = free_port()
        kubelet_file = kubelet_config(node, pki["ca.crt"], socket, free_port(), healthz_port)
        kubelet_pid = launch(
            "kubelet",
            [
                str(bin_dir / f"kubelet-{KUBE_VERSION}"),
                f"--config={kubelet_file}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={kubelet_dir}",
                f"--cert-dir={kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={network.NODE_IP}",
                "--v=1",
            ],
        )
        info["kubectl"] = str(bin_dir / f"kubectl-{KUBE_VERSION}")
        info["kubelet_healthz"] = f"http://127.0.0.1:{healthz_port}/healthz"
        info["node"] = NODE_NAME

        proxy_file = kube_proxy_config(node, kubeconfig, free_port(), free_port())
        launch(
            "kube-proxy",
            [str(bin_dir / f"kube-proxy-{KUBE_VERSION}"), f"--config={proxy_file}", "--v=1"],
        )
        wait_until(
            lambda: node_ready(info),
            "the node to turn Ready",
            READY_TIMEOUT_SECONDS,
            kubelet_pid,
            folder / "kubelet.log",
        )
        # The kubelet rewrote kernel settings at start; the bridge plugin needs forwarding on.
        saved = {k: v for k, v in info["sysctls"].items() if k != "net.ipv4.ip_forward"}
        network.restore_sysctls(saved)
        network.write_sysctl("net.ipv4.ip_forward", "1")
        step(f"node {NODE_NAME} Ready")

        kubectl(info, "apply", "-f", str(coredns_manifest(node / "coredns.json")))
        kubectl(info, "apply", "-f", str(storage_manifest(node / "storage.json", node / "volumes")))
        # the monitoring add-ons: metrics-server, the Prometheus Operator and its CRDs, and a
        # Prometheus it runs (created once the operator's CRDs are established)
        files = [f"--filename={path}" for path in monitoring.operator_files(bin_dir)]
        kubectl(info, "apply", "--server-side", "--force-conflicts", *files)
        kubectl(info, "apply", "-f", str(monitoring.operator_manifest(node / "po.json")))
        kubectl(info, "apply", "-f", str(monitoring.metrics_server_manifest(node / "ms.json")))
        kubectl(
            info,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/prometheuses.monitoring.coreos.com",
        )
        kubectl(info, "apply", "-f", str(monitoring.prometheus_manifest(node / "prom.json")))
        for namespace, resource, name in (
            ("kube-system", "deployments", "coredns"),
            ("kube-system", "deployments", "metrics-server"),
            (monitoring.NAMESPACE, "deployments", "prometheus-operator"),
            (monitoring.NAMESPACE, "statefulsets", monitoring.PROMETHEUS_STATEFULSET),
        ):
            wait_until(
                functools.partial(available, info, namespace, resource, name),
                f"{name} to be available",
                READY_TIMEOUT_SECONDS,
                None,
                folder / "kubelet.log",
            )

    def answers(self, info: ServerInfo) -> bool:
        if "url" not in info or not kube_status(info):
            return False
        try:
            return httpx.get(info["kubelet_healthz"], timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, info: ServerInfo) -> None:
        """Stop the processes, then remove everything ``start`` set up (each step if present)."""
        marker = info["marker"]
        folder = Path(marker)
        processes = list(info["pids"])
        # Node side first (kube-proxy, kubelet, scheduler, controller manager), API last.
        node_side = [pid for pid in processes if _name_of(pid) not in ("etcd", "kube-apiserver")]
        for pid in node_side:
            if _name_of(pid) == "containerd":
                _kill_containers(folder)
            stop(pid, marker)
        _kill_containers(folder)  # also when containerd was already gone
        for pid in processes:
            stop(pid, marker)
        network.remove_pod_cgroups()  # kills what is left in them: mounts and netns then free
        network.remove_kube_chains()
        network.unmount_under(folder)
        network.remove_netns(
            [
                n
                for n in network.list_netns()
                if n.startswith("cni-") and n not in info.get("netns_before", [])
            ]
        )
        network.tear_down_network()
        network.restore_sysctls(info.get("sysctls", {}))
        # The CNI library's cache of each sandbox's results (ours: loopback and fraudstack).
        before = set(info.get("cni_results_before", []))
        for name in _cni_results():
            if name not in before and name.startswith(("cni-loopback-", "fraudstack-")):
                with contextlib.suppress(OSError):
                    (CNI_RESULTS / name).unlink()
        shutil.rmtree(folder, ignore_errors=True)


def _push_image(repository: str, tag: str, binary: Path, path_in_image: str) -> None:
    if not image_exists(repository, tag):
        push_files_image(repository, tag, {path_in_image: binary}, [path_in_image])


def _build(script: str, binaries: list[Path], context: Context) -> None:
    """Run ``deploy/<script>/build.sh`` when a binary it makes is not in the cache yet."""
    if all(os.access(binary, os.X_OK) for binary in binaries):
        return
    build = _DEPLOY / script / "build.sh"
    if not build.exists():
        raise DevstackError(f"{binaries[0].name} is not built and {build} is missing")
    print(f"  cluster     building {script} (first time only, minutes)...", flush=True)
    result = subprocess.run(
        ["bash", str(build)],
        env={**os.environ, "FRAUDSTACK_CACHE_DIR": str(context.cache_dir)},
        stdout=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise DevstackError(f"deploy/{script}/build.sh failed (exit {result.returncode})")


def _client_cert(
    openssl: str, folder: Path, log: Path, name: str, subject: str, ca: str = "ca"
) -> tuple[Path, Path]:
    """A client certificate ``<name>.crt``/``.key`` for ``subject``, signed by ``<ca>.crt``."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    if cert.exists() and key.exists():
        return cert, key
    (folder / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\n")
    steps = [  # subjects hold no spaces: split words
        f"req -newkey rsa:2048 -nodes -keyout {key.name} -out {name}.csr -subj {subject}",
        f"x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 3650"
        f" -extfile {name}.ext -out {cert.name}",
    ]
    for words in (step.split() for step in steps):
        run_checked([openssl, *words], f"openssl {words[0]}", log, cwd=folder)
    key.chmod(0o600)
    return cert, key


def _aggregation_args(openssl: str, folder: Path, log: Path) -> tuple[str, ...]:
    """The API server's front-proxy flags: it then serves the APIs of extension servers
    (metrics-server's ``metrics.k8s.io``), telling them who asks through request headers that
    they trust from the front-proxy client certificate alone (a CA of its own, as kubeadm's)."""
    ca = "front-proxy-ca"
    if not (folder / f"{ca}.crt").exists():
        run_checked(
            [
                openssl,
                *f"req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout {ca}.key -out {ca}.crt"
                f" -subj /CN={ca}".split(),
            ],
            "openssl req",
            log,
            cwd=folder,
        )
        (folder / f"{ca}.key").chmod(0o600)
    cert, key = _client_cert(
        openssl, folder, log, "front-proxy-client", "/CN=front-proxy-client", ca
    )
    return (
        f"--requestheader-client-ca-file={folder / f'{ca}.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={cert}",
        f"--proxy-client-key-file={key}",
        # to the extension server's pod address: the API server runs on the node, beside it
        "--enable-aggregator-routing=true",
    )


def _cni_results() -> list[str]:
    return sorted(path.name for path in CNI_RESULTS.iterdir()) if CNI_RESULTS.exists() else []


def _name_of(pid: int) -> str:
    line = command_line(pid) or ""
    return Path(line.split(" ", 1)[0]).name.rsplit("-v", 1)[0] if line else ""


def _kill_containers(folder: Path) -> None:
    """Kill every container runc runs for this node, then the shims that watched them."""
    # The shim keeps runc's state per containerd namespace: <Root>/k8s.io/<container>.
    top = runc_root(folder / "node" / "containerd")
    roots = [path for path in top.iterdir() if path.is_dir()] if top.exists() else []
    for root in roots:
        listing = network.run(["runc", "--root", str(root), "list", "-q"], check=False).stdout
        for container in listing.split():
            for action in (["kill", "--all", container, "KILL"], ["delete", "--force", container]):
                network.run(["runc", "--root", str(root), *action], check=False)
    socket = str(containerd_socket(folder / "node" / "containerd"))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        line = command_line(int(entry.name)) or ""
        if "containerd-shim" in line and socket in line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
