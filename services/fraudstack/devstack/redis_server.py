"""Redis: Debian's ``redis-server`` on a free loopback port, no persistence.

The one launcher of ``redis-server`` in the project. The devstack's Redis (:class:`RedisServer`)
is started detached and recorded in the state file; a private one (:class:`PrivateRedis`) belongs
to the test or benchmark that starts it, which may stop it and start it again on the same port,
empty, as a Redis restarted without persistence would be. Both get the binary from
:func:`~fraudstack.devstack.system.ensure_binary`, which installs Debian's package when it is
missing, so nothing assumes the machine already has Redis.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

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
        return answers(info["address"])

    def environment(self, info: ServerInfo) -> dict[str, str]:
        return {"FRAUDSTACK_REDIS_URL": info["address"]}


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
