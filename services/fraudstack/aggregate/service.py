"""The aggregation loop: consume, apply to Redis, then commit.

Delivery: at-least-once. Offsets are committed only after the batch's Redis pipeline and its
dead-letter records are acknowledged; a crash between the two replays the batch, and the writes
are idempotent (see :mod:`fraudstack.aggregate.processor`). A record that cannot be applied is
logged with topic, partition and offset and sent to the dead-letter topic, never dropped.
A broker or Redis that stays away longer than the timeout makes the process exit non-zero, so
Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from fraudstack.adapters.kafka import ensure_topics, make_producer, send_dead_letter
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate import metrics
from fraudstack.aggregate.processor import BatchResult, Processor, count_by_kind
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.collector import collect_less_often
from fraudstack.errors import StoreUnavailable
from fraudstack.histograms import Tally

log = logging.getLogger(__name__)


class _ForgetOnRebalance(ConsumerRebalanceListener):
    """Drops the partition-local state whenever partitions move, and tracks what we own."""

    def __init__(
        self, processor: Processor, aggregator: Aggregator, consumer: AIOKafkaConsumer
    ) -> None:
        self.processor = processor
        self.aggregator = aggregator
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.processor.forget()
        self.aggregator.assignment = set()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.processor.forget()
        self.aggregator.assignment = set(assigned)
        # a new ownership epoch fences off whoever wrote these partitions before
        transactions = self.aggregator.settings.topics.transactions
        await _claim(self.processor, [tp.partition for tp in assigned if tp.topic == transactions])
        partitions = self.consumer.partitions_for_topic(
            self.aggregator.settings.topics.transactions
        )
        if partitions:  # known once the topic's metadata is
            self.processor.assign(len(partitions))


class Aggregator:
    def __init__(self, settings: AggregateSettings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.processed = 0
        #: monotonic times of the first and the last applied batch (throughput figures)
        self.first_batch_at = 0.0
        self.last_batch_at = 0.0
        #: The topic partitions this instance owns right now.
        self.assignment: set[TopicPartition] = set()

    async def run(self, stop_after_idle_s: float | None = None) -> int:
        """Consume until stopped (or idle for ``stop_after_idle_s``); return events processed.

        Sets the process's garbage collector as a long-running service's (see
        :mod:`fraudstack.collector`).
        """
        collect_less_often()
        bootstrap = self.settings.require("kafka_bootstrap")
        redis_url = self.settings.require("redis_url")
        topics = self.settings.topics
        await ensure_topics(bootstrap, topics)
        # a batch of thousands of commands may take a while; only a stuck one is given up on
        link = RedisLink(redis_url, timeout=30.0, connect_timeout=5.0)
        processor = Processor(link, self.settings.aggregate_allowed_lateness_ms, topics)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=self.settings.aggregate_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )
        consumer.subscribe(
            [topics.transactions, topics.labels],
            listener=_ForgetOnRebalance(processor, self, consumer),
        )
        producer = make_producer(bootstrap)
        await consumer.start()
        await producer.start()
        last_progress = time.monotonic()
        last_lag = 0.0
        try:
            while not self.stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=100, max_records=self.settings.aggregate_max_batch
                )
                now = time.monotonic()
                if now - last_lag > 1.0:
                    await _update_lag(consumer)
                    last_lag = now
                if not batches:
                    if stop_after_idle_s is not None and now - last_progress > stop_after_idle_s:
                        break
                    continue
                if not self.first_batch_at:
                    self.first_batch_at = time.monotonic()
                await self._apply(consumer, producer, processor, batches)
                last_progress = self.last_batch_at = time.monotonic()
        finally:
            await consumer.stop()
            await producer.stop()
            await link.close()
        return self.processed

    async def _apply(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        processor: Processor,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        records = [record for partition in batches.values() for record in partition]
        started = time.perf_counter()
        result = await self._with_retry(processor, records)
        metrics.WRITE_LATENCY.observe(time.perf_counter() - started)
        if result.dead_letters:
            sends = [
                await send_dead_letter(producer, self.settings.topics.dead_letter, record, reason)
                for record, reason in result.dead_letters
            ]
            await asyncio.gather(*sends)
            for record, reason in result.dead_letters:
                log.warning(
                    "dead letter %s[%d]@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    reason,
                )
        # only partitions still ours: one revoked while the batch was written is the new
        # owner's to replay (idempotently), and committing it would raise
        owned = consumer.assignment()
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if tp in owned}
        if result.fenced and offsets:
            # fenced off: not committed, and read again from the last commit once the group
            # says what is ours (idempotent writes; a revoked partition is the new owner's)
            await consumer.seek_to_committed(*offsets)
            offsets = {}
        try:
            if offsets:
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            # The group rebalanced meanwhile; the new owner replays, idempotently.
            log.info("commit after a rebalance refused; the batch will be replayed")
        written_at = time.time()
        delays = Tally(metrics.EVENT_TO_FEATURE_BUCKETS)  # one write per bucket, not per event
        for event_ts in result.written_event_ts:
            delays.add(max(0.0, written_at - event_ts / 1000))
        delays.write(metrics.EVENT_TO_FEATURE)
        if result.written_event_ts:
            metrics.FEATURE_EVENT_TIME.set(max(result.written_event_ts) / 1000)
        for (topic, outcome), count in count_by_kind(result).items():
            if count:
                metrics.EVENTS.labels(topic, outcome).inc(count)
        if result.dead_letters:
            metrics.EVENTS.labels("any", "dead_letter").inc(len(result.dead_letters))
        for write, count in result.refused.items():
            metrics.REFUSED_WRITES.labels(write).inc(count)
        if result.fenced:
            log.warning(
                "writes refused (%s): another instance claimed our partitions since the batch "
                "was read; the batch is dropped, not committed, and the state read again",
                result.refused,
            )
        metrics.BATCH_SIZE.observe(len(records))
        self.processed += len(records)

    async def _with_retry(
        self, processor: Processor, records: list[ConsumerRecord[bytes, bytes]]
    ) -> BatchResult:
        deadline = time.monotonic() + self.settings.aggregate_broker_timeout_s
        delay = 0.1
        while True:
            try:
                return await processor.process(records)
            except StoreUnavailable as exc:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"Redis unreachable for too long: {exc}") from exc
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                processor.forget()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def _claim(processor: Processor, partitions: list[int], attempts: int = 8) -> None:
    """Claim the assigned partitions, retrying while Redis is away. If it stays away, the
    instance holds no epoch: its writes are refused (never written under an older claim) until
    the next assignment claims again."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            await processor.claim(partitions)
            return
        except StoreUnavailable as exc:
            if attempt == attempts - 1:
                processor.epochs = {}
                log.error("could not claim partitions %s: %s", partitions, exc)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _update_lag(consumer: AIOKafkaConsumer) -> None:
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue  # nothing fetched from this partition yet
        try:
            position = await consumer.position(tp)
        except KafkaError:
            continue
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
