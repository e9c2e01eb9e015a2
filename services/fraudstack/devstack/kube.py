"""Kubernetes API: etcd (Debian ``etcd-server``) and the real kube-apiserver, as local processes.

The API server is built once from the Go module proxy by ``deploy/kube-apiserver/build.sh``
into ``<cache>/bin/kube-apiserver-<version>`` (see that script: ``k8s.io/kubernetes`` cannot be
``go install``-ed, so a small wrapper module maps its staging modules to their published tags).
There is no kubelet, controller manager or scheduler: objects are stored and validated exactly
as a cluster of the same version would (schemas, CRDs, RBAC, admission), but pods never run.

What ``start`` leaves in ``<state>/kube/``::

    pki/ca.crt, ca.key          a throwaway certificate authority (openssl CLI)
    pki/apiserver.crt, .key     serving certificate for 127.0.0.1 / localhost
    pki/service-account.key     signs service-account tokens
    tokens.csv                  one static bearer token for ``admin`` in ``system:masters``
    kubeconfig                  cluster + admin user; what helm, kopf and the tests use
    etcd/                       etcd's data; etcd.log, kube-apiserver.log

Authorization is RBAC, as in a real cluster, so a chart's Roles are checked for real; only the
admin identity bypasses it (``system:masters``).
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
from pathlib import Path

import httpx

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.process import free_port, run_checked, spawn, stop, wait_until
from fraudstack.devstack.system import ensure_binary
from fraudstack.errors import DevstackError

KUBE_VERSION = "v1.34.4"
"""Keep in step with ``KUBE_VERSION`` in ``deploy/kube-apiserver/build.sh`` and its go.mod."""

ADMIN_USER = "admin"
# RFC 2544 benchmarking space, never a private range; the cluster (``up --cluster``) routes it.
SERVICE_CLUSTER_IP_RANGE = "198.19.0.0/17"
START_TIMEOUT_SECONDS = 120.0

_BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "kube-apiserver" / "build.sh"


def apiserver_binary(cache_dir: Path) -> Path:
    """Where ``build.sh`` puts the API server for :data:`KUBE_VERSION`."""
    return cache_dir / "bin" / f"kube-apiserver-{KUBE_VERSION}"


def ensure_apiserver(cache_dir: Path) -> Path:
    """The cached API server binary, built by ``build.sh`` first when it is missing."""
    binary = apiserver_binary(cache_dir)
    if os.access(binary, os.X_OK):
        return binary
    if not _BUILD_SCRIPT.exists():
        raise DevstackError(
            f"kube-apiserver {KUBE_VERSION} is not built and deploy/kube-apiserver/build.sh "
            "is not beside this package: run it from a clone of the project"
        )
    print(
        f"  kube        building kube-apiserver {KUBE_VERSION} (first time only, ~10 min)...",
        flush=True,
    )
    result = subprocess.run(
        ["bash", str(_BUILD_SCRIPT)],
        env={**os.environ, "FRAUDSTACK_CACHE_DIR": str(cache_dir)},
        stdout=subprocess.PIPE,
        stderr=None,  # the script's progress lines go straight to the user
        text=True,
        check=False,
    )
    if result.returncode != 0 or not os.access(binary, os.X_OK):
        raise DevstackError(
            f"building kube-apiserver {KUBE_VERSION} failed (exit {result.returncode}); "
            f"see {binary}.build.log"
        )
    return binary


class KubeServer(Server):
    """etcd and the API server; ``bind_address`` and ``extra_args`` serve the cluster's node."""

    name = "kube"

    def __init__(
        self,
        bind_address: str = "127.0.0.1",
        extra_sans: tuple[str, ...] = (),
        extra_args: tuple[str, ...] = (),
        folder_name: str = "kube",
    ) -> None:
        self.bind_address = bind_address
        self.extra_sans = extra_sans
        self.extra_args = extra_args
        self.folder_name = folder_name

    def prepare(self, context: Context) -> None:
        self.etcd = ensure_binary("etcd", "etcd-server")
        self.openssl = ensure_binary("openssl", "openssl")
        self.apiserver = ensure_apiserver(context.cache_dir)

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.folder_name)
        pki = make_pki(self.openssl, folder / "pki", folder / "openssl.log", self.extra_sans)
        token = _admin_token(folder / "tokens.csv")

        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd_log = folder / "etcd.log"
        etcd_pid = spawn(
            [
                self.etcd,
                "--name=devstack",
                f"--data-dir={folder / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=devstack=http://127.0.0.1:{etcd_peer_port}",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
            etcd_log,
        )
        try:
            wait_until(lambda: _etcd_healthy(etcd_url), "etcd", 30, etcd_pid, etcd_log)
        except DevstackError:
            stop(etcd_pid, str(folder))
            raise

        url = f"https://{self.bind_address}:{api_port}"
        api_log = folder / "kube-apiserver.log"
        api_pid = spawn(
            [
                str(self.apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.bind_address}",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki['apiserver.crt']}",
                f"--tls-private-key-file={pki['apiserver.key']}",
                f"--client-ca-file={pki['ca.crt']}",
                f"--token-auth-file={folder / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki['service-account.key']}",
                f"--service-account-signing-key-file={pki['service-account.key']}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # One developer, one machine: no fairness queues, no profiling endpoints.
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
                *self.extra_args,
            ],
            api_log,
        )
        kubeconfig = folder / "kubeconfig"
        write_kubeconfig(kubeconfig, url, pki["ca.crt"], token)
        info: ServerInfo = {
            # The API server first, so `down` stops it before the etcd it writes to.
            "pids": [api_pid, etcd_pid],
            # Both command lines name this folder: that is how `down` knows them.
            "marker": str(folder),
            "address": url,
            "url": url,
            "kubeconfig": str(kubeconfig),
            "ca": str(pki["ca.crt"]),
            "token": token,
            "etcd": etcd_url,
            "version": KUBE_VERSION,
            "log": str(api_log),
        }
        try:
            wait_until(
                lambda: self.answers(info),
                "kube-apiserver",
                START_TIMEOUT_SECONDS,
                api_pid,
                api_log,
            )
        except DevstackError:
            stop_kube(info)
            raise
        return info

    def answers(self, info: ServerInfo) -> bool:
        return kube_status(info)


def api_request(info: ServerInfo, path: str, timeout: float = 5) -> httpx.Response | None:
    """GET an API path as the admin (its token, the server's CA); None when unreachable."""
    try:
        return httpx.get(
            f"{info['url']}{path}",
            headers={"Authorization": f"Bearer {info['token']}"},
            verify=ssl.create_default_context(cafile=info["ca"]),
            timeout=timeout,
        )
    except (httpx.HTTPError, OSError):
        return None


def kube_status(info: ServerInfo) -> bool:
    """One real request: does the API server answer ``/readyz`` as ready right now?"""
    response = api_request(info, "/readyz", timeout=2)
    return response is not None and response.status_code == 200


def start_kube(state_dir: Path, cache_dir: Path) -> ServerInfo:
    """Start etcd and the API server under ``state_dir/kube``; the info has ``kubeconfig``."""
    server = KubeServer()
    context = Context(state_dir=state_dir, cache_dir=cache_dir)
    server.prepare(context)
    return server.start(context)


def stop_kube(info: ServerInfo) -> None:
    """Stop what :func:`start_kube` started (only processes that are still ours)."""
    for pid in info["pids"]:
        stop(pid, info["marker"])


def make_pki(
    openssl: str, folder: Path, log: Path, extra_sans: tuple[str, ...] = ()
) -> dict[str, Path]:
    """A CA, the API server's serving certificate and the service-account key (reused if there)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        name: folder / name
        for name in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "service-account.key")
    }
    if all(path.exists() for path in files.values()):
        return files

    def openssl_run(arguments: str) -> None:
        words = arguments.split()
        run_checked([openssl, *words], f"openssl {words[0]}", log, cwd=folder)

    openssl_run(
        "req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt"
        " -subj /CN=fraudstack-devstack-ca"
    )
    (folder / "apiserver.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local" + "".join(f",{san}" for san in extra_sans) + "\n"
    )
    openssl_run(
        "req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr"
        " -subj /CN=kube-apiserver"
    )
    openssl_run(
        "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650"
        " -extfile apiserver.ext -out apiserver.crt"
    )
    openssl_run("genrsa -out service-account.key 2048")
    for key in ("ca.key", "apiserver.key", "service-account.key"):
        (folder / key).chmod(0o600)
    return files


def write_kubeconfig(path: Path, url: str, ca: Path, token: str) -> None:
    """A kubeconfig with one cluster, the admin user and a current context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "devstack", "cluster": {"server": url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": ADMIN_USER}}],
        "current-context": "devstack",
    }
    temporary = path.with_suffix(".tmp")
    # JSON is YAML too: every kubeconfig reader accepts it.
    temporary.write_text(json.dumps(config, indent=2))
    temporary.chmod(0o600)
    temporary.replace(path)


def _admin_token(tokens_file: Path) -> str:
    """The admin's static token (``token,user,uid,"groups"``), made once per state folder."""
    if tokens_file.exists():
        return tokens_file.read_text().split(",", 1)[0]
    token = secrets.token_hex(24)
    tokens_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    tokens_file.chmod(0o600)
    return token


def _etcd_healthy(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/health", timeout=1)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and '"health":"true"' in response.text.replace(" ", "")
