"""Streaming benchmark: ingestion and aggregation throughput, event-to-feature delay.

Runs against the real local stack (``fraudstack devstack up`` is done for you, and undone at the
end unless the stack was up already):

1. ingestion: batches of 500 events POSTed to ``fraudstack ingest serve`` (one process), each
   acknowledged only once Kafka has it; events per second end to end;
2. aggregation: a simulated stream already in Kafka, consumed by one ``Aggregator`` into Redis;
   events per second from its first to its last batch, the consumer group's rebalances after
   the first assignment (a steady run has none) and the longest event-loop stall (the consumer's
   heartbeats wait as long);
3. delay: events produced at a steady 1,000 events/s with ``ts`` = the moment they are sent,
   consumed by a running aggregator process; p50/p99 of ``aggregate_event_to_feature_seconds``
   (the delay from the event's time to its features being in Redis), read from its histogram.

Prints a Markdown table; writes ``bench/results/stream.md`` and ``bench/results/stream.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fraudstack.adapters.kafka import ensure_topics, make_producer
from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.devstack import Devstack
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.process import free_port
from fraudstack.ingest.replay import produce_table
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
INGEST_EVENTS = 50_000
STEADY_RATE = 1_000
STEADY_SECONDS = 20
WARMUP_SECONDS = 5


def _events(table_rows: list[dict[str, object]], count: int) -> list[dict[str, object]]:
    return [table_rows[index % len(table_rows)] for index in range(count)]


async def bench_ingest(bootstrap: str, rows: list[dict[str, object]]) -> float:
    port = free_port()
    env = {
        **os.environ,
        "FRAUDSTACK_KAFKA_BOOTSTRAP": bootstrap,
        "FRAUDSTACK_TOPIC_PREFIX": f"bench-ingest-{uuid.uuid4().hex[:6]}.",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "fraudstack.cli", "ingest", "serve", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(200):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            events = _events(rows, INGEST_EVENTS)
            batches = [events[start : start + 500] for start in range(0, len(events), 500)]
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for batch in batches:
                queue.put_nowait(orjson.dumps(batch))

            async def worker() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    response = await client.post(
                        "/v1/transactions",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                    response.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(4)))
            return len(events) / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=20)


async def bench_aggregate(settings: AggregateSettings, transactions, labels) -> dict[str, float]:  # type: ignore[no-untyped-def]
    await produce_table(
        settings.kafka_bootstrap, transactions, labels, progress=True, topics=settings.topics
    )
    aggregator = Aggregator(settings)
    processed = await aggregator.run(stop_after_idle_s=8)
    elapsed = aggregator.last_batch_at - aggregator.first_batch_at
    return {
        "rate": processed / elapsed,
        "processed": processed,
        # joining the group is the one assignment a steady run has
        "rebalances": aggregator.rebalances["assigned"] - 1,
        "longest_stall_s": aggregator.longest_stall_s,
    }


async def bench_delay(
    settings: AggregateSettings, rows: list[dict[str, object]]
) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "FRAUDSTACK_REDIS_URL": settings.redis_url,
        "FRAUDSTACK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FRAUDSTACK_TOPIC_PREFIX": settings.topic_prefix,
        "FRAUDSTACK_LOG_LEVEL": "WARNING",
    }
    await ensure_topics(settings.kafka_bootstrap, settings.topics)
    aggregator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fraudstack.cli",
            "aggregate",
            "--metrics-port",
            str(port),
            "--group-id",
            f"delay-{uuid.uuid4().hex[:6]}",
        ],
        env=env,
    )
    try:
        await asyncio.sleep(6)  # let it join the group and get its partitions
        producer = make_producer(settings.kafka_bootstrap, linger_ms=0)
        await producer.start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        try:
            # Warm-up at the same rate: the group settles and every customer's state is loaded.
            await _produce_steady(producer, settings, rows, WARMUP_SECONDS, "warm")
            await asyncio.sleep(1)
            before = _histogram(httpx.get(metrics_url).text, "aggregate_event_to_feature_seconds")
            achieved = await _produce_steady(producer, settings, rows, STEADY_SECONDS, "steady")
        finally:
            await producer.stop()
        await asyncio.sleep(3)
        after = _histogram(httpx.get(metrics_url).text, "aggregate_event_to_feature_seconds")
    finally:
        aggregator.terminate()
        aggregator.wait(timeout=30)
    buckets = [
        (bound, count - earlier) for (bound, count), (_, earlier) in zip(after, before, strict=True)
    ]
    return {
        "p50_ms": _quantile(buckets, 0.50) * 1000,
        "p99_ms": _quantile(buckets, 0.99) * 1000,
        "observed": buckets[-1][1],
        "rate": achieved,
    }


async def _produce_steady(
    producer: AIOKafkaProducer,
    settings: AggregateSettings,
    rows: list[dict[str, object]],
    seconds: int,
    tag: str,
) -> float:
    """Send at STEADY_RATE for ``seconds``, each event stamped with the moment it is sent."""
    total = STEADY_RATE * seconds
    started = time.monotonic()
    for index, event in enumerate(_events(rows, total)):
        pause = started + index / STEADY_RATE - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        stamped = {**event, "txn_id": f"{tag}-{index}", "ts": int(time.time() * 1000)}
        await producer.send(
            settings.topics.transactions,
            orjson.dumps(stamped),
            key=str(stamped["customer_id"]).encode(),
        )
    await producer.flush()
    return total / (time.monotonic() - started)


def _histogram(text: str, name: str) -> list[tuple[float, float]]:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sorted(
                (float(sample.labels["le"]), sample.value)
                for sample in family.samples
                if sample.name.endswith("_bucket")
            )
    raise RuntimeError(f"{name} not found in the aggregator's metrics")


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation within the bucket, as PromQL's histogram_quantile does."""
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


@contextlib.contextmanager
def local_stack() -> Iterator[dict[str, ServerInfo]]:
    """The local stack, up; stopped at the end only if it was started here: a later benchmark
    should not share the cores with an idle Kafka, and a stack someone else started is theirs."""
    devstack = Devstack()
    started_here = not any(server.answering for server in devstack.status())
    try:
        yield devstack.up(progress=True)
    finally:
        if started_here:
            print("stopping the local stack", flush=True)
            devstack.down()


def main() -> int:
    with local_stack() as stack:
        return run(stack)


def run(stack: dict[str, ServerInfo]) -> int:
    redis_url = stack["redis"]["address"].rsplit("/", 1)[0] + "/5"
    bootstrap = stack["kafka"]["address"]
    table = simulate(SimulationConfig(customers=5_000, terminals=10_000, days=20, seed=5))
    transactions = table.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    labels = make_labels(table, seed=5)
    rows = transactions.slice(0, 50_000).to_pylist()

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    settings = AggregateSettings(
        redis_url=redis_url,
        kafka_bootstrap=bootstrap,
        topic_prefix=f"bench-{uuid.uuid4().hex[:6]}.",
        aggregate_group_id=f"bench-{uuid.uuid4().hex[:6]}",
        aggregate_metrics_port=0,
    )
    print("aggregation throughput...", flush=True)
    aggregation = asyncio.run(bench_aggregate(settings, transactions, labels))
    print("ingestion throughput...", flush=True)
    ingest_rate = asyncio.run(bench_ingest(bootstrap, rows))
    print(f"steady {STEADY_RATE} events/s for {STEADY_SECONDS} s...", flush=True)
    steady = dict(settings)
    steady["topic_prefix"] = f"bench-steady-{uuid.uuid4().hex[:6]}."
    delay = asyncio.run(bench_delay(AggregateSettings(**steady), rows))

    result = {
        "ingest_events_per_s": round(ingest_rate),
        "aggregate_events_per_s": round(aggregation["rate"]),
        "aggregate_events": aggregation["processed"],
        "aggregate_rebalances": int(aggregation["rebalances"]),
        "aggregate_longest_stall_ms": round(aggregation["longest_stall_s"] * 1000, 1),
        "delay_p50_ms": round(delay["p50_ms"], 2),
        "delay_p99_ms": round(delay["p99_ms"], 2),
        "steady_rate_events_per_s": round(delay["rate"]),
        "delay_events_observed": int(delay["observed"]),
        "targets": {
            "aggregate_events_per_s": 20_000,
            "aggregate_rebalances": 0,
            "aggregate_longest_stall_ms": 1_000,
            "delay_p99_ms": 50,
        },
        "machine": machine(),
    }
    rows = [
        (
            "ingestion (HTTP batches of 500, acks=all), events/s",
            f"{result['ingest_events_per_s']:,}",
            "",
        ),
        ("aggregation, one process, events/s", f"{result['aggregate_events_per_s']:,}", "≥ 20,000"),
        ("aggregation, rebalances during the run", str(result["aggregate_rebalances"]), "0"),
        (
            "aggregation, longest event-loop stall, ms",
            f"{result['aggregate_longest_stall_ms']:,}",
            "< 1,000",
        ),
        ("steady rate, events/s", f"{result['steady_rate_events_per_s']:,}", "1,000"),
        ("event → feature delay p50, ms", str(result["delay_p50_ms"]), ""),
        ("event → feature delay p99, ms", str(result["delay_p99_ms"]), "≤ 50"),
    ]
    table_md = "\n".join(
        ["| measure | value | target |", "|---|---:|---:|"]
        + [f"| {name} | {value} | {target} |" for name, value, target in rows]
    )
    print(table_md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "stream.md").write_text(
        "# Streaming benchmark\n\n" + table_md + "\n\n"
        f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, "
        f"Python {result['machine']['python']}; Redis, Kafka and the benchmark share the machine.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
