"""An inference worker killed under load: gunicorn replaces it, the other keeps serving.

Real ``fraudstack serve`` (gunicorn, two uvicorn workers) on a private Redis holding the test
table, real vegeta at a fixed rate; one worker gets ``kill -9`` in the middle. The requests that
fail are at most those the dead worker held (in flight or queued on its connections); every
other request is answered 200, and a new worker takes the dead one's place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from fraudstack.devstack.redis_server import PrivateRedis
from support.kube import vegeta_binary
from support.serving import start_service
from support.waiting import eventually

pytestmark = pytest.mark.faults

RATE = 200  # requests a second
SECONDS = 12
CONNECTIONS = 16  # vegeta's workers: each keeps one connection, to one server worker


def workers_of(master: int) -> set[int]:
    """The gunicorn master's live worker processes."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children if Path(f"/proc/{pid}").exists()}


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(
    tmp_path: Path, serve_store: PrivateRedis, registry_root: str, transactions: pa.Table
) -> None:
    service = start_service(tmp_path / "serve", serve_store.url, registry_root, workers=2)
    try:
        before = eventually(lambda: workers_of(service.process.pid), "two workers")
        assert len(before) == 2
        customers = sorted(set(transactions["customer_id"].to_pylist()))
        targets = tmp_path / "targets.txt"
        targets.write_text("".join(f"GET {service.url}/predict/{c}\n\n" for c in customers))
        victim = min(before)

        def kill_later() -> None:
            time.sleep(SECONDS / 3)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_later)
        killer.start()
        vegeta = str(vegeta_binary())
        attack = subprocess.run(
            [
                *(vegeta, "attack", f"-targets={targets}", f"-rate={RATE}/s"),
                *(f"-duration={SECONDS}s", "-timeout=5s"),
                *(f"-workers={CONNECTIONS}", f"-max-workers={CONNECTIONS}"),
            ],
            capture_output=True,
            check=True,
        )
        killer.join()
        report = subprocess.run(
            [vegeta, "report", "-type=json"], input=attack.stdout, capture_output=True, check=True
        )
        results = json.loads(report.stdout)
        after = eventually(
            lambda: (workers := workers_of(service.process.pid)) and len(workers) == 2 and workers,
            "gunicorn to replace the worker",
        )
    finally:
        service.stop()

    requests = results["requests"]
    failed = requests - round(results["success"] * requests)
    print(
        f"\nworker killed under {RATE} req/s for {SECONDS} s: {requests} requests, "
        f"{failed} failed ({results['status_codes']}), errors {results['errors'][:3]}"
    )
    assert victim not in after and len(after - before) == 1  # one new worker, the other kept
    assert failed <= CONNECTIONS, "more failed than the dead worker could have held"
    assert set(results["status_codes"]) <= {"200", "0"}  # 0: a connection cut by the kill
