"""The inference service in tests: real data, real models, ``fraudstack serve`` as a subprocess.

Registered as a plugin in ``tests/conftest.py``: the session fixtures (a simulated table, its
offline features, a registry with two real models) are built on first use, by the serve tests,
the operator tests or the Redis client's tests alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from fraudstack.aggregate.bulk import load_table
from fraudstack.devstack.process import free_port, wait_until
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import DevstackError
from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.features.offline import compute_features
from fraudstack.serve.settings import ServeSettings
from fraudstack.simulate import SimulationConfig, simulate

STABLE = "test-stable"
CANDIDATE = "test-candidate"


@pytest.fixture(scope="session")
def transactions() -> pa.Table:
    """Six weeks of a small population: every customer has history, terminals have labels."""
    return simulate(SimulationConfig(customers=200, terminals=400, days=42, seed=11))


@pytest.fixture(scope="session")
def offline_features(transactions: pa.Table) -> pa.Table:
    return compute_features(transactions)


@pytest.fixture(scope="session")
def registry_root(
    tmp_path_factory: pytest.TempPathFactory, transactions: pa.Table, offline_features: pa.Table
) -> str:
    """A registry with two real models trained on the table: logistic regression and a tree."""
    from fraudstack.train.export import publish_model
    from fraudstack.train.models import fit

    root = tmp_path_factory.mktemp("registry")
    matrix = np.column_stack([offline_features[name].to_numpy() for name in FEATURE_NAMES])
    target = np.asarray(transactions["is_fraud"].to_numpy(zero_copy_only=False), dtype=np.int64)
    for version, name in ((STABLE, "logistic_regression"), (CANDIDATE, "decision_tree_depth_2")):
        publish_model(str(root), version, name, fit(name, matrix, target, seed=0, jobs=1))
    return str(root)


@pytest.fixture(scope="session")
def serve_store(
    tmp_path_factory: pytest.TempPathFactory, transactions: pa.Table
) -> Iterator[PrivateRedis]:
    """A private redis-server (a free port, no persistence) holding the table, as the stream
    would have written it; private, so a test may stop it and leave every other test alone."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        load_table(server.url, transactions)
        yield server
    finally:
        server.stop()


def serve_settings(redis_url: str, registry_root: str, **overrides: object) -> ServeSettings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "kafka_bootstrap": "unused:9092",
        "prometheus_url": "http://unused:9090",
        "model_registry_uri": registry_root,
        "model_version": STABLE,
        "routing_key": "",
    }
    values.update(overrides)
    return ServeSettings(**values)


@dataclass
class RunningService:
    """``fraudstack serve`` as a subprocess: gunicorn with real uvicorn workers."""

    url: str
    port: int
    metrics_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_service(
    folder: Path, redis_url: str, registry_root: str, workers: int = 2, **env: str
) -> RunningService:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    metrics_dir = folder / "metrics"
    log = folder / "serve.log"
    variables = {
        **os.environ,
        "FRAUDSTACK_REDIS_URL": redis_url,
        "FRAUDSTACK_MODEL_REGISTRY_URI": registry_root,
        "FRAUDSTACK_SERVE_MODEL_VERSION": STABLE,
        "FRAUDSTACK_SERVE_BIND": f"127.0.0.1:{port}",
        "FRAUDSTACK_SERVE_WORKERS": str(workers),
        "FRAUDSTACK_SERVE_METRICS_DIR": str(metrics_dir),
        "FRAUDSTACK_ROUTING_KEY": "",
        **env,
    }
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudstack.cli", "serve"],
            env=variables,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    service = RunningService(f"http://127.0.0.1:{port}", port, metrics_dir, process, log)

    def ready() -> bool:
        try:
            return httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, "fraudstack serve", 60, process.pid, log)
    except DevstackError as exc:
        service.stop()
        raise RuntimeError(f"{exc}\n{log.read_text()[-2000:]}") from None
    return service
