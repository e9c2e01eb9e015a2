"""The machine block every benchmark writes next to its figures."""

from __future__ import annotations

import os
import platform
import time


def machine() -> dict[str, object]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            total_kib = int(meminfo.readline().split()[1])
            memory_gib = round(total_kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "sched_autogroup": _sched_autogroup(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _sched_autogroup() -> bool | None:
    """Whether Linux schedules each session as one group (None where the kernel does not say)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as setting:
            return setting.read().strip() == "1"
    except OSError:
        return None
