"""Where the CPU goes during one load run: the server, Redis, the load generator, the machine.

Every process of the benchmark shares the same cores, so a latency figure means little without
knowing how busy the machine was and who kept it busy. Read from ``/proc`` (Linux); elsewhere
every figure is ``None``.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_list(text: str) -> frozenset[int]:
    """A CPU list as ``taskset`` writes one (``0-3,6``); for argparse."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus:
        raise ValueError(f"no CPU in {text!r}")
    return frozenset(cpus)


def pinned_to(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps a child process (and its children) on ``cpus``."""
    if cpus is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def group_cpu_seconds(group: int) -> float | None:
    """CPU seconds of process group ``group``: its live processes, and the children they reaped
    (a worker that gunicorn replaced during a run still counts, in its master's figures);
    None when no process of the group is left."""
    total = 0
    found = False
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # the command name may hold spaces and parentheses: fields start after the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group:
            found = True
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / _TICK if found else None


def machine_ticks() -> tuple[int, int] | None:
    """(busy, all) jiffies of all CPUs since boot; time the hypervisor stole is not busy."""
    try:
        with open("/proc/stat") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait + steal


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have been waited for (the load generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """Started before a run, stopped after it; then CPU per request of each part, machine busy."""

    server_group: int
    redis_group: int

    def __post_init__(self) -> None:
        self._start = self._read()
        self._end = self._start

    def _read(self) -> tuple[float | None, float | None, float, tuple[int, int] | None]:
        return (
            group_cpu_seconds(self.server_group),
            group_cpu_seconds(self.redis_group),
            children_cpu_seconds(),
            machine_ticks(),
        )

    def stop(self) -> None:
        self._end = self._read()

    def per_request(self, requests: int) -> dict[str, float | None]:
        server_start, redis_start, load_start, machine_start = self._start
        server_end, redis_end, load_end, machine_end = self._end

        def micros(start: float | None, end: float | None) -> float | None:
            if start is None or end is None or not requests:
                return None
            return round((end - start) / requests * 1e6, 1)

        busy = None
        if machine_start is not None and machine_end is not None:
            all_ticks = machine_end[1] - machine_start[1]
            if all_ticks:
                busy = round((machine_end[0] - machine_start[0]) / all_ticks, 3)
        return {
            "server_cpu_us_per_request": micros(server_start, server_end),
            "redis_cpu_us_per_request": micros(redis_start, redis_end),
            "vegeta_cpu_us_per_request": micros(load_start, load_end),
            "machine_busy": busy,
        }
