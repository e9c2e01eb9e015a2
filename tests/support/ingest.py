"""``fraudstack ingest serve`` as a subprocess, against whichever broker a test names."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from fraudstack.devstack.process import free_port
from support.waiting import eventually


@contextmanager
def running_ingest(
    bootstrap: str, topic_prefix: str, log: Path | None = None, **env: str
) -> Iterator[str]:
    """The ingestion API's URL once it is ready; stopped (SIGTERM) on exit. ``env``: more
    ``FRAUDSTACK_*`` settings of the API."""
    port = free_port()
    variables = {
        **os.environ,
        "FRAUDSTACK_KAFKA_BOOTSTRAP": bootstrap,
        "FRAUDSTACK_TOPIC_PREFIX": topic_prefix,
        **env,
    }
    output = open(log, "ab") if log else None  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "fraudstack.cli", "ingest", "serve", "--bind", f"127.0.0.1:{port}"],
        env=variables,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, f"the ingestion API exited ({process.returncode})"
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(ready, "the ingestion API to be ready", timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if output:
            output.close()
