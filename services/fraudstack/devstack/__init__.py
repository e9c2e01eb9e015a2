"""The local stack: real servers run as local processes on loopback.

``fraudstack devstack up`` starts Redis (``--redis-cluster``: a Redis Cluster of three masters,
its ``redis+cluster://`` URL recorded as ``FRAUDSTACK_REDIS_URL``), a Kafka broker (KRaft) and
Prometheus on free ports and records them in ``<state dir>/devstack.json`` (see
:mod:`fraudstack.paths`), with their addresses as ``FRAUDSTACK_*`` variables in
``<state dir>/devstack.env``: every role's settings read that file after the environment, so a
role finds the devstack without importing it, and a variable set in the environment names another
server. ``up`` is idempotent (servers that answer are
kept), ``down`` stops only the processes ``up`` recorded, ``status`` asks each server for a real
answer.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.kafka_server import KafkaServer
from fraudstack.devstack.process import is_ours, stop
from fraudstack.devstack.prometheus_server import PrometheusServer
from fraudstack.devstack.redis_server import RedisClusterServer, RedisServer
from fraudstack.paths import cache_dir, devstack_env_file, state_dir

STATE_FILE = "devstack.json"


def default_servers(kafka_brokers: int = 1, redis_cluster: bool = False) -> list[Server]:
    redis = RedisClusterServer() if redis_cluster else RedisServer()
    return [redis, KafkaServer(kafka_brokers), PrometheusServer()]


def optional_servers() -> dict[str, Server]:
    """Servers started only on request (``up --kube``, ``up --cluster``)."""
    try:
        from fraudstack.devstack.cluster import ClusterServer
        from fraudstack.devstack.kube import KubeServer
    except ImportError:  # the Kubernetes part is optional
        return {}
    return {"kube": KubeServer(), "cluster": ClusterServer()}


@dataclass(frozen=True)
class ServerStatus:
    name: str
    address: str
    pids: list[int]
    answering: bool


class Devstack:
    def __init__(
        self,
        state: Path | None = None,
        cache: Path | None = None,
        kafka_brokers: int = 1,
        redis_cluster: bool = False,
    ) -> None:
        self.context = Context(state_dir=state or state_dir(), cache_dir=cache or cache_dir())
        self.kafka_brokers = kafka_brokers
        #: a three-master Redis Cluster in place of the one Redis (``up --redis-cluster``)
        self.redis_cluster = redis_cluster
        self.state_path = self.context.state_dir / STATE_FILE
        self.env_path = self.context.state_dir / devstack_env_file().name

    def servers(self, names: list[str] | None = None, defaults: bool = True) -> list[Server]:
        standard = default_servers(self.kafka_brokers, self.redis_cluster)
        everything = standard + list(optional_servers().values())
        wanted = {server.name for server in standard if defaults} | set(names or [])
        return [server for server in everything if server.name in wanted]

    def up(
        self, extra: list[str] | None = None, progress: bool = True, defaults: bool = True
    ) -> dict[str, ServerInfo]:
        """Start every server that does not answer yet; return the recorded state.

        ``defaults=False`` starts only the ``extra`` servers (a test that needs the cluster
        alone).
        """
        with self._locked():
            state = self.read_state()
            for server in self.servers(extra, defaults):
                info = state.get(server.name)
                if info and _alive(info) and server.fits(info) and server.answers(info):
                    if progress:
                        print(f"  {server.name:<11} already up at {info['address']}", flush=True)
                    continue
                if info:
                    server.stop(info)
                if progress:
                    print(f"  {server.name:<11} starting...", flush=True)
                server.prepare(self.context)
                state[server.name] = server.start(self.context)
                self._write_state(state)
                if progress:
                    print(f"  {server.name:<11} up at {state[server.name]['address']}", flush=True)
            return state

    def down(self, names: list[str] | None = None) -> list[str]:
        """Stop what ``up`` started (by recorded process id); return the names stopped.

        ``names`` stops only those servers and keeps the others running.
        """
        with self._locked():
            state = self.read_state()
            known = {server.name: server for server in self.servers(list(state))}
            chosen = [name for name in state if names is None or name in names]
            for name in reversed(chosen):
                server = known.get(name)
                if server is None:
                    _stop_info(state[name])
                else:
                    server.stop(state[name])
            remaining = {name: info for name, info in state.items() if name not in chosen}
            if remaining:
                self._write_state(remaining)
            else:
                self.state_path.unlink(missing_ok=True)
                self.env_path.unlink(missing_ok=True)
            return chosen

    def status(self) -> list[ServerStatus]:
        state = self.read_state()
        rows = []
        for server in self.servers(list(state)):
            info = state.get(server.name)
            if info is None:
                rows.append(ServerStatus(server.name, "-", [], False))
                continue
            answering = _alive(info) and server.answers(info)
            rows.append(ServerStatus(server.name, info["address"], info["pids"], answering))
        return rows

    def read_state(self) -> dict[str, ServerInfo]:
        if not self.state_path.exists():
            return {}
        data: dict[str, ServerInfo] = json.loads(self.state_path.read_text())
        return data

    def _write_state(self, state: dict[str, ServerInfo]) -> None:
        variables: dict[str, str] = {}
        for server in self.servers(list(state)):
            if server.name in state:
                variables.update(server.environment(state[server.name]))
        env = "".join(f"{name}={json.dumps(value)}\n" for name, value in sorted(variables.items()))
        _replace(self.state_path, json.dumps(state, indent=2))
        _replace(self.env_path, env)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.context.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.context.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _alive(info: ServerInfo) -> bool:
    return all(is_ours(pid, info["marker"]) for pid in info["pids"])


def _stop_info(info: ServerInfo) -> None:
    for pid in info["pids"]:
        stop(pid, info["marker"])
