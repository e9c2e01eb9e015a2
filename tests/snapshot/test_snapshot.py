"""``fraudstack snapshot`` against the real Kafka: every event exactly once in Parquet.

Each test uses topics and a consumer group of its own, so it neither sees nor disturbs the
events of other tests on the shared broker.
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
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fraudstack.adapters.offline_store import (
    EVENT_SCHEMA,
    EVENTS,
    LABELS,
    OfflineStore,
    OffsetRange,
)
from fraudstack.snapshot.consumer import SnapshotConfig, SnapshotConsumer
from fraudstack.snapshot.records import rows_to_table, transaction_row
from support.waiting import eventually, eventually_async, never, never_async

DAY_MS = 86_400_000
START_MS = 1_533_081_600_000  # 2018-08-01T00:00:00Z


def transaction(index: int, day_span: int = 3, count: int = 1) -> dict[str, object]:
    # spread over a few days so that a flush writes several date partitions
    ts = START_MS + (index * day_span * DAY_MS) // max(count, 1) + index % 1000
    return {
        "txn_id": f"t{index}",
        "ts": ts,
        "customer_id": f"c{index % 37}",
        "terminal_id": f"m{index % 53}",
        "amount": round(10 + (index % 997) / 10, 2),
    }


def label(event: dict[str, object]) -> dict[str, object]:
    return {
        "txn_id": event["txn_id"],
        "customer_id": event["customer_id"],
        "terminal_id": event["terminal_id"],
        "ts": event["ts"],
        "is_fraud": True,
        "reported_at": int(event["ts"]) + DAY_MS,  # type: ignore[call-overload]
    }


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes], key_of: str = "") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for value in values:
            key = None
            if key_of:
                try:
                    key = str(orjson.loads(value)[key_of]).encode()
                except (orjson.JSONDecodeError, KeyError):
                    key = b"bad"
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def start_snapshot(
    bootstrap: str, store: Path, names: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "fraudstack.cli",
        "snapshot",
        "--store",
        str(store),
        "--bootstrap",
        bootstrap,
        "--group",
        names["group"],
        "--transactions-topic",
        names["transactions"],
        "--labels-topic",
        names["labels"],
        "--dead-letter-topic",
        names["dlq"],
        "--flush-rows",
        "150",
        "--flush-seconds",
        "0.3",
        "--metrics-port",
        "0",
    ]
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stored_rows(store: OfflineStore, dataset: str) -> int:
    return store.read(dataset, columns=["txn_id"]).num_rows if store.days(dataset) else 0


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    yield {
        "transactions": f"transactions-{suffix}",
        "labels": f"labels-{suffix}",
        "dlq": f"dlq-{suffix}",
        "group": f"snapshot-{suffix}",
    }


def test_sigkill_mid_stream_then_restart_gives_every_event_exactly_once(
    kafka_bootstrap: str, tmp_path: Path, names: dict[str, str]
) -> None:
    total = 3_000
    events = [transaction(index, count=total) for index in range(total)]
    labels = [label(event) for event in events[::25]]
    bad = [b"not json at all", orjson.dumps({"txn_id": "x1", "ts": START_MS}), b""]
    encoded = [orjson.dumps(event) for event in events]
    asyncio.run(
        create_topics(
            kafka_bootstrap, [names["transactions"], names["labels"], names["dlq"]], partitions=3
        )
    )
    asyncio.run(
        produce(kafka_bootstrap, names["transactions"], encoded[:1_000] + bad, "customer_id")
    )
    asyncio.run(
        produce(kafka_bootstrap, names["labels"], [orjson.dumps(x) for x in labels], "terminal_id")
    )

    store_root = tmp_path / "offline"
    store = OfflineStore(str(store_root))
    log = tmp_path / "snapshot.log"
    process = start_snapshot(kafka_bootstrap, store_root, names, log)
    try:
        eventually(lambda: stored_rows(store, EVENTS) >= 300, "the first files", timeout=60)
        # keep producing while the process is killed: it dies mid-stream
        for chunk in range(1_000, total, 250):
            asyncio.run(
                produce(
                    kafka_bootstrap,
                    names["transactions"],
                    encoded[chunk : chunk + 250],
                    "customer_id",
                )
            )
            if chunk == 1_500:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
        written_before_restart = stored_rows(store, EVENTS)
        assert 300 <= written_before_restart < total
        process = start_snapshot(kafka_bootstrap, store_root, names, log)
        eventually(
            lambda: (
                stored_rows(store, EVENTS) >= total and stored_rows(store, LABELS) >= len(labels)
            ),
            "every event in Parquet",
            timeout=90,
        )
        # a duplicate, if any, lands within a few flushes (0.3 s each): watch for ten of them
        never(
            lambda: stored_rows(store, EVENTS) > total or stored_rows(store, LABELS) > len(labels),
            "a duplicate row in Parquet",
            during=3.0,
            interval=0.3,
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3_000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    stored = store.read(EVENTS)
    txn_ids = stored.column("txn_id").to_pylist()
    assert len(txn_ids) == total, f"{len(txn_ids) - len(set(txn_ids))} duplicate(s)"
    assert set(txn_ids) == {event["txn_id"] for event in events}
    first = stored.filter(pc.equal(stored["txn_id"], "t0")).to_pylist()[0]
    assert {key: first[key] for key in events[0]} == events[0]
    stored_labels = store.read(LABELS).column("txn_id").to_pylist()
    assert sorted(stored_labels) == sorted(str(x["txn_id"]) for x in labels)
    # partitioned by date, named by offsets
    assert len(store.days(EVENTS)) >= 3
    assert all(OffsetRange.parse(Path(path).name) for path in store.files(EVENTS))

    # the dead-letter topic is at least once (a record sent before the kill, not yet committed,
    # is sent again after the restart); its source headers identify the duplicates
    dead = asyncio.run(read_topic(kafka_bootstrap, names["dlq"], len(bad)))
    distinct = {(h["source_partition"], h["source_offset"]): value for value, h in dead}
    assert sorted(distinct.values()) == sorted(bad)
    for _, headers in dead:
        assert headers["reason"] and headers["source_topic"] == names["transactions"].encode()


async def read_topic(
    bootstrap: str, topic: str, count: int
) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        deadline = time.monotonic() + 20
        quiet_since = time.monotonic()
        # at least `count` records, then until nothing came for a second
        while time.monotonic() < deadline and (
            len(records) < count or time.monotonic() - quiet_since < 1.0
        ):
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records += [(record.value or b"", dict(record.headers)) for record in batch]
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


async def test_a_range_half_written_before_a_crash_is_completed_not_duplicated(
    kafka_bootstrap: str, tmp_path: Path, names: dict[str, str]
) -> None:
    """The crash window between writing a flush's files and committing, made deterministic:
    the store holds the first date's file of range 0-39 and nothing was committed."""
    count = 50
    events = [transaction(index, day_span=2, count=count) for index in range(count)]
    encoded = [orjson.dumps(event) for event in events]
    await create_topics(kafka_bootstrap, [names["transactions"], names["labels"]], partitions=1)
    await produce(kafka_bootstrap, names["transactions"], encoded)

    store = OfflineStore(str(tmp_path / "offline"))
    first_day = [
        row
        for row in (transaction_row(v, 0, i) for i, v in enumerate(encoded[:40]))
        if row[1] < START_MS + DAY_MS
    ]
    crashed = OffsetRange(names["transactions"], 0, 0, 39)
    store.write_partitioned(EVENTS, rows_to_table(first_day, EVENT_SCHEMA), crashed)
    assert len(store.files(EVENTS)) == 1

    config = SnapshotConfig(
        bootstrap=kafka_bootstrap,
        store_uri=store.uri,
        group_id=names["group"],
        transactions_topic=names["transactions"],
        labels_topic=names["labels"],
        dead_letter_topic=names["dlq"],
        flush_rows=15,
        flush_seconds=0.2,
    )
    snapshot = SnapshotConsumer(config)
    task = asyncio.create_task(snapshot.run())
    await eventually_async(lambda: stored_rows(store, EVENTS) >= count, "every event", timeout=60)
    # a duplicate, if any, lands within a few flushes (0.2 s each): watch for five of them
    await never_async(
        lambda: stored_rows(store, EVENTS) > count, "a duplicate row", during=1.0, interval=0.2
    )
    snapshot.stop()
    await asyncio.wait_for(task, 30)

    txn_ids = store.read(EVENTS).column("txn_id").to_pylist()
    assert sorted(txn_ids) == sorted(str(event["txn_id"]) for event in events)
    ranges = {OffsetRange.parse(Path(path).name) for path in store.files(EVENTS)}
    # the crashed range was reproduced to the same boundary despite flush_rows=15
    assert crashed in ranges
    assert all(item is not None and (item.first >= 40 or item == crashed) for item in ranges)
    assert snapshot.metrics.files_skipped.labels(EVENTS)._value.get() == 1


def test_snapshot_help_runs_without_kafka() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fraudstack.cli", "snapshot", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 0
    assert "--flush-rows" in result.stdout
