"""Aggregation as it runs in production, for the fault tests: a stream in Kafka under topics of
its own, ``fraudstack aggregate`` processes in one consumer group, a private Redis; and how far
the group has got, read from the broker. A plugin (``tests/conftest.py``): the fixture
``aggregation_run`` gives each test a :class:`Run` of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from fraudstack.adapters.kafka import ensure_topics
from fraudstack.consistency import Report, compare
from fraudstack.devstack.process import free_port
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.ingest.replay import produce_table
from fraudstack.settings import Topics
from support.waiting import eventually


@dataclass(frozen=True)
class Stream:
    transactions: pa.Table
    labels: pa.Table

    @property
    def events(self) -> int:
        return self.transactions.num_rows + self.labels.num_rows


@dataclass
class Run:
    """One stream in Kafka under topics of its own, one consumer group, one private Redis."""

    bootstrap: str
    topics: Topics
    group: str
    redis: PrivateRedis
    folder: Path
    #: Events the topics will hold once the stream is produced (progress is a share of it).
    expected: int = 0

    @classmethod
    def create(cls, bootstrap: str, folder: Path, prefix: str) -> Run:
        """Empty topics under ``prefix``, and a private Redis, empty."""
        topics = Topics.with_prefix(prefix)
        redis = PrivateRedis(folder / "redis").start()
        asyncio.run(ensure_topics(bootstrap, topics))
        return cls(bootstrap, topics, f"{prefix}aggregate", redis, folder)

    def produce(self, stream: Stream) -> None:
        """The stream into the topics, in event-time order."""
        self.expected = stream.events
        asyncio.run(
            produce_table(
                self.bootstrap,
                stream.transactions,
                stream.labels,
                progress=False,
                topics=self.topics,
            )
        )

    def start_aggregator(self, name: str, metrics_port: int = 0) -> subprocess.Popen[bytes]:
        """``fraudstack aggregate`` in a session of its own (so a signal reaches all of it)."""
        env = {
            **os.environ,
            "FRAUDSTACK_KAFKA_BOOTSTRAP": self.bootstrap,
            "FRAUDSTACK_REDIS_URL": self.redis.url,
            "FRAUDSTACK_TOPIC_PREFIX": self.topics.transactions.removesuffix("transactions"),
        }
        argv = [sys.executable, "-m", "fraudstack.cli", "aggregate"]
        argv += ["--metrics-port", str(metrics_port)]
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
        whole = max(end, self.expected)
        return done / whole if whole else 0.0

    def members(self) -> int:
        try:
            return asyncio.run(self.stable_members())
        except KafkaError:
            return 0


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


def online_equals_offline(run: Run, stream: Stream, name: str, share: float) -> Report:
    """Compare every customer and terminal with the offline computation; print the figures."""
    report = asyncio.run(compare(run.redis.url, stream.transactions, stream.labels))
    print(
        f"\n{name}: {stream.events:,} events, disturbed at {share:.0%} committed; "
        f"{report.customers:,} customers and {report.terminals:,} terminals, "
        f"{report.compared_values:,} values compared, {len(report.mismatches)} wrong, "
        f"{len(report.missing)} missing"
    )
    assert report.ok, report.summary()
    return report


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a process's Prometheus port."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


@pytest.fixture
def aggregation_run(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Run]:
    """Empty topics of this test's own on the session's broker, and a private Redis."""
    run = Run.create(kafka_bootstrap, tmp_path, f"faults-{uuid.uuid4().hex[:6]}.")
    try:
        yield run
    finally:
        run.redis.stop()


def metrics_port() -> int:
    return free_port()
