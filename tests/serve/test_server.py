"""``fraudstack serve`` as it runs in production: gunicorn with real uvicorn workers, real Redis,
the real Prometheus scraping it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from fraudstack.adapters.scrape import register_target
from fraudstack.aggregate.bulk import load_table
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.redis_server import PrivateRedis
from support.serving import STABLE, RunningService, start_service
from support.waiting import eventually


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, store: PrivateRedis, registry_root: str
) -> Iterator[RunningService]:
    running = start_service(tmp_path_factory.mktemp("serve"), store.url, registry_root)
    yield running
    running.stop()


def prometheus_value(address: str, query: str) -> float | None:
    answer = httpx.get(f"{address}/api/v1/query", params={"query": query}, timeout=5).json()
    results = answer["data"]["result"]
    return float(results[0]["value"][1]) if results else None


def test_metrics_of_every_worker_reach_the_real_prometheus(
    service: RunningService, prometheus: ServerInfo, transactions: pa.Table
) -> None:
    name = f"serve-test-{service.port}"
    target = register_target(prometheus["targets_dir"], name, f"127.0.0.1:{service.port}")
    try:
        check_scraped_metrics(service, str(prometheus["address"]), name, transactions)
    finally:
        target.unlink()


def check_scraped_metrics(
    service: RunningService, address: str, name: str, transactions: pa.Table
) -> None:
    customers = sorted(set(transactions["customer_id"].to_pylist()))
    sent = 0
    # a fresh connection per request lets gunicorn hand them to both workers
    while sent < 600 and (sent < 40 or len(list(service.metrics_dir.glob("counter_*.db"))) < 2):
        response = httpx.get(f"{service.url}/predict/{customers[sent % len(customers)]}")
        assert response.status_code == 200
        sent += 1
    assert len(list(service.metrics_dir.glob("counter_*.db"))) >= 2, "one worker did it all"

    query = f'sum(inference_requests_total{{service="{name}",outcome="ok"}})'
    eventually(lambda: prometheus_value(address, query) == sent, f"{query} == {sent}", 60, 1.0)
    by_version = prometheus_value(
        address,
        f'sum(inference_latency_seconds_count{{service="{name}",model_version="{STABLE}"}})',
    )
    assert by_version == sent
    assert prometheus_value(address, f'feature_age_seconds_count{{service="{name}"}}') == sent


def test_redis_down_answers_503_and_the_service_recovers_by_itself(
    tmp_path: Path, registry_root: str, transactions: pa.Table
) -> None:
    redis_server = PrivateRedis(tmp_path / "redis").start()
    load_table(redis_server.url, transactions)
    running = start_service(tmp_path / "serve", redis_server.url, registry_root)
    customer = transactions["customer_id"][0].as_py()
    try:
        assert httpx.get(f"{running.url}/predict/{customer}").status_code == 200
        redis_server.stop()

        for _ in range(4):  # whichever worker answers
            down = httpx.get(f"{running.url}/predict/{customer}", timeout=5)
            assert down.status_code == 503
            assert "online store unreachable" in down.json()["detail"]
        score = httpx.post(
            f"{running.url}/v1/score",
            timeout=5,
            json={
                "txn_id": "t-down",
                "ts": 1_530_000_000_000,
                "customer_id": customer,
                "terminal_id": "1",
                "amount": 3.0,
            },
        )
        assert score.status_code == 503
        ready = httpx.get(f"{running.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert httpx.get(f"{running.url}/healthz").status_code == 200

        def unavailable() -> bool:
            metrics = httpx.get(f"{running.url}/metrics").text
            lines = [
                line
                for line in metrics.splitlines()
                if line.startswith("online_store_unavailable_total ")
            ]
            counted = float(lines[0].split()[1]) if lines else 0.0
            return counted >= 5 and 'outcome="unavailable"' in metrics

        # each worker writes its tallies every 0.25 s
        eventually(unavailable, "five unavailable reads counted", timeout=10)

        redis_server.start()  # same port, empty: reload what the stream had written
        load_table(redis_server.url, transactions)
        eventually(
            lambda: all(
                httpx.get(f"{running.url}/predict/{customer}").status_code == 200 for _ in range(4)
            ),
            "every worker answering 200 again",
            timeout=15,
        )
        assert running.process.poll() is None  # recovered without a restart
    finally:
        running.stop()
        redis_server.stop()


def run_check(registry: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fraudstack.cli",
            "serve",
            "--check",
            "--registry",
            registry,
            "--redis-url",
            "redis://127.0.0.1:1/0",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_corrupt_model_stops_start_up_with_a_clear_message(
    tmp_path: Path, registry_root: str
) -> None:
    import shutil

    copy = tmp_path / "registry"
    shutil.copytree(registry_root, copy)
    assert run_check(str(copy), "--model-version", STABLE).returncode == 0
    onnx = copy / "models" / STABLE / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    result = run_check(str(copy), "--model-version", STABLE)
    assert result.returncode == 1
    assert "model.onnx has sha256" in result.stderr and "Traceback" not in result.stderr

    missing = run_check(str(copy), "--model-version", "no-such-version")
    assert missing.returncode == 1
    assert "no-such-version is not in the registry" in missing.stderr


def test_wait_for_model_waits_until_one_is_published(tmp_path: Path, registry_root: str) -> None:
    """What the chart's init container runs: before the first training the pod waits, then
    starts as soon as a model is there (instead of a CrashLoopBackOff)."""
    import shutil

    empty = tmp_path / "registry"
    assert "no model in the registry" in run_check(str(empty)).stderr
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fraudstack.cli",
            "serve",
            "--check",
            "--wait-for-model",
            "--registry",
            str(empty),
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        assert "waiting for it" in waiting.stdout.readline()
        assert waiting.poll() is None
        # published at once, as the registry does it: a version folder appears complete
        shutil.copytree(registry_root, tmp_path / "staging")
        empty.mkdir(exist_ok=True)
        (tmp_path / "staging" / "models").rename(empty / "models")
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert "verified" in out
