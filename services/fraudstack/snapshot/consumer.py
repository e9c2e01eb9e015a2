"""The snapshot consumer: Kafka topics to the Parquet offline store, each record exactly once.

Delivery: Kafka is read at least once (a consumer group, manual commits) and the store is
written idempotently, which together give exactly once in Parquet:

* records are buffered per partition and flushed when ``flush_rows`` are buffered or the oldest
  has waited ``flush_seconds``; a flush writes one file per date, named after the offset range
  it holds (``part-<topic>-<partition>-<first>-<last>.parquet``), and only once every file is
  durable (and every bad record acknowledged by the dead-letter topic) are the offsets committed;
* a crash between the write and the commit leaves files for offsets that will be read again.
  On assignment, the consumer lists the ranges of its partition already in the store beyond the
  committed offset and cuts its next buffers at exactly those boundaries, whatever the flush
  thresholds are now; the flush then finds each file there and skips it. A range cut short by a
  crash (some dates written, others not) is completed the same way;
* on revocation or shutdown a buffer is flushed unless it still waits for such a boundary, in
  which case it is dropped uncommitted and the next owner reads it again.

Bad records (not JSON, a missing or wrong field) go to the dead-letter topic with the original
key and value and headers ``reason``, ``source_topic``, ``source_partition``, ``source_offset``;
they are counted and logged with their topic, partition and offset, never dropped silently.
The dead-letter topic is at least once: a bad record sent before a crash, in a range not yet
committed, is sent again; ``source_partition`` and ``source_offset`` tell the copies apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from fraudstack.adapters.kafka import ensure_topics, make_producer, send_dead_letter
from fraudstack.adapters.offline_store import (
    EVENT_SCHEMA,
    EVENTS,
    LABEL_SCHEMA,
    LABELS,
    OfflineStore,
    OffsetRange,
)
from fraudstack.errors import InvalidEvent, StoreUnavailable
from fraudstack.settings import TOPIC_DEAD_LETTER, TOPIC_LABELS, TOPIC_TRANSACTIONS, Topics
from fraudstack.snapshot.metrics import SnapshotMetrics
from fraudstack.snapshot.records import (
    Row,
    label_row,
    rows_to_table,
    transaction_row,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotConfig:
    bootstrap: str
    store_uri: str
    group_id: str = "fraudstack-snapshot"
    transactions_topic: str = TOPIC_TRANSACTIONS
    labels_topic: str = TOPIC_LABELS
    dead_letter_topic: str = TOPIC_DEAD_LETTER
    flush_rows: int = 10_000
    flush_seconds: float = 60.0


@dataclass
class PartitionBuffer:
    """What one partition has read since its last commit."""

    topic_partition: TopicPartition
    dataset: str
    #: Ranges already in the store beyond the committed offset, oldest first.
    replay: deque[OffsetRange]
    #: The next offset not yet durable (the committed position).
    next_offset: int
    rows: list[Row] = field(default_factory=list)
    first: int | None = None
    last: int | None = None
    opened_at: float = 0.0
    #: Where this buffer must end to reproduce a range of an earlier run.
    boundary: int | None = None
    #: Records up to here are inside a stored range that cannot be reproduced: skip them.
    covered_until: int = -1
    dead_letters: list[Awaitable[Any]] = field(default_factory=list)

    def reset(self, next_offset: int) -> None:
        self.rows, self.dead_letters = [], []
        self.first = self.last = self.boundary = None
        self.next_offset = next_offset


class SnapshotConsumer:
    def __init__(self, config: SnapshotConfig, metrics: SnapshotMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or SnapshotMetrics()
        self.store = OfflineStore(config.store_uri)
        self.datasets = {config.transactions_topic: EVENTS, config.labels_topic: LABELS}
        self.buffers: dict[TopicPartition, PartitionBuffer] = {}
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap,
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self.producer = make_producer(config.bootstrap)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # Subscribing to topics that do not exist yet assigns nothing until the next metadata
        # refresh (five minutes): the snapshot pods, up before the ingest pod created them, sat
        # idle while the first transactions arrived. The aggregator does the same.
        config = self.config
        topics = Topics(config.transactions_topic, config.labels_topic, config.dead_letter_topic)
        await ensure_topics(config.bootstrap, topics)
        try:
            await self.producer.start()
            await self.consumer.start()
        except KafkaError as exc:
            await self.producer.stop()
            raise StoreUnavailable(f"Kafka at {self.config.bootstrap}: {exc}") from exc
        self.consumer.subscribe(list(self.datasets), listener=_Listener(self))

    async def run(self) -> None:
        """Consume until :meth:`stop`; then flush what can be flushed and leave the group."""
        await self.start()
        try:
            while not self.stopping.is_set():
                batches = await self.consumer.getmany(timeout_ms=500, max_records=5_000)
                async with self.lock:
                    for topic_partition, records in batches.items():
                        buffer = self.buffers.get(topic_partition)
                        if buffer is None:
                            continue  # revoked meanwhile: its next owner reads these again
                        for record in records:
                            await self._consume(buffer, record)
                    await self._flush_due()
                self._record_lag()
        finally:
            try:
                async with self.lock:
                    await self._release(list(self.buffers))
            finally:
                await self.consumer.stop()
                await self.producer.stop()

    def stop(self) -> None:
        self.stopping.set()

    # --- consuming ---------------------------------------------------------------------

    async def _consume(self, buffer: PartitionBuffer, record: ConsumerRecord[Any, Any]) -> None:
        offset = record.offset
        if offset < buffer.next_offset:
            return  # already durable (a record fetched again after a rebalance)
        if buffer.boundary is not None and offset > buffer.boundary:
            await self._flush(buffer)
        if buffer.first is None:
            self._start_buffer(buffer, offset)
        if offset <= buffer.covered_until:
            if offset == buffer.covered_until:
                await self._commit(buffer, offset + 1)
            return
        buffer.last = offset
        self._add(buffer, record)
        if buffer.boundary is not None:
            if offset >= buffer.boundary:
                await self._flush(buffer)
        elif len(buffer.rows) >= self.config.flush_rows:
            await self._flush(buffer)

    def _start_buffer(self, buffer: PartitionBuffer, offset: int) -> None:
        """Open a buffer at ``offset``, ending where a stored range says it must."""
        if offset <= buffer.covered_until:
            return
        replay = buffer.replay
        while replay and replay[0].last < offset:
            replay.popleft()
        if replay and replay[0].first < offset:
            # inside a range written by an earlier run whose start this run cannot read
            # (deleted by retention, say): those records are in the store already
            buffer.covered_until = replay.popleft().last
            return
        if replay:
            upcoming = replay[0]
            buffer.boundary = upcoming.last if upcoming.first == offset else upcoming.first - 1
        buffer.first = offset
        buffer.opened_at = time.monotonic()

    def _add(self, buffer: PartitionBuffer, record: ConsumerRecord[Any, Any]) -> None:
        parse = transaction_row if buffer.dataset == EVENTS else label_row
        try:
            buffer.rows.append(parse(record.value, record.partition, record.offset))
        except InvalidEvent as exc:
            reason = "; ".join(exc.reasons)
            log.warning(
                "bad record %s[%d]@%d to %s: %s",
                record.topic,
                record.partition,
                record.offset,
                self.config.dead_letter_topic,
                reason,
            )
            buffer.dead_letters.append(asyncio.ensure_future(self._dead_letter(record, reason)))
            self.metrics.dead_letters.labels(record.topic).inc()

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
        delivery = await send_dead_letter(
            self.producer, self.config.dead_letter_topic, record, reason
        )
        await delivery

    # --- flushing and committing -----------------------------------------------------------

    async def _flush_due(self) -> None:
        now = time.monotonic()
        for buffer in self.buffers.values():
            if (
                buffer.first is not None
                and buffer.boundary is None
                and now - buffer.opened_at >= self.config.flush_seconds
            ):
                await self._flush(buffer)

    async def _flush(self, buffer: PartitionBuffer) -> None:
        if buffer.first is None or buffer.last is None:
            return
        started = time.perf_counter()
        if buffer.dead_letters:
            await asyncio.gather(*buffer.dead_letters)
        if buffer.rows:
            schema = EVENT_SCHEMA if buffer.dataset == EVENTS else LABEL_SCHEMA
            table = rows_to_table(buffer.rows, schema)
            topic_partition = buffer.topic_partition
            offsets = OffsetRange(
                topic_partition.topic, topic_partition.partition, buffer.first, buffer.last
            )
            written, skipped = await asyncio.to_thread(
                self.store.write_partitioned, buffer.dataset, table, offsets
            )
            self.metrics.files_written.labels(buffer.dataset).inc(len(written))
            self.metrics.files_skipped.labels(buffer.dataset).inc(len(skipped))
            if written:
                self.metrics.rows_written.labels(buffer.dataset).inc(table.num_rows)
            if skipped:
                log.info("%s: %d file(s) already in the store, kept", offsets, len(skipped))
        if buffer.replay and buffer.replay[0].first == buffer.first:
            buffer.replay.popleft()
        next_offset = buffer.last + 1
        buffer.reset(next_offset)
        await self._commit(buffer, next_offset)
        self.metrics.flush_latency.observe(time.perf_counter() - started)

    async def _commit(self, buffer: PartitionBuffer, next_offset: int) -> None:
        buffer.next_offset = max(buffer.next_offset, next_offset)
        try:
            await self.consumer.commit({buffer.topic_partition: next_offset})
        except (CommitFailedError, IllegalStateError) as exc:
            # the group rebalanced: the files are durable and the next owner skips them
            log.warning("commit of %s at %d failed: %s", buffer.topic_partition, next_offset, exc)
            return
        self.metrics.last_commit.set_to_current_time()

    # --- rebalancing -------------------------------------------------------------------

    async def _release(self, topic_partitions: Iterable[TopicPartition]) -> None:
        for topic_partition in topic_partitions:
            buffer = self.buffers.pop(topic_partition, None)
            if buffer is None:
                continue
            if buffer.boundary is None or buffer.last == buffer.boundary:
                await self._flush(buffer)
            # else: cutting here would not reproduce the stored range; it is read again

    async def _adopt(self, topic_partitions: Iterable[TopicPartition]) -> None:
        assigned = list(topic_partitions)
        # one listing per dataset for the whole assignment, not one per partition
        stored = {
            dataset: await asyncio.to_thread(self.store.all_offset_ranges, dataset)
            for dataset in {self.datasets[item.topic] for item in assigned}
        }
        for topic_partition in assigned:
            dataset = self.datasets[topic_partition.topic]
            committed = await self.consumer.committed(topic_partition)
            position = committed if committed is not None else 0
            ranges = stored[dataset].get((topic_partition.topic, topic_partition.partition), [])
            replay = deque(item for item in ranges if item.last >= position)
            self.buffers[topic_partition] = PartitionBuffer(
                topic_partition, dataset, replay, next_offset=position
            )
            if replay:
                log.info(
                    "%s: %d stored range(s) past offset %d will be reproduced",
                    topic_partition,
                    len(replay),
                    position,
                )

    def _record_lag(self) -> None:
        for topic_partition, buffer in self.buffers.items():
            highwater = self.consumer.highwater(topic_partition)
            if highwater is None:
                continue
            read_up_to = buffer.last + 1 if buffer.last is not None else buffer.next_offset
            lag = max(0, highwater - max(read_up_to, buffer.covered_until + 1))
            self.metrics.consumer_lag.labels(
                topic_partition.topic, str(topic_partition.partition)
            ).set(lag)


class _Listener(ConsumerRebalanceListener):
    """Flush and commit before partitions leave; load stored ranges when they arrive."""

    def __init__(self, snapshot: SnapshotConsumer) -> None:
        self.snapshot = snapshot

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.snapshot.lock:
            await self.snapshot._release(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.snapshot.lock:
            await self.snapshot._adopt(assigned)
