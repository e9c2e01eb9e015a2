"""Delivery as real producers make it: every event twice, out of order, some far too late.

The month's transactions are delivered each twice (an at-least-once producer that retried), in
an order shuffled within the allowed lateness (every event reaches the topic before any event
more than 50 minutes newer than it, against an allowed lateness of an hour); a few more arrive
days late. The features must be those of the month delivered once and in order, and each
too-late event must be in the dead-letter topic with its reason.
"""

from __future__ import annotations

import random

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaConsumer

from fraudstack.adapters.kafka import ensure_topics, make_producer
from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.consistency import compare
from fraudstack.features.definitions import MS_PER_DAY, MS_PER_HOUR

from .conftest import Month

pytestmark = pytest.mark.faults

SHUFFLE_MS = 50 * 60 * 1000  # within the allowed lateness of an hour
TOO_LATE = 5


def shuffled_twice(transactions: pa.Table, seed: int) -> list[dict[str, object]]:
    """Every transaction twice, each copy at its time plus a random delay under SHUFFLE_MS."""
    rng = random.Random(seed)
    rows = transactions.to_pylist() * 2
    arrival = [int(row["ts"]) + rng.randrange(SHUFFLE_MS) for row in rows]
    return [row for _, row in sorted(zip(arrival, rows, strict=True), key=lambda pair: pair[0])]


async def produce(
    settings: AggregateSettings, transactions: list[dict[str, object]], labels: pa.Table
) -> None:
    await ensure_topics(settings.kafka_bootstrap, settings.topics)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        for row in transactions:
            key = str(row["customer_id"]).encode()
            await producer.send(settings.topics.transactions, orjson.dumps(row), key=key)
        for label in labels.to_pylist():
            key = str(label["terminal_id"]).encode()
            await producer.send(settings.topics.labels, orjson.dumps(label), key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def dead_letters(settings: AggregateSettings) -> list[tuple[str, str]]:
    """(txn_id, reason) of every record in the dead-letter topic."""
    consumer = AIOKafkaConsumer(
        settings.topics.dead_letter,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[tuple[str, str]] = []
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        for records in batches.values():
            for record in records:
                txn_id = orjson.loads(record.value or b"{}").get("txn_id", "?")
                found.append((txn_id, dict(record.headers)["reason"].decode()))
    finally:
        await consumer.stop()
    return found


async def test_duplicates_and_reordering_within_the_lateness_change_nothing(
    pipeline_settings: AggregateSettings, month: Month
) -> None:
    settings = pipeline_settings
    # a few transactions from mid-month held back to the end: days behind when they arrive
    held = month.transactions.slice(len(month.transactions) // 2, TOO_LATE)
    held_ids = set(held["txn_id"].to_pylist())
    on_time = month.transactions.filter(
        pc.invert(pc.is_in(month.transactions["txn_id"], held["txn_id"]))
    )
    delivery = shuffled_twice(on_time, seed=7)
    newest = max(int(row["ts"]) for row in delivery)
    assert newest - max(held["ts"].to_pylist()) > 3 * MS_PER_DAY > MS_PER_HOUR
    late = held.to_pylist()
    labels = month.labels.filter(pc.invert(pc.is_in(month.labels["txn_id"], held["txn_id"])))
    await produce(settings, delivery + late, labels)

    processed = await Aggregator(settings).run(stop_after_idle_s=6.0)
    assert processed == len(delivery) + len(late) + len(labels)

    report = await compare(settings.redis_url, on_time, labels)
    print(
        f"\n{len(on_time):,} transactions delivered twice, shuffled within 50 minutes; "
        f"{TOO_LATE} more days late, in the dead-letter topic: "
        f"{report.compared_values:,} values compared, "
        f"{len(report.mismatches)} wrong, {len(report.missing)} missing"
    )
    assert report.ok, report.summary()
    rejected = await dead_letters(settings)
    assert {txn_id for txn_id, _ in rejected} == held_ids
    assert all("beyond the allowed lateness" in reason for _, reason in rejected)
