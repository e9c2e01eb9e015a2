"""``fraudstack demo``: the pipeline end to end on the local stack.

1. start the local stack (Redis, Kafka, Prometheus);
2. simulate 60 days of card transactions (the Handbook's simulator, smaller than the book);
3. stream them, with their chargebacks, through Kafka (topics of this run's own prefix);
4. aggregate them into the Redis online store;
5. check that every customer's and terminal's online features equal the offline computation;
6. snapshot, train and serve, where those roles are built (each step says when it is not).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time

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
    from fraudstack.adapters.online_store import OnlineStore
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
    settings = AggregateSettings(
        redis_url=servers["redis"]["address"],
        kafka_bootstrap=servers["kafka"]["address"],
        topic_prefix=f"demo-{run_id}.",
        aggregate_group_id=f"demo-aggregate-{run_id}",
        aggregate_metrics_port=0,
    )
    events = table.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    started = _step(3, f"stream {len(events):,} transactions and {len(labels):,} chargebacks")
    asyncio.run(produce_table(settings.kafka_bootstrap, events, labels, topics=settings.topics))
    _done(started, f"topics {settings.topics.transactions}, {settings.topics.labels}")

    started = _step(4, "aggregate into the Redis online store")
    aggregator = Aggregator(settings)
    processed = asyncio.run(aggregator.run(stop_after_idle_s=5))
    busy = max(aggregator.last_batch_at - aggregator.first_batch_at, 1e-9)
    _done(started, f"{processed:,} events, {processed / busy:,.0f} events/s while busy")

    started = _step(5, "online features vs offline computation")

    async def check() -> str:
        store = OnlineStore.from_url(settings.redis_url)
        try:
            report = await compare(store, events, labels)
        finally:
            await store.close()
        return report.summary()

    print(asyncio.run(check()))
    _done(started)

    missing = [
        role
        for role, module in (
            ("snapshot", "fraudstack.snapshot.cli"),
            ("train", "fraudstack.train.cli"),
            ("serve", "fraudstack.serve.cli"),
        )
        if importlib.util.find_spec(module) is None
    ]
    _step(6, "snapshot, train, serve")
    if missing:
        print(f"   not built yet: {', '.join(missing)}")
    else:
        print(
            "   built, not yet part of the demo: run `fraudstack snapshot`, "
            "`fraudstack train` and `fraudstack serve` (see --help)"
        )
    return 0
