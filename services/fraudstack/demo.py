"""``fraudstack demo``: the pipeline end to end on the local stack.

1. start the local stack (Redis, Kafka, Prometheus);
2. simulate 60 days of card transactions (the Handbook's simulator, smaller than the book);
3. stream them, with their chargebacks, through Kafka (topics of this run's own prefix);
4. aggregate them into the Redis online store;
5. check that every customer's and terminal's online features equal the offline computation;
6. snapshot the streams into the Parquet offline store;
7. train and compare models on the offline store, publish the best to the registry;
8. serve it with gunicorn workers;
9. stream one more day while scoring every transaction through the HTTP API, and print a
   sample answer and the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
import pyarrow.compute as pc
import redis

from fraudstack import demo_serving as serving
from fraudstack.paths import state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--terminals", type=int, default=4_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=8)


def _step(number: int, text: str) -> float:
    print(f"\n== {number}. {text}", flush=True)
    return time.monotonic()


def _done(started: float, text: str = "") -> None:
    print(f"   done in {time.monotonic() - started:.1f} s{'; ' + text if text else ''}", flush=True)


def run(args: argparse.Namespace) -> int:
    from fraudstack.aggregate.service import Aggregator
    from fraudstack.aggregate.settings import AggregateSettings
    from fraudstack.consistency import compare
    from fraudstack.devstack import Devstack
    from fraudstack.ingest.replay import produce_table
    from fraudstack.offline_features import write_parquet_atomically
    from fraudstack.simulate import SimulationConfig, make_labels, simulate, summary

    started = _step(1, "local stack")
    servers = Devstack().up()
    _done(started)

    started = _step(2, f"simulate {args.customers} customers, {args.days} days")
    table = simulate(
        SimulationConfig(
            customers=args.customers, terminals=args.terminals, days=args.days, seed=args.seed
        ),
        progress=True,
    )
    labels = make_labels(table, seed=args.seed)
    folder = state_dir() / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet_atomically(table, str(folder / "transactions.parquet"))
    write_parquet_atomically(labels, str(folder / "labels.parquet"))
    print(summary(table))
    _done(started, f"written to {folder}")

    run_id = time.strftime("%Y%m%d-%H%M%S")
    # A Redis database of the demo's own, emptied: each run starts from a blank online store.
    redis_url = servers["redis"]["address"].rsplit("/", 1)[0] + "/1"
    redis.Redis.from_url(redis_url).flushdb()
    settings = AggregateSettings(
        redis_url=redis_url,
        kafka_bootstrap=servers["kafka"]["address"],
        topic_prefix=f"demo-{run_id}.",
        aggregate_group_id=f"demo-aggregate-{run_id}",
        aggregate_metrics_port=0,
    )
    everything = table.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    # The last day is kept back: it streams in step 9 while the service scores it.
    live_from = pc.max(everything["ts"]).as_py() // 86_400_000 * 86_400_000
    events = everything.filter(pc.less(everything["ts"], live_from))
    live = everything.filter(pc.greater_equal(everything["ts"], live_from))
    live_labels = labels.filter(pc.greater_equal(labels["ts"], live_from))
    labels = labels.filter(pc.less(labels["reported_at"], live_from))
    started = _step(3, f"stream {len(events):,} transactions and {len(labels):,} chargebacks")
    asyncio.run(produce_table(settings.kafka_bootstrap, events, labels, topics=settings.topics))
    _done(started, f"topics {settings.topics.transactions}, {settings.topics.labels}")

    started = _step(4, "aggregate into the Redis online store")
    aggregator = Aggregator(settings)
    processed = asyncio.run(aggregator.run(stop_after_idle_s=5))
    busy = max(aggregator.last_batch_at - aggregator.first_batch_at, 1e-9)
    _done(started, f"{processed:,} events, {processed / busy:,.0f} events/s while busy")

    started = _step(5, "online features vs offline computation")

    print(asyncio.run(compare(settings.redis_url, events, labels)).summary())
    _done(started)

    store, registry = folder / "offline", folder / "models"
    started = _step(6, "snapshot the streams into the Parquet offline store")
    rows = serving.snapshot(settings, store / run_id, len(events) + len(labels))
    _done(started, f"{rows:,} rows under {store / run_id}")

    started = _step(7, "train, compare and publish a model")
    version = serving.train(store / run_id, registry)
    _done(started, f"published {version}")

    started = _step(8, "serve it (gunicorn, 2 uvicorn workers)")
    process, url = serving.serve(settings, registry, version)
    _done(started, url)
    try:
        started = _step(9, f"stream the last day ({len(live):,} transactions) and score each")
        latencies, sample, failures, flagged = asyncio.run(
            serving.score_while_streaming(settings, url, live, live_labels, rate=200)
        )
        _done(started)
        print(
            f"   scored {len(latencies):,} transactions, {failures} failed; "
            f"{flagged} of {len(live_labels)} frauds answered risk_level=high"
        )
        print(f"   latency: {serving.percentiles(latencies)}")
        print("   a fraud as answered:", orjson.dumps(sample).decode())
    finally:
        process.terminate()
        process.wait(timeout=30)
    print("\nmodel quality on the Handbook protocol: bench/results/model_quality.md")
    return 0
