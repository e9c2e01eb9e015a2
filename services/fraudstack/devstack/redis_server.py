"""Redis: Debian's ``redis-server`` on a free loopback port, no persistence.

The one launcher of ``redis-server`` in the project. The devstack's Redis (:class:`RedisServer`)
is started detached and recorded in the state file; a private one (:class:`PrivateRedis`) belongs
to the test or benchmark that starts it, which may stop it and start it again on the same port,
empty, as a Redis restarted without persistence would be. Both get the binary from
:func:`~fraudstack.devstack.system.ensure_binary`, which installs Debian's package when it is
missing, so nothing assumes the machine already has Redis.

A Redis Cluster (``devstack up --redis-cluster``, :class:`RedisClusterServer`; and
:class:`PrivateRedisCluster` for tests) is the same launcher run once per master with
:func:`cluster_options`, joined by ``redis-cli --cluster create`` (Debian's ``redis-tools``). Its
address is a ``redis+cluster://`` URL naming every master (see
:mod:`fraudstack.adapters.redis_cluster`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.process import free_port, spawn, wait_until
from fraudstack.devstack.system import ensure_binary
from fraudstack.errors import DevstackError

Launcher = Callable[[list[str], Path], "subprocess.Popen[bytes]"]
"""Starts ``argv`` with its output appended to a log file; a benchmark passes its own (to pin
the server to a CPU, say)."""


def redis_binary() -> str:
    """The path of ``redis-server``, installed from Debian's package when missing."""
    return ensure_binary("redis-server", "redis-server")


def redis_argv(binary: str, port: int, folder: Path) -> list[str]:
    """The command line of a loopback Redis without persistence: a restart starts empty."""
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--maxmemory-policy",
        "noeviction",
    ]


def cluster_options(port: int, bus_port: int) -> list[str]:
    """More command line for a cluster-mode master; ``bus_port`` is its cluster bus (chosen
    free: the default, ``port`` + 10000, may be taken or beyond 65535)."""
    return [
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(bus_port),
        "--cluster-config-file",
        f"nodes-{port}.conf",
        "--cluster-node-timeout",
        "5000",
    ]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def cluster_url(ports: Sequence[int]) -> str:
    """The ``redis+cluster://`` URL of loopback masters on ``ports``."""
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def create_cluster(
    ports: Sequence[int], log: Path, timeout: float = 30.0, password: str | None = None
) -> None:
    """Join cluster-mode servers on ``ports`` into one cluster of masters, every slot served,
    and return once every node says ``cluster_state:ok``."""
    cli = ensure_binary("redis-cli", "redis-tools")
    nodes = [f"127.0.0.1:{port}" for port in ports]
    argv = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
    # the password in the environment, not on a command line other users can read
    environment = {**os.environ, "REDISCLI_AUTH": password} if password else None
    with open(log, "ab") as output:
        result = subprocess.run(
            argv, stdout=output, stderr=subprocess.STDOUT, check=False, env=environment
        )
    if result.returncode != 0:
        raise DevstackError(f"redis-cli --cluster create failed; see {log}")
    deadline = time.monotonic() + timeout
    while not all(_cluster_ok(port, password) for port in ports):
        if time.monotonic() > deadline:
            raise DevstackError(f"the Redis Cluster on {nodes} is not ok after {timeout:.0f} s")
        time.sleep(0.1)


def _answering(port: int) -> Callable[[], bool]:
    return lambda: answers(f"redis://127.0.0.1:{port}/0")


def _cluster_ok(port: int, password: str | None = None) -> bool:
    try:
        with redis.Redis(port=port, password=password, socket_timeout=1) as client:
            info = client.execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return False
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text


def answers(url: str) -> bool:
    """Whether the Redis at ``url`` answers ``PING`` right now."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class RedisServer(Server):
    name = "redis"

    def prepare(self, context: Context) -> None:
        self.binary = redis_binary()

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.name)
        port = free_port()
        log = folder / "redis.log"
        pid = spawn(redis_argv(self.binary, port, folder), log)
        info: ServerInfo = {
            "pids": [pid],
            "marker": f"127.0.0.1:{port}",
            "address": f"redis://127.0.0.1:{port}/0",
            "port": port,
            "log": str(log),
        }
        wait_until(lambda: self.answers(info), "redis-server", 20, pid, log)
        return info

    def answers(self, info: ServerInfo) -> bool:
        if info.get("cluster"):  # recorded by ``up --redis-cluster``; ``status`` asks without it
            return all(_cluster_ok(port) for port in info["ports"])
        return answers(info["address"])

    def environment(self, info: ServerInfo) -> dict[str, str]:
        return {"FRAUDSTACK_REDIS_URL": info["address"]}

    def fits(self, info: ServerInfo) -> bool:
        return not info.get("cluster")


class RedisClusterServer(RedisServer):
    """Three cluster-mode masters joined into one Redis Cluster, recorded as ``redis``."""

    masters = 3

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        ensure_binary("redis-cli", "redis-tools")

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.name)
        chosen = free_ports(2 * self.masters)
        ports, buses = chosen[: self.masters], chosen[self.masters :]
        pids: list[int] = []
        for port, bus in zip(ports, buses, strict=True):
            node = folder / str(port)
            node.mkdir(parents=True, exist_ok=True)
            log = node / "redis.log"
            pids.append(
                spawn([*redis_argv(self.binary, port, node), *cluster_options(port, bus)], log)
            )
            wait_until(_answering(port), "redis-server", 20, pids[-1], log)
        create_cluster(ports, folder / "cluster-create.log")
        return {
            "pids": pids,
            "marker": "[cluster]",
            "address": cluster_url(ports),
            "ports": ports,
            "cluster": True,
            "log": str(folder),
        }

    def fits(self, info: ServerInfo) -> bool:
        return bool(info.get("cluster"))


def _launch(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class PrivateRedis:
    """A ``redis-server`` of its owner's alone, on a fixed free port, stopped and started at will.

    ``start`` returns once the server answers; a server that dies or does not answer in time is
    stopped and is a :class:`~fraudstack.errors.DevstackError` whose message ends with the log's
    last line.
    """

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        launch: Launcher = _launch,
        options: Sequence[str] = (),
        url: str | None = None,
    ) -> None:
        """``options``: more of redis-server's command line (``--requirepass``, TLS); then
        ``url`` is how a client that may ``PING`` reaches it. ``{port}`` in either is the
        port."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = port or free_port()
        self.log = folder / "redis.log"
        self._launch = launch
        self.options = list(options)
        self._url = url or "redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self._url.format(port=self.port)

    def start(self) -> PrivateRedis:
        options = [option.format(port=self.port) for option in self.options]
        argv = [*redis_argv(redis_binary(), self.port, self.folder), *options]
        self.process = self._launch(argv, self.log)
        try:
            wait_until(lambda: answers(self.url), "redis-server", 20, self.process.pid, self.log)
        except DevstackError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (TERM, then KILL after 10 s); nothing happens if it is not running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PrivateRedisCluster:
    """A Redis Cluster of ``masters`` :class:`PrivateRedis` servers, for a test that owns it;
    with ``password``, every node requires it (``requirepass``, and ``masterauth`` for its
    peers) and :attr:`url` carries it."""

    def __init__(self, folder: Path, masters: int = 3, password: str | None = None) -> None:
        self.folder = folder
        self.password = password
        chosen = free_ports(2 * masters)
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        node_url = f"redis://:{quote(password, safe='')}@127.0.0.1:{{port}}/0" if password else None
        self.servers = [
            PrivateRedis(
                folder / str(port), port, options=[*cluster_options(port, bus), *auth], url=node_url
            )
            for port, bus in zip(chosen[:masters], chosen[masters:], strict=True)
        ]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        url = cluster_url(self.ports)
        if self.password:
            url = url.replace("://", f"://:{quote(self.password, safe='')}@", 1)
        return url

    def start(self) -> PrivateRedisCluster:
        try:
            for server in self.servers:
                server.start()
            create_cluster(self.ports, self.folder / "cluster-create.log", password=self.password)
        except DevstackError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
