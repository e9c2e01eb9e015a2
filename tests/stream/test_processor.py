"""The aggregation processor against the real Redis, without Kafka in the way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import redis

from fraudstack.adapters.online_store.codecs import unpack_customer_features
from fraudstack.adapters.online_store.layout import (
    CUSTOMER_FEATURES_FIELD,
    customer_key,
    terminal_customers_key,
    terminal_events_key,
    watermarks_key,
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
    packed = client.hget(customer_key("c-1"), CUSTOMER_FEATURES_FIELD)
    stored = unpack_customer_features(packed, "b")
    assert stored is not None and stored["customer_nb_tx_1d"] == 2.0
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


async def test_an_instance_that_lost_the_partition_is_fenced_off_whole(
    pipeline_settings: AggregateSettings,
) -> None:
    """Issue 23's stale writer: an instance stalls with a batch in hand, the partition moves to
    another instance (a newer ownership epoch), which writes on, a late event of the customer
    included; the stalled one then finishes its old batch, which also reaches past the new
    owner. Nothing of the old batch lands in the customer's hash or the published watermark:
    not its newer transaction, not its features of the same newest transaction one late event
    short (newer-wins alone lets that one through). The refusals are counted and the stalled
    instance drops what it remembers."""
    settings = pipeline_settings
    allowed = settings.aggregate_allowed_lateness_ms
    link = RedisLink(settings.redis_url, timeout=5.0)
    client = redis.Redis.from_url(settings.redis_url)
    key = customer_key("c-fenced")
    stalled, owner = (
        Processor(link, allowed, settings.topics),
        Processor(link, allowed, settings.topics),
    )
    try:
        await stalled.claim([0])
        await stalled.process([_customer_event(settings, "f1", 0)])
        # the partition moves: the new owner replays f2 and goes on with a late f0
        await owner.claim([0])
        await owner.process([_customer_event(settings, "f2", 10)])
        await owner.process([_customer_event(settings, "f0", 5)])
        owned = client.hgetall(key)
        published = client.hgetall(watermarks_key(settings.topics.transactions))
        # the stalled instance's old batch: f2 (without f0 in its history), then f3
        late = await stalled.process(
            [_customer_event(settings, "f2", 10), _customer_event(settings, "f3", 20)]
        )
        after = client.hgetall(key)
        published_after = client.hgetall(watermarks_key(settings.topics.transactions))
    finally:
        await link.close()
        client.close()
    assert late.refused == {"customer": 1, "snapshot": 1, "watermark": 1} and late.fenced
    assert after == owned  # the new owner's hash, byte for byte: no f3, f2's features with f0
    assert after[b"_last_txn"].startswith(b"f2:")
    stored = unpack_customer_features(after[CUSTOMER_FEATURES_FIELD.encode()], "f2")
    assert stored is not None and stored["customer_nb_tx_1d"] == 3.0
    assert b"e:f3" not in after
    assert published_after == published  # not moved ahead of what the new owner replayed
    assert stalled.customers == {}  # it reads the customer again next time


async def test_an_instance_given_its_partition_again_writes_on(
    pipeline_settings: AggregateSettings,
) -> None:
    """A new claim of the same instance fences off nothing of its own: its next batch, under
    the newer epoch, writes over what it wrote under the older one."""
    settings = pipeline_settings
    link = RedisLink(settings.redis_url, timeout=5.0)
    processor = Processor(link, settings.aggregate_allowed_lateness_ms, settings.topics)
    try:
        await processor.claim([0])
        first = await processor.process([_customer_event(settings, "g1", 0)])
        await processor.claim([0, 1])
        second = await processor.process([_customer_event(settings, "g2", 1)])
    finally:
        await link.close()
    assert first.refused == {} and second.refused == {} and not second.fenced
