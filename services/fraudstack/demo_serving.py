"""The second half of ``fraudstack demo``: snapshot, train, serve, score while streaming.

Each role runs as its own process, started with the same ``fraudstack`` command a user would
type, so the demo shows the real commands working together.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.devstack.process import free_port
from fraudstack.errors import FraudstackError
from fraudstack.ingest.replay import produce_table


def fraudstack(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "fraudstack.cli", *arguments]


def snapshot(settings: AggregateSettings, store: Path, expected_rows: int) -> int:
    """Run ``fraudstack snapshot`` until the store holds every event; stop it with SIGTERM."""
    topics = settings.topics
    process = subprocess.Popen(
        fraudstack(
            "snapshot",
            "--store",
            str(store),
            "--bootstrap",
            settings.kafka_bootstrap,
            "--group",
            f"{settings.aggregate_group_id}-snapshot",
            "--transactions-topic",
            topics.transactions,
            "--labels-topic",
            topics.labels,
            "--dead-letter-topic",
            topics.dead_letter,
            "--flush-seconds",
            "2",
            "--metrics-port",
            "0",
        ),
        stdout=subprocess.DEVNULL,
        env={**os.environ, "FRAUDSTACK_LOG_LEVEL": "WARNING"},
    )
    rows = 0
    deadline = time.monotonic() + 300
    try:
        while rows < expected_rows and time.monotonic() < deadline:
            time.sleep(1)
            rows = sum(_rows(store / dataset) for dataset in ("events", "labels"))
            print(
                f"\r   {rows:,} / {expected_rows:,} rows in the offline store", end="", flush=True
            )
        print()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    if rows < expected_rows:
        raise FraudstackError(f"snapshot wrote {rows} of {expected_rows} rows in 5 minutes")
    return rows


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    return int(ds.dataset(path, format="parquet", partitioning="hive").count_rows())


def train(store: Path, registry: Path) -> str:
    """Run ``fraudstack train``; return the published version (its last line)."""
    result = subprocess.run(
        fraudstack("train", "--store", str(store), "--registry", str(registry), "--no-progress"),
        capture_output=True,
        text=True,
        check=False,
    )
    print("\n".join("   " + line for line in result.stdout.strip().splitlines()[:-1]))
    if result.returncode != 0:
        raise FraudstackError(f"training failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout.strip().splitlines()[-1]


def serve(
    settings: AggregateSettings, registry: Path, version: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        fraudstack(
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--registry",
            str(registry),
            "--model-version",
            version,
            "--redis-url",
            settings.redis_url,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.terminate()
    raise FraudstackError("the inference service did not become ready")


async def score_while_streaming(
    settings: AggregateSettings, url: str, day: pa.Table, labels: pa.Table, rate: float
) -> tuple[list[float], dict[str, object], int, int]:
    """Stream a new day into Kafka at ``rate`` while an aggregator keeps the store fresh and
    every transaction is scored through ``POST /v1/score`` as it is sent."""
    aggregator = Aggregator(settings)
    aggregating = asyncio.create_task(aggregator.run(stop_after_idle_s=15))
    producing = asyncio.create_task(
        produce_table(
            settings.kafka_bootstrap, day, None, rate=rate, progress=False, topics=settings.topics
        )
    )
    latencies: list[float] = []
    sample: dict[str, object] = {}
    failures = 0
    flagged_frauds = 0
    frauds = set(labels["txn_id"].to_pylist())
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        for index, txn in enumerate(day.to_pylist()):
            pause = started + index / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            sent = time.perf_counter()
            response = await client.post(
                "/v1/score", content=orjson.dumps(txn), headers={"content-type": "application/json"}
            )
            latencies.append((time.perf_counter() - sent) * 1000)
            if response.status_code != 200:
                failures += 1
                continue
            body = response.json()
            if body["risk_level"] == "high" and txn["txn_id"] in frauds:
                flagged_frauds += 1
            # show the fraud the model was surest of
            if txn["txn_id"] in frauds and body["fraud_probability"] >= float(
                str(sample.get("fraud_probability", -1.0))
            ):
                sample = body
    await producing
    aggregator.stopping.set()
    await aggregating
    return latencies, sample, failures, flagged_frauds


def percentiles(latencies: list[float]) -> str:
    p50, p95, p99 = (statistics.quantiles(latencies, n=100)[q - 1] for q in (50, 95, 99))
    return (
        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms, "
        f"max {max(latencies):.2f} ms (client side, over HTTP)"
    )
