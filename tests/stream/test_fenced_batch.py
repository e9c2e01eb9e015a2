"""A batch the store fences off is neither committed nor skipped: the consumer goes back to its
last commit (issue 23), and the refusal is counted by write."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from fraudstack.adapters.kafka import ensure_topics, make_producer
from fraudstack.adapters.online_store.generation import GenerationMarker
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.processor import Processor
from fraudstack.aggregate.rebuild import Rebuild
from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings

from .test_processor import Record

T0 = 1_522_540_800_000


def _event(txn_id: str, minute: int) -> dict[str, object]:
    return {
        "txn_id": txn_id,
        "ts": T0 + minute * 60_000,
        "customer_id": "c-zombie",
        "terminal_id": "t-zombie",
        "amount": 3.0,
    }


def _refused(write: str) -> float:
    labels = {"write": write}
    return REGISTRY.get_sample_value("aggregate_refused_writes_total", labels) or 0.0


async def test_a_fenced_batch_is_read_again_from_the_last_commit(
    pipeline_settings: AggregateSettings,
) -> None:
    settings = pipeline_settings
    topic = settings.topics.transactions
    await ensure_topics(settings.kafka_bootstrap, settings.topics)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    for minute in range(3):
        await producer.send_and_wait(
            topic, orjson.dumps(_event(f"z{minute}", minute)), key=b"c-zombie"
        )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.aggregate_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    links = [RedisLink(settings.redis_url, timeout=5.0) for _ in range(2)]
    stale = Processor(links[0], settings.aggregate_allowed_lateness_ms, settings.topics)
    owner = Processor(links[1], settings.aggregate_allowed_lateness_ms, settings.topics)
    refused_before = _refused("customer")
    try:
        batches: dict[TopicPartition, list[object]] = {}
        deadline = time.monotonic() + 30
        while sum(map(len, batches.values())) < 3 and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                batches.setdefault(tp, []).extend(records)
        ((tp, records),) = batches.items()
        assert len(records) == 3
        await stale.claim(range(4))
        await consumer.commit({tp: 1})  # z0 was written and committed before the stall

        # the partition moves meanwhile: the new owner claims it and writes the customer
        await owner.claim([tp.partition])
        value = orjson.dumps(_event("z2", 2))
        await owner.process([Record(topic, tp.partition, 2, b"c-zombie", value)])

        # the stalled instance finishes its batch (z1, z2)
        rebuild = Rebuild(GenerationMarker(links[0]), ())  # no generation read: no check
        await Aggregator(settings)._apply(consumer, producer, stale, rebuild, records[1:])  # type: ignore[arg-type]
        committed = await consumer.committed(tp)
        position = await consumer.position(tp)
    finally:
        await consumer.stop()
        await producer.stop()
        for link in links:
            await link.close()
    assert committed == 1  # the fenced batch was not committed
    assert position == 1  # and is read again from the last commit, once the group says whose
    assert _refused("customer") == refused_before + 1
    assert stale.customers == {}
