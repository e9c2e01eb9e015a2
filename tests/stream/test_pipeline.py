"""A simulated month through the real Kafka and Redis equals the offline computation."""

from __future__ import annotations

import asyncio
import gc
import uuid

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

from fraudstack.adapters.kafka import make_producer
from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.collector import YOUNG_THRESHOLD
from fraudstack.consistency import compare
from fraudstack.features.definitions import CUSTOMER_FEATURES, FEATURE_NAMES, TRANSACTION_FEATURES
from fraudstack.ingest.replay import produce_table
from support.waiting import eventually_async

from .conftest import Month

IDLE_S = 6.0


async def _stream(settings: AggregateSettings, transactions: pa.Table, labels: pa.Table) -> None:
    await produce_table(
        settings.kafka_bootstrap, transactions, labels, progress=False, topics=settings.topics
    )


def _delays() -> tuple[float, float, float]:
    """The aggregator's event-to-feature histogram in this process: count, the 60 s bucket, sum."""
    name = "aggregate_event_to_feature_seconds"
    return (
        REGISTRY.get_sample_value(f"{name}_count") or 0.0,
        REGISTRY.get_sample_value(f"{name}_bucket", {"le": "60.0"}) or 0.0,
        REGISTRY.get_sample_value(f"{name}_sum") or 0.0,
    )


async def _online_equals_offline(settings: AggregateSettings, month: Month) -> int:
    report = await compare(settings.redis_url, month.transactions, month.labels)
    assert report.ok, report.summary()
    return report.compared_values


async def test_month_streamed_equals_offline(
    pipeline_settings: AggregateSettings, month: Month
) -> None:
    await _stream(pipeline_settings, month.transactions, month.labels)
    thresholds = gc.get_threshold()
    gc.set_threshold(700)  # the default, whatever ran in this process before
    delays_before = _delays()
    try:
        processed = await Aggregator(pipeline_settings).run(stop_after_idle_s=IDLE_S)
        # a batch's many short-lived containers no longer trigger a collection every 700
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*thresholds)
    assert processed == len(month.transactions) + len(month.labels)
    # every transaction's event-to-feature delay observed: years, for a simulated 2018
    count, within_a_minute, total = (a - b for a, b in zip(_delays(), delays_before, strict=True))
    assert count == len(month.transactions)
    assert within_a_minute == 0 and total > count * 365 * 86_400
    compared = await _online_equals_offline(pipeline_settings, month)
    # every customer (its stored transaction and customer features, and the whole vector
    # GET /predict scores) and every terminal (6 values) was compared
    customers = len(set(month.transactions["customer_id"].to_pylist()))
    terminals = len(set(month.transactions["terminal_id"].to_pylist()))
    per_customer = len(TRANSACTION_FEATURES + CUSTOMER_FEATURES) + len(FEATURE_NAMES)
    assert compared == customers * per_customer + terminals * 6


async def test_two_instances_split_partitions_and_agree(
    pipeline_settings: AggregateSettings, month: Month
) -> None:
    first, second = Aggregator(pipeline_settings), Aggregator(pipeline_settings)
    runs = asyncio.gather(
        first.run(stop_after_idle_s=3 * IDLE_S), second.run(stop_after_idle_s=3 * IDLE_S)
    )
    # Both join the group before any event exists, so the group splits the partitions.
    await eventually_async(
        lambda: first.assignment and second.assignment, "the group to split the partitions"
    )
    assert not first.assignment & second.assignment
    await _stream(pipeline_settings, month.transactions, month.labels)
    counts = await runs
    assert all(count > 0 for count in counts), f"one instance got nothing: {counts}"
    # Re-reads after a rebalance are allowed (at-least-once); nothing may be missing.
    assert sum(counts) >= len(month.transactions) + len(month.labels)
    await _online_equals_offline(pipeline_settings, month)


async def test_replays_change_nothing_and_rejects_go_to_dead_letters(
    pipeline_settings: AggregateSettings, month: Month
) -> None:
    settings = pipeline_settings
    await _stream(settings, month.transactions, month.labels)
    # The last 20 days again, as an at-least-once producer or a replay re-sends them: still
    # within every customer's retained history, so each is recognised as a duplicate.
    cutoff = pc.max(month.transactions["ts"]).as_py() - 20 * 86_400_000
    recent = month.transactions.filter(pc.greater(month.transactions["ts"], cutoff))
    recent_labels = month.labels.filter(pc.greater(month.labels["ts"], cutoff))
    await _stream(settings, recent, recent_labels)
    newest = month.transactions.slice(len(month.transactions) - 1).to_pylist()[0]
    bad = [
        b"not json",
        orjson.dumps({**newest, "txn_id": "x-1", "amount": -3}),
        orjson.dumps({**newest, "txn_id": "x-2", "ts": newest["ts"] - 2 * 3_600_000}),
        orjson.dumps({**newest, "txn_id": "x-3"}),
        orjson.dumps(
            {
                **{key: newest[key] for key in ("txn_id", "customer_id", "terminal_id", "ts")},
                "is_fraud": True,
                "reported_at": newest["ts"] + 8 * 86_400_000,
            }
        ),
    ]
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.transactions, bad[0], key=b"1")
        await producer.send_and_wait(settings.topics.transactions, bad[1], key=b"1")
        await producer.send_and_wait(
            settings.topics.transactions, bad[2], key=newest["customer_id"].encode()
        )
        # valid, but keyed by somebody else: on another customer's partition
        await producer.send_and_wait(settings.topics.transactions, bad[3], key=b"someone-else")
        await producer.send_and_wait(settings.topics.labels, bad[4], key=b"1")
    finally:
        await producer.stop()

    aggregator = Aggregator(settings)
    processed = await aggregator.run(stop_after_idle_s=IDLE_S)
    assert processed == len(month.transactions) + len(month.labels) + len(recent) + len(
        recent_labels
    ) + len(bad)
    await _online_equals_offline(settings, month)

    reasons = await _dead_letter_reasons(settings, expected=5)
    assert len(reasons) == 5, reasons
    assert any("invalid event" in reason for reason in reasons)
    assert any("amount" in reason for reason in reasons)
    assert any("late by" in reason for reason in reasons)
    assert any("record key is not the transaction's customer_id" in reason for reason in reasons)
    assert any("after the 7-day feature delay" in reason for reason in reasons)


async def _dead_letter_reasons(settings: AggregateSettings, expected: int) -> list[str]:
    consumer = AIOKafkaConsumer(
        settings.topics.dead_letter,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"dlq-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    reasons: list[str] = []
    try:
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                reasons += [dict(record.headers)["reason"].decode() for record in records]
            if len(reasons) >= expected:
                break
    finally:
        await consumer.stop()
    return reasons
