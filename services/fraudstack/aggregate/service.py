"""The aggregation loop: consume, apply to Redis, then commit.

Delivery: at-least-once. A poll's records are applied in steps sized to a CPU budget
(:mod:`fraudstack.aggregate.pacing`), with the event loop free between two steps, so that the
consumer's heartbeats, which aiokafka sends from a task of the same loop, keep flowing however
costly the records are. After each step, and only for what it wrote, offsets are committed once
its Redis pipelines and its dead-letter records are acknowledged; a crash between the two replays
the step, and the writes are idempotent (see :mod:`fraudstack.aggregate.processor`). When the
partitions move during a poll, its steps not applied yet are dropped: each partition's owner
fetches them again from the committed offset. A record that cannot be applied is
logged with topic, partition and offset and sent to the dead-letter topic, never dropped.
A broker or Redis that stays away longer than the timeout makes the process exit non-zero, so
Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from fraudstack.adapters.kafka import ensure_topics, make_producer, send_dead_letter
from fraudstack.adapters.online_store.generation import GenerationMarker
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate import metrics
from fraudstack.aggregate.loop_monitor import LoopMonitor
from fraudstack.aggregate.pacing import StepSizer
from fraudstack.aggregate.processor import BatchResult, Processor, count_by_kind
from fraudstack.aggregate.rebuild import Rebuild, StoreLost
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.collector import collect_less_often
from fraudstack.errors import StoreError, StoreUnavailable
from fraudstack.histograms import Tally

log = logging.getLogger(__name__)

#: aiokafka heartbeats from a task of this event loop, and the steps of a poll leave the loop free
#: every aggregate_step_budget_ms, so a 10 s session only expires for an instance that is really
#: gone (killed, paused, cut off), whose partitions then move to a survivor within those 10 s.
#: (The broker accepts 6 s to 30 min.)
SESSION_TIMEOUT_MS = 10_000


class _ForgetOnRebalance(ConsumerRebalanceListener):
    """Drops the partition-local state whenever partitions move, tracks what we own, and
    counts the rebalances (a revocation only when there was something to revoke: aiokafka
    calls it with nothing before the first assignment)."""

    def __init__(
        self,
        processor: Processor,
        aggregator: Aggregator,
        consumer: AIOKafkaConsumer,
        rebuild: Rebuild,
    ) -> None:
        self.processor = processor
        self.aggregator = aggregator
        self.consumer = consumer
        self.rebuild = rebuild

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.processor.forget()
        self.aggregator.assignment = set()
        self.aggregator.generation += 1
        if revoked:
            self.aggregator.count_rebalance("revoked")

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.processor.forget()
        self.aggregator.assignment = set(assigned)
        self.aggregator.generation += 1
        self.aggregator.count_rebalance("assigned")
        # a new ownership epoch fences off whoever wrote these partitions before
        transactions = self.aggregator.settings.topics.transactions
        await _claim(self.processor, [tp.partition for tp in assigned if tp.topic == transactions])
        partitions = self.consumer.partitions_for_topic(
            self.aggregator.settings.topics.transactions
        )
        if partitions:  # known once the topic's metadata is
            self.processor.assign(len(partitions))
        # checked against the store's generation marker before the next poll is applied (a
        # seek from here would wait on the fetcher this rebalance holds)
        self.rebuild.pending = True


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
        #: bumped whenever partitions move: a poll taken before then is not applied further
        self.generation = 0
        #: this instance's rebalances, by what happened (see :class:`_ForgetOnRebalance`)
        self.rebalances: dict[str, int] = {"assigned": 0, "revoked": 0}
        self.loop_monitor = LoopMonitor(
            observe=metrics.EVENT_LOOP_LATENESS.observe, publish=metrics.EVENT_LOOP_STALL.set
        )
        self.step_sizer = StepSizer(
            settings.aggregate_step_budget_ms / 1000, largest=settings.aggregate_max_batch
        )

    @property
    def longest_stall_s(self) -> float:
        """The longest the event loop was held up since :meth:`run` started, in seconds."""
        return self.loop_monitor.longest_s

    def count_rebalance(self, event: str) -> None:
        self.rebalances[event] += 1
        metrics.REBALANCES.labels(event).inc()

    def make_processor(self, link: RedisLink) -> Processor:
        """The processor a run applies its records with (tests make a costlier one)."""
        return Processor(link, self.settings.aggregate_allowed_lateness_ms, self.settings.topics)

    async def run(self, stop_after_idle_s: float | None = None) -> int:
        """Consume until stopped (or idle for ``stop_after_idle_s``); return events processed.

        Sets the process's garbage collector as a long-running service's (see
        :mod:`fraudstack.collector`).
        """
        collect_less_often()
        monitor = asyncio.create_task(self.loop_monitor.run())
        try:
            return await self._run(stop_after_idle_s)
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor

    async def _run(self, stop_after_idle_s: float | None) -> int:
        bootstrap = self.settings.require("kafka_bootstrap")
        redis_url = self.settings.require("redis_url")
        topics = self.settings.topics
        await ensure_topics(bootstrap, topics)
        # a batch of thousands of commands may take a while; only a stuck one is given up on
        link = RedisLink(redis_url, timeout=30.0, connect_timeout=5.0)
        processor = self.make_processor(link)
        rebuild = Rebuild(GenerationMarker(link), (topics.transactions, topics.labels))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=self.settings.aggregate_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=50,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            # a third of the session, as Kafka advises: two heartbeats may be lost or late
            # before the session expires
            heartbeat_interval_ms=3_000,
            # aiokafka leaves the group when getmany is not called for this long (KIP-62), and
            # all the steps of one poll run between two calls: aggregate_max_batch records at
            # the slowest rate measured (911/s, issue 23) take 55 s, and Redis is retried for
            # aggregate_broker_timeout_s (60 s) at most, so only a stuck instance takes 5 min.
            max_poll_interval_ms=300_000,
            # the records of one poll are capped by getmany(max_records=aggregate_max_batch)
            # below; the CPU per step is bounded by the steps, not by the poll
        )
        consumer.subscribe(
            [topics.transactions, topics.labels],
            listener=_ForgetOnRebalance(processor, self, consumer, rebuild),
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
                    # a store lost while no record comes is noticed within a second too
                    await _try(rebuild.check(), "checking the store's generation")
                    last_lag = now
                if rebuild.pending and consumer.assignment():
                    replayed = await self._check_generation(consumer, processor, rebuild)
                    if replayed is None:  # Redis away: read again from the last commit
                        await _rewind(consumer, batches)
                        continue
                    # what was fetched of a partition sought back to its first offset is dropped
                    batches = {tp: got for tp, got in batches.items() if tp not in replayed}
                if rebuild.targets and not batches:
                    await _try(rebuild.committed({}), "marking replayed partitions caught up")
                if not batches:
                    if stop_after_idle_s is not None and now - last_progress > stop_after_idle_s:
                        break
                    continue
                if not self.first_batch_at:
                    self.first_batch_at = time.monotonic()
                await self._apply_poll(consumer, producer, processor, rebuild, batches)
                last_progress = self.last_batch_at = time.monotonic()
        finally:
            await consumer.stop()
            await producer.stop()
            await link.close()
        return self.processed

    async def _apply_poll(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        processor: Processor,
        rebuild: Rebuild,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        """Apply one poll's records in steps of about the CPU budget, one after another (each
        partition's records stay in order), and let the loop run its other tasks between two.

        The CPU a step took is the thread's, awaits included: what other tasks (the fetcher
        decoding the next poll) ran meanwhile counts too, which only makes the steps smaller.
        """
        records = [record for partition in batches.values() for record in partition]
        generation = self.generation
        start = 0
        while start < len(records):
            if self.generation != generation:
                log.info(
                    "partitions moved during a poll: its last %d records are left to be "
                    "fetched again from the committed offsets",
                    len(records) - start,
                )
                return
            step = records[start : start + self.step_sizer.size]
            cpu_before = time.thread_time()
            await self._apply(consumer, producer, processor, rebuild, step)
            self.step_sizer.record(len(step), time.thread_time() - cpu_before)
            start += len(step)
            await asyncio.sleep(0)  # heartbeats and the fetcher run here, however long the poll

    async def _apply(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        processor: Processor,
        rebuild: Rebuild,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        started = time.perf_counter()
        try:
            result = await self._with_retry(processor, rebuild, records)
        except StoreLost as exc:
            # nothing of the step was written or committed; the rest of the poll is dropped and
            # read again from the last commit, or replayed into the new generation (see
            # _check_generation)
            log.error("%s; the step is dropped", exc)
            self.generation += 1
            await _rewind(consumer, consumer.assignment())
            return
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
        offsets: dict[TopicPartition, int] = {}
        for record in records:  # in order within a partition: the last one wins
            partition = TopicPartition(record.topic, record.partition)
            if partition in owned:
                offsets[partition] = record.offset + 1
        if result.fenced:
            # fenced off: not committed, and read again from the last commit once the group
            # says what is ours (idempotent writes; a revoked partition is the new owner's);
            # the rest of the poll is not applied either
            self.generation += 1
            await _rewind(consumer, consumer.assignment())
            offsets = {}
        try:
            if offsets:
                await consumer.commit(offsets)
                await _try(rebuild.committed(offsets), "marking replayed partitions caught up")
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

    async def _check_generation(
        self, consumer: AIOKafkaConsumer, processor: Processor, rebuild: Rebuild
    ) -> set[TopicPartition] | None:
        """After an assignment or a loss: read the store's generation marker (make it if it is
        missing) and replay what it lacks (:mod:`fraudstack.aggregate.rebuild`); return the
        partitions sought back to their first offset, or None if Redis is away (tried again at
        the next poll)."""
        try:
            if rebuild.lost:  # the owners' epochs went with the store: claimed again, newer
                transactions = self.settings.topics.transactions
                await processor.claim(
                    [tp.partition for tp in consumer.assignment() if tp.topic == transactions]
                )
            replayed = await rebuild.start(consumer)
        except StoreError as exc:
            log.warning("could not read the store's generation marker (%s); trying again", exc)
            rebuild.pending = True
            await asyncio.sleep(0.5)
            return None
        if replayed:
            processor.forget()  # built again from the first offset, in order
            self.generation += 1
        return set(replayed)

    async def _with_retry(
        self, processor: Processor, rebuild: Rebuild, records: list[ConsumerRecord[bytes, bytes]]
    ) -> BatchResult:
        deadline = time.monotonic() + self.settings.aggregate_broker_timeout_s
        delay = 0.1
        while True:
            try:
                # a store that came back empty while Redis was away is not written into
                await rebuild.check()
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


async def _try(marking: Awaitable[None], what: str) -> None:
    """Await ``marking``; a store away or lost is logged, not raised: the next poll retries
    (a partition's mark) or notices (a loss, through Rebuild.pending)."""
    try:
        await marking
    except (StoreError, StoreLost) as exc:
        log.warning("%s failed: %s", what, exc)


async def _rewind(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
    """Fetch these partitions again from their last commit (from their first offset if none):
    what was fetched of them and not committed is read again, not skipped. (aiokafka's
    ``seek_to_committed`` leaves a partition with no commit where it is.)"""
    for tp in list(partitions):
        if tp not in consumer.assignment():
            continue  # its new owner reads it from the commit
        committed = await consumer.committed(tp)
        # Asked again after the await: a rebalance may have taken the partition meanwhile.
        if tp not in consumer.assignment():
            continue
        try:
            if committed:
                consumer.seek(tp, committed)
            else:
                await consumer.seek_to_beginning(tp)
        except IllegalStateError:
            continue  # revoked between the check and the seek: the new owner has it


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
