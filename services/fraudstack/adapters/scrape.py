"""Joining a Prometheus scrape through file-based service discovery (``file_sd_configs``).

A service that runs outside a cluster (the local stack, a VM) announces its metrics port by
writing one JSON file into the folder Prometheus watches; Prometheus picks it up within a scrape
interval, without a reload. In a cluster nothing is written: Prometheus finds the pods itself
(the chart's ServiceMonitor).
"""

from __future__ import annotations

import json
from pathlib import Path


def register_target(targets_dir: str | Path, name: str, address: str, **labels: str) -> Path:
    """Ask Prometheus to scrape ``address`` (host:port) under the label ``service=name``.

    The file is replaced atomically, so Prometheus never reads half of it.
    """
    path = Path(targets_dir) / f"{name}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        json.dumps([{"targets": [address], "labels": {"service": name, **labels}}])
    )
    temporary.replace(path)
    return path


def announce(targets_dir: str, name: str, port: int) -> Path | None:
    """Join the scrape of ``targets_dir`` as ``<name>-<port>`` on loopback; no folder, no-op."""
    if not targets_dir:
        return None
    return register_target(targets_dir, f"{name}-{port}", f"127.0.0.1:{port}")
