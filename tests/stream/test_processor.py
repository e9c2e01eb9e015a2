"""The aggregation processor against the real Redis, without Kafka in the way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import redis

from fraudstack.adapters.online_store.layout import (
    customer_key,
    terminal_customers_key,
    terminal_events_key,
)
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.processor import Processor
from fraudstack.aggregate.settings import AggregateSettings


@dataclass
class Record:
    """A consumed record as the processor sees it (the values a Kafka consumer hands over)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _transaction(settings: AggregateSettings, offset: int, txn_id: str) -> Record:
    event = {
        "txn_id": txn_id,
        "ts": 1_522_540_800_000 + offset,
        "customer_id": "c-1",
        "terminal_id": "t-1",
        "amount": 10.5,
    }
    return Record(settings.topics.transactions, 0, offset, b"c-1", orjson.dumps(event))


async def test_a_redis_that_forgot_the_terminal_script_gets_it_again(
    pipeline_settings: AggregateSettings,
) -> None:
    link = RedisLink(pipeline_settings.redis_url, timeout=5.0)
    processor = Processor(link, pipeline_settings.aggregate_allowed_lateness_ms)
    client = redis.Redis.from_url(pipeline_settings.redis_url)
    try:
        # Redis loses its script cache when it restarts; flushing it here does the same.
        client.script_flush()
        result = await processor.process([_transaction(pipeline_settings, 0, "a")])
        client.script_flush()
        result = await processor.process([_transaction(pipeline_settings, 1, "b")])
    finally:
        await link.close()
    assert result.applied == 1
    assert client.zscore(terminal_events_key("t-1"), "a") == 1522540800000
    assert client.zscore(terminal_events_key("t-1"), "b") == 1522540800001
    assert client.hget(terminal_customers_key("t-1"), "b") == b"c-1"
    assert client.hget(customer_key("c-1"), "customer_nb_tx_1d") == b"2.0"
    client.close()


async def test_a_replay_restores_terminal_writes_that_a_failed_batch_did_not_make(
    pipeline_settings: AggregateSettings,
) -> None:
    """The customer and terminal writes of a batch are not one transaction: if the first batch
    died between them, the replay finds the customer up to date and must still write the
    terminal."""
    event = {
        "txn_id": "partial-1",
        "ts": 1_522_540_800_000,
        "customer_id": "c-partial",
        "terminal_id": "t-partial",
        "amount": 3.0,
    }
    record = Record(pipeline_settings.topics.transactions, 0, 0, b"c-partial", orjson.dumps(event))
    client = redis.Redis.from_url(pipeline_settings.redis_url)
    link = RedisLink(pipeline_settings.redis_url, timeout=5.0)
    try:
        allowed = pipeline_settings.aggregate_allowed_lateness_ms
        await Processor(link, allowed).process([record])
        client.delete(terminal_events_key("t-partial"))  # as if the terminal write never landed
        replay = await Processor(link, allowed).process([record])  # a restarted instance
    finally:
        await link.close()
    assert replay.duplicates == 1 and replay.applied == 0
    assert client.zscore(terminal_events_key("t-partial"), "partial-1") == 1522540800000
    client.close()


def _event(settings: AggregateSettings, offset: int, customer: str, terminal: str) -> Record:
    event = {
        "txn_id": f"{customer}-{terminal}-{offset}",
        "ts": 1_522_540_800_000 + offset,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": 1.0,
    }
    return Record(settings.topics.transactions, 0, offset, customer.encode(), orjson.dumps(event))


async def test_a_rebalance_while_a_batch_waits_on_redis_lets_the_batch_finish(
    pipeline_settings: AggregateSettings,
) -> None:
    """The consumer runs its rebalance callbacks in its own task: ``forget()`` may come while a
    batch waits on Redis, and must not pull the state from under it."""
    link = RedisLink(pipeline_settings.redis_url, timeout=5.0)
    processor = Processor(link, pipeline_settings.aggregate_allowed_lateness_ms)
    try:
        await processor.process([_event(pipeline_settings, 0, "c-known", "t-rebalance")])
        batch = asyncio.ensure_future(
            processor.process(
                [
                    _event(pipeline_settings, 1, "c-known", "t-rebalance"),
                    _event(pipeline_settings, 2, "c-new", "t-rebalance"),  # to load from Redis
                ]
            )
        )
        await asyncio.sleep(0)  # the batch now waits on Redis for c-new
        processor.forget()  # partitions revoked
        result = await batch
    finally:
        await link.close()
    assert result.applied == 2
    assert processor.customers == {}  # dropped once the batch was done


async def test_a_terminal_busier_than_one_script_call_takes_is_written_whole(
    pipeline_settings: AggregateSettings,
) -> None:
    events = [_event(pipeline_settings, n, f"c-busy-{n}", "t-busy") for n in range(5_000)]
    link = RedisLink(pipeline_settings.redis_url, timeout=30.0)
    try:
        result = await Processor(link, pipeline_settings.aggregate_allowed_lateness_ms).process(
            events
        )
    finally:
        await link.close()
    assert result.applied == 5_000
    client = redis.Redis.from_url(pipeline_settings.redis_url)
    assert client.zcard(terminal_events_key("t-busy")) == 5_000
    client.close()


def _customer_event(settings: AggregateSettings, txn_id: str, minute: int) -> Record:
    event = {
        "txn_id": txn_id,
        "ts": 1_522_540_800_000 + minute * 60_000,
        "customer_id": "c-fenced",
        "terminal_id": "t-fenced",
        "amount": 2.0,
    }
    return Record(settings.topics.transactions, 0, minute, b"c-fenced", orjson.dumps(event))


async def test_an_instance_that_lost_the_partition_cannot_put_an_older_transaction_back(
    pipeline_settings: AggregateSettings,
) -> None:
    """Issue 23's stale writer: an instance stalls with a batch in hand, the partition moves to
    another instance, which writes newer transactions; the stalled one then finishes its old
    batch. The customer's newest transaction and its features stay the new owner's; the
    refusal is counted and the stalled instance drops what it remembers."""
    settings = pipeline_settings
    allowed = settings.aggregate_allowed_lateness_ms
    link = RedisLink(settings.redis_url, timeout=5.0)
    client = redis.Redis.from_url(settings.redis_url)
    stalled, owner = (
        Processor(link, allowed, settings.topics),
        Processor(link, allowed, settings.topics),
    )
    try:
        await stalled.process([_customer_event(settings, "f1", 0)])
        # the partition moved: the new owner replays f2 and goes on with f3
        await owner.process(
            [_customer_event(settings, "f2", 1), _customer_event(settings, "f3", 2)]
        )
        late = await stalled.process([_customer_event(settings, "f2", 1)])  # its old batch
        newest = client.hget(customer_key("c-fenced"), "_last_txn")
        count = client.hget(customer_key("c-fenced"), "customer_nb_tx_1d")
        fields = client.hkeys(customer_key("c-fenced"))
    finally:
        await link.close()
        client.close()
    assert late.applied == 1 and late.refused == 1
    assert newest is not None and newest.decode().startswith("f3:")
    assert count == b"3.0"  # f3's features, with f1 and f2
    assert {b"e:f1", b"e:f2", b"e:f3"} <= set(fields)  # the events are facts: all kept
    assert stalled.customers == {}  # it reads the customer again next time
