"""The aggregator killed with ``kill -9`` in the middle of a stream, on the real broker and Redis.

A simulated stream of more than 100,000 events (transactions and their chargebacks) is in Kafka
first; ``fraudstack aggregate`` processes run on it as they would in production (subprocesses, a
consumer group, a private Redis). One is killed -9 when about half the stream is committed:

* alone: it is started again and finishes the stream;
* one of two: the other takes its partitions once the group notices (session timeout).

Afterwards the online store must equal the offline computation of every feature of every
customer and terminal: no event lost, none counted twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from fraudstack.adapters.kafka import ensure_topics
from fraudstack.consistency import compare
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.ingest.replay import produce_table
from fraudstack.settings import Topics
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from support.waiting import eventually

pytestmark = pytest.mark.faults


@dataclass(frozen=True)
class Stream:
    transactions: pa.Table
    labels: pa.Table

    @property
    def events(self) -> int:
        return self.transactions.num_rows + self.labels.num_rows


@pytest.fixture(scope="module")
def stream() -> Stream:
    """About 100,000 transactions over three weeks, with their chargebacks."""
    transactions = simulate(SimulationConfig(customers=2_600, terminals=5_200, days=21, seed=31))
    assert transactions.num_rows >= 100_000, transactions.num_rows
    return Stream(transactions, make_labels(transactions, seed=31))


@dataclass
class Run:
    """One stream in Kafka under topics of its own, one consumer group, one private Redis."""

    bootstrap: str
    topics: Topics
    group: str
    redis: PrivateRedis
    folder: Path

    def start_aggregator(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "FRAUDSTACK_KAFKA_BOOTSTRAP": self.bootstrap,
            "FRAUDSTACK_REDIS_URL": self.redis.url,
            "FRAUDSTACK_TOPIC_PREFIX": self.topics.transactions.removesuffix("transactions"),
        }
        argv = [sys.executable, "-m", "fraudstack.cli", "aggregate", "--metrics-port", "0"]
        with open(self.folder / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [*argv, "--group-id", self.group],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def committed_and_end(self) -> tuple[int, int]:
        """Offsets the group has committed, and the topics' end offsets, summed."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.group)
            described = await admin.describe_topics([self.topics.transactions, self.topics.labels])
            partitions = [
                TopicPartition(topic["topic"], partition["partition"])
                for topic in described
                for partition in topic["partitions"]
            ]
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
            await admin.close()
        done = sum(max(meta.offset, 0) for tp, meta in committed.items() if tp in ends)
        return done, sum(ends.values())

    async def stable_members(self) -> int:
        """Members of the group once it is stable (each then owns some partitions), else 0."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([self.group])
        finally:
            await admin.close()
        (group,) = response.groups
        state, members = group[2], group[5]
        return len(members) if state == "Stable" else 0

    def progress(self) -> float:
        """The share of the stream the group has committed (0 before the group exists)."""
        try:
            done, end = asyncio.run(self.committed_and_end())
        except KafkaError:  # no coordinator for a group that has not joined yet
            return 0.0
        return done / end if end else 0.0

    def members(self) -> int:
        try:
            return asyncio.run(self.stable_members())
        except KafkaError:
            return 0


@pytest.fixture
def run(kafka_bootstrap: str, tmp_path: Path, stream: Stream) -> Iterator[Run]:
    prefix = f"crash-{uuid.uuid4().hex[:6]}."
    topics = Topics.with_prefix(prefix)
    redis = PrivateRedis(tmp_path / "redis").start()
    asyncio.run(ensure_topics(kafka_bootstrap, topics))
    asyncio.run(
        produce_table(
            kafka_bootstrap, stream.transactions, stream.labels, progress=False, topics=topics
        )
    )
    try:
        yield Run(kafka_bootstrap, topics, f"{prefix}aggregate", redis, tmp_path)
    finally:
        redis.stop()


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def kill_midway(run: Run, victim: subprocess.Popen[bytes]) -> float:
    """Kill ``victim`` once 30 % of the stream is committed; return the share committed then."""
    eventually(lambda: run.progress() >= 0.3, "30 % of the stream committed", 180, 0.2)
    kill(victim)
    share = run.progress()
    assert share < 0.95, f"the stream was {share:.0%} done before the kill: not mid-stream"
    return share


def finished(run: Run, seconds: float) -> None:
    eventually(lambda: run.progress() >= 1.0, "the whole stream committed", seconds, 0.5)


async def online_equals_offline(run: Run, stream: Stream, name: str, share: float) -> None:
    report = await compare(run.redis.url, stream.transactions, stream.labels)
    print(
        f"\n{name}: {stream.events:,} events, killed at {share:.0%} committed; "
        f"{report.customers:,} customers and {report.terminals:,} terminals, "
        f"{report.compared_values:,} values compared, {len(report.mismatches)} wrong, "
        f"{len(report.missing)} missing"
    )
    assert report.ok, report.summary()


def test_a_lone_aggregator_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
    run: Run, stream: Stream
) -> None:
    first = run.start_aggregator("first")
    try:
        share = kill_midway(run, first)
    finally:
        stop(first)
    again = run.start_aggregator("again")
    try:
        finished(run, 300)
    finally:
        stop(again)
    asyncio.run(online_equals_offline(run, stream, "one instance", share))


def test_one_of_two_aggregators_killed_mid_stream_the_other_takes_over(
    run: Run, stream: Stream
) -> None:
    survivor = run.start_aggregator("survivor")
    victim = run.start_aggregator("victim")
    try:
        eventually(lambda: run.members() == 2, "both in the group", 60, 0.2)
        share = kill_midway(run, victim)
        started = time.monotonic()
        finished(run, 300)
        print(
            f"\nthe survivor finished the stream {time.monotonic() - started:.0f} s after the kill"
        )
    finally:
        stop(victim)
        stop(survivor)
    asyncio.run(online_equals_offline(run, stream, "two instances", share))
