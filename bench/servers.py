"""Processes of the benchmarks: servers and a private ``redis-server``, started alike."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from cpu import pinned_to
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import DevstackError


def start(
    argv: list[str], env: dict[str, str], log: Path, cpus: frozenset[int] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server (or Redis) in a process group of its own, stopped with :func:`stop`.

    A process group, not a session: with Linux's session autogroups (``sched_autogroup_enabled``,
    on by default in Debian's and Ubuntu's kernels) a process in a session of its own is
    scheduled as one group against the rest of the machine. Measured here, a two-worker server in
    its own session, sharing two cores with vegeta, answered with a p99 two to three times
    higher at the same fixed rate (14-29 ms against 6-7 ms) than the same server started from
    the benchmark's own session, as ``gunicorn ... & vegeta attack ...`` from one shell would
    be: a woken worker waited for the load generator's group to use up its slice. Every design
    and Redis are started alike, so the comparison stays fair.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=pinned_to(cpus),
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_redis(
    log: Path, cpus: frozenset[int] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A private ``redis-server`` (the devstack's launcher, which installs it when missing) on a
    free loopback port, without persistence, answering; and its port. It is started like every
    server here (:func:`start`), so the comparison stays fair. A server that does not answer is
    a one-line message."""
    server = PrivateRedis(log.parent, launch=lambda argv, path: start(argv, {}, path, cpus))
    try:
        server.start()
    except DevstackError as exc:
        raise SystemExit(str(exc)) from None
    assert server.process is not None
    return server.process, server.port
