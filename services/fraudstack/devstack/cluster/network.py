"""The cluster's addresses, its two bridges, the guard chain and the kernel settings it touches.

Only the RFC 2544 benchmarking range 198.18.0.0/15 is used, never a private range:

* pods: 198.18.0.0/16 on the CNI bridge ``fscni0`` (gateway 198.18.0.1);
* Services: 198.19.0.0/17 (``kubernetes`` at 198.19.0.1, DNS at 198.19.0.10);
* the node: 198.19.128.1/17 on the bridge ``fsnode0``, which has no ports. The kernel here has
  no ``dummy`` link type; an empty bridge carries the address just as well, and its route for
  the whole 198.18.0.0/15 is a sink: a Service address kube-proxy did not rewrite dies there
  instead of following the default route off the machine.

The guard chain ``FRAUDSTACK-GUARD`` (filter FORWARD, mangle POSTROUTING) drops anything from or
to 198.18.0.0/15 that would leave through another interface, and anything a pod sends that the
host would forward elsewhere: nothing in the cluster reaches an address outside this machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from fraudstack.errors import DevstackError

POD_CIDR = "198.18.0.0/16"
POD_GATEWAY = "198.18.0.1"
SERVICE_CIDR = "198.19.0.0/17"
API_SERVICE_IP = "198.19.0.1"
DNS_SERVICE_IP = "198.19.0.10"
NODE_IP = "198.19.128.1"
NODE_PREFIX = 17
CLUSTER_RANGE = "198.18.0.0/15"
NODE_BRIDGE = "fsnode0"
POD_BRIDGE = "fscni0"
GUARD_CHAIN = "FRAUDSTACK-GUARD"
CNI_BRIDGE_PLUGIN = "/usr/lib/cni/bridge"

#: kernel settings the kubelet, kube-proxy or the bridge plugin rewrite; put back on ``down``
WATCHED_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
)


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise DevstackError(f"'{' '.join(argv)}' failed: {result.stderr.strip()[:300]}")
    return result


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def set_up_node_network() -> None:
    """The node's bridge with its address and the sink route, then the guard chain."""
    if not link_exists(NODE_BRIDGE):
        run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"])
    run(["ip", "addr", "replace", f"{NODE_IP}/{NODE_PREFIX}", "dev", NODE_BRIDGE])
    run(["ip", "link", "set", NODE_BRIDGE, "up"])
    run(["ip", "route", "replace", CLUSTER_RANGE, "dev", NODE_BRIDGE, "src", NODE_IP])
    _install_guard()


def _install_guard() -> None:
    _remove_guard()
    rules = {
        "filter": [
            # a pod talks to pods (through Services too) and to this host, nothing else
            ["-i", POD_BRIDGE, "-o", POD_BRIDGE, "-j", "RETURN"],
            ["-i", POD_BRIDGE, "-j", "DROP"],
        ],
        "mangle": [
            ["-o", "lo", "-j", "RETURN"],
            ["-o", POD_BRIDGE, "-j", "RETURN"],
            ["-o", NODE_BRIDGE, "-j", "RETURN"],
            ["-s", CLUSTER_RANGE, "-j", "DROP"],
            ["-d", CLUSTER_RANGE, "-j", "DROP"],
        ],
    }
    hooks = {"filter": "FORWARD", "mangle": "POSTROUTING"}
    for table, chain_rules in rules.items():
        run(["iptables", "-t", table, "-N", GUARD_CHAIN])
        for rule in chain_rules:
            run(["iptables", "-t", table, "-A", GUARD_CHAIN, *rule])
        run(["iptables", "-t", table, "-I", hooks[table], "1", "-j", GUARD_CHAIN])


def _remove_guard() -> None:
    for table, hook in (("filter", "FORWARD"), ("mangle", "POSTROUTING")):
        while (
            run(["iptables", "-t", table, "-D", hook, "-j", GUARD_CHAIN], check=False).returncode
            == 0
        ):
            pass
        run(["iptables", "-t", table, "-F", GUARD_CHAIN], check=False)
        run(["iptables", "-t", table, "-X", GUARD_CHAIN], check=False)


def remove_kube_chains() -> None:
    """Every ``KUBE-*`` chain the kubelet and kube-proxy made, and the jumps into them.

    Only this devstack runs Kubernetes on the machine, so every such chain is ours.
    """
    for command in ("iptables", "ip6tables"):
        dump = run([f"{command}-save"], check=False).stdout
        table = ""
        jumps: list[tuple[str, list[str]]] = []
        chains: list[tuple[str, str]] = []
        for line in dump.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":KUBE-"):
                chains.append((table, line[1:].split()[0]))
            elif line.startswith("-A ") and not line.split()[1].startswith("KUBE-"):
                words = line.split()
                if "-j" in words and words[words.index("-j") + 1].startswith("KUBE-"):
                    jumps.append((table, words[1:]))
        for table, rule in jumps:
            run([command, "-t", table, "-D", *_unquote(rule)], check=False)
        for table, chain in chains:
            run([command, "-t", table, "-F", chain], check=False)
        for table, chain in chains:
            run([command, "-t", table, "-X", chain], check=False)


def _unquote(words: list[str]) -> list[str]:
    """iptables-save quotes comments; re-join them into single arguments."""
    joined: list[str] = []
    buffer: list[str] = []
    for word in words:
        if buffer:
            buffer.append(word)
            if word.endswith('"'):
                joined.append(" ".join(buffer).strip('"'))
                buffer = []
        elif word.startswith('"') and not (word.endswith('"') and len(word) > 1):
            buffer.append(word)
        else:
            joined.append(word.strip('"'))
    return joined


def tear_down_network() -> None:
    """Remove the guard chain, both bridges and the sink route (each only if present)."""
    _remove_guard()
    run(["ip", "route", "del", CLUSTER_RANGE, "dev", NODE_BRIDGE], check=False)
    for name in (POD_BRIDGE, NODE_BRIDGE):
        if link_exists(name):
            run(["ip", "link", "del", name], check=False)


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in WATCHED_SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    """Write back the values read before ``up``; return the names that had changed."""
    changed = []
    for name, value in saved.items():
        path = _sysctl_path(name)
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
                changed.append(name)
        except OSError:
            continue
    return changed


def write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value + "\n")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def unmount_under(folder: Path) -> None:
    """Unmount everything mounted below ``folder`` (pod volumes, snapshots, shm), deepest first."""
    prefix = str(folder.resolve()).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        run(["umount", "-l", point], check=False)


def remove_netns(names: list[str]) -> None:
    """Pod network namespaces containerd left in /run/netns (bind mounts)."""
    for name in names:
        path = Path("/run/netns") / name
        run(["umount", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.unlink()


def list_netns() -> list[str]:
    folder = Path("/run/netns")
    return sorted(entry.name for entry in folder.iterdir()) if folder.exists() else []


def remove_pod_cgroups(timeout: float = 15.0) -> None:
    """The ``kubepods`` cgroups the kubelet made under every cgroup v1 controller.

    A process still in one (a container whose shim is gone) is killed first: only pods of this
    node live there. A cgroup can be removed once its last process has been reaped.
    """
    tops = [root / "kubepods" for root in Path("/sys/fs/cgroup").iterdir()]
    tops = [top for top in tops if top.is_dir()]
    deadline = time.monotonic() + timeout
    while tops and time.monotonic() < deadline:
        members = {pid for top in tops for pid in _cgroup_members(top)}
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for top in tops:
            folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for folder in [*folders, top]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        tops = [top for top in tops if top.exists()]
        if tops:
            time.sleep(0.2)


def _cgroup_members(top: Path) -> set[int]:
    members: set[int] = set()
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            members.update(int(line) for line in procs.read_text().split())
    return members
