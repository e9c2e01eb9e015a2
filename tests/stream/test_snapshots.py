"""The terminal windows stored with each customer's newest transaction (what ``GET /predict``
reads in one round trip) against the real Redis: counted inside Redis when the transaction is
added, counted again when a late event or label reaches them, never put back by an older count.
"""

from __future__ import annotations

import random

import orjson
import pytest
import redis

from fraudstack.adapters.online_store import (
    TERMINAL_SNAPSHOT_FIELD,
    TerminalSnapshot,
    customer_key,
    customer_record,
    terminal_key,
)
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.processor import _SNAPSHOT_SCRIPT, Processor
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.features.definitions import MS_PER_DAY, MS_PER_HOUR, label_counts
from fraudstack.features.online import TerminalHistory, history_counts, terminal_features

from .test_processor import Record

T0 = 1_522_540_800_000


def _txn(settings: AggregateSettings, txn_id: str, ts: int, customer: str, terminal: str) -> Record:
    event = {
        "txn_id": txn_id,
        "ts": ts,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": 1.0,
    }
    # a partition per customer: each customer's events in order, the partitions apart
    return Record(
        settings.topics.transactions, hash(customer) % 4, 0, customer.encode(), orjson.dumps(event)
    )


def _label(
    settings: AggregateSettings, txn_id: str, ts: int, terminal: str, reported: int
) -> Record:
    label = {
        "txn_id": txn_id,
        "ts": ts,
        "customer_id": "whoever",
        "terminal_id": terminal,
        "is_fraud": True,
        "reported_at": reported,
    }
    return Record(settings.topics.labels, 0, 0, b"whoever", orjson.dumps(label))


def _snapshot(client: redis.Redis, customer: str) -> TerminalSnapshot:
    raw = client.hget(customer_key(customer), TERMINAL_SNAPSHOT_FIELD)
    assert raw is not None, f"no snapshot for {customer}"
    return TerminalSnapshot.decode(raw)


async def _process(
    settings: AggregateSettings, *batches: list[Record], instances: int = 1, copies: int = 100_000
) -> None:
    """Apply the batches in order; with several instances, each owns its share of partitions
    (as a consumer group splits them) and takes the labels in turn."""
    link = RedisLink(settings.redis_url, timeout=10.0)
    try:
        processors = [
            Processor(link, settings.aggregate_allowed_lateness_ms, settings.topics, copies)
            for _ in range(instances)
        ]
        for number, batch in enumerate(batches):
            first = batch[0]
            owner = first.partition if first.topic == settings.topics.transactions else number
            await processors[owner % instances].process(batch)
    finally:
        await link.close()


async def test_a_late_event_and_a_late_label_count_again_in_the_stored_windows(
    pipeline_settings: AggregateSettings,
) -> None:
    settings = pipeline_settings
    newest = T0 + 10 * MS_PER_DAY
    client = redis.Redis.from_url(settings.redis_url)
    await _process(settings, [_txn(settings, "x", newest, "c-x", "t")])
    assert _snapshot(client, "c-x").counts == (0, 0, 0, 0, 0, 0)

    # another partition lags 8 days: its event lands in x's 7- and 30-day windows
    await _process(settings, [_txn(settings, "y", newest - 8 * MS_PER_DAY, "c-y", "t")])
    assert _snapshot(client, "c-x").counts == (0, 0, 1, 0, 1, 0)

    # the labels topic lags: y's chargeback, reported in time, arrives after x
    await _process(
        settings, [_label(settings, "y", newest - 8 * MS_PER_DAY, "t", newest - MS_PER_DAY)]
    )
    snapshot = _snapshot(client, "c-x")
    assert snapshot.counts == (0, 0, 1, 1, 1, 1)
    served = customer_record(client.hgetall(customer_key("c-x")))
    assert served is not None and served.served is not None
    assert served.served["terminal_risk_7d"] == 1.0
    client.close()


async def test_an_older_count_or_a_superseded_transaction_never_replaces_the_snapshot(
    pipeline_settings: AggregateSettings,
) -> None:
    client = redis.Redis.from_url(pipeline_settings.redis_url)
    key = customer_key("c-1")
    times = {"a": 5, "b": 5, "c": 9, "d": 7}

    def store(txn_id: str, seq: int, counts: tuple[int, ...]) -> int:
        snapshot = TerminalSnapshot(txn_id, times[txn_id], seq, counts)
        return int(
            client.eval(_SNAPSHOT_SCRIPT, 1, key, txn_id, snapshot.ts_ms, seq, snapshot.encode())
        )

    # another instance's recount may come before the owner writes the transaction
    assert store("b", 2, (1, 0, 1, 0, 1, 0)) == 1
    client.hset(key, mapping={"_last_txn": "b:5:100:t-1"})
    assert store("b", 4, (1, 0, 2, 0, 3, 0)) == 1
    assert store("b", 3, (9, 9, 9, 9, 9, 9)) == 0  # counted before: refused
    assert store("b", 4, (9, 9, 9, 9, 9, 9)) == 0  # the same count again: refused
    assert store("a", 9, (9, 9, 9, 9, 9, 9)) == 0  # older than the newest (same ms): refused
    assert store("b", 6, (1, 1, 2, 1, 3, 1)) == 1
    assert _snapshot(client, "c-1") == TerminalSnapshot("b", 5, 6, (1, 1, 2, 1, 3, 1))
    # a newer transaction, not yet written by its owner: its snapshot comes first
    assert store("c", 1, (0, 0, 0, 0, 0, 0)) == 1
    assert store("d", 8, (9, 9, 9, 9, 9, 9)) == 0  # older than the stored snapshot's
    assert store("b", 7, (9, 9, 9, 9, 9, 9)) == 0
    assert _snapshot(client, "c-1").txn_id == "c"
    client.close()


@pytest.mark.parametrize(
    ("instances", "copies"),
    [(1, 100_000), (2, 100_000), (1, 1)],
    ids=["one instance", "two instances", "one terminal copy kept"],
)
async def test_stored_windows_equal_the_history_whatever_the_arrival_order(
    pipeline_settings: AggregateSettings, instances: int, copies: int
) -> None:
    """Three weeks on four terminals, sent in shuffled batches: partitions days apart, labels
    early and late, events at equal times and on the windows' edges. Every customer's stored
    terminal windows equal those of its newest transaction computed from all the events, also
    when two instances write the same terminals (each copy goes stale in turn) and when an
    instance keeps a copy of one terminal only."""
    settings = pipeline_settings
    rng = random.Random(7)
    events, labels = [], []
    history: dict[str, TerminalHistory] = {}
    for n in range(600):
        # whole hours and days, so that many events sit exactly on a window's edge
        ts = T0 + rng.randrange(21 * 24) * MS_PER_HOUR + rng.choice((0, 0, 1))
        customer, terminal = f"c-{rng.randrange(60)}", f"t-{rng.randrange(4)}"
        events.append((f"{n:04d}", ts, customer, terminal))
        history.setdefault(terminal, TerminalHistory()).add(f"{n:04d}", ts, customer)
        if rng.random() < 0.15:
            reported = ts + rng.choice((MS_PER_DAY, 7 * MS_PER_DAY, 7 * MS_PER_DAY + 1))
            if label_counts(True, ts, reported):
                labels.append((f"{n:04d}", ts, terminal, reported))
                history[terminal].add_label(f"{n:04d}", True, reported, ts)
    records = [_txn(settings, *event) for event in events]
    # each customer's own events in time order (one partition each), the customers mixed
    records.sort(key=lambda record: orjson.loads(record.value or b"")["ts"])
    by_partition: dict[int, list[Record]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    batches: list[list[Record]] = []
    for partition in rng.sample(sorted(by_partition), len(by_partition)):
        part = by_partition[partition]
        batches += [part[start : start + 40] for start in range(0, len(part), 40)]
    label_records = [_label(settings, *label) for label in labels]
    for record in label_records:  # labels anywhere in the stream, some long before their event
        batches.insert(rng.randrange(len(batches) + 1), [record])
    link_settings = settings.model_copy(update={"aggregate_allowed_lateness_ms": 30 * MS_PER_DAY})
    await _process(link_settings, *batches, instances=instances, copies=copies)

    newest: dict[str, tuple[int, str, str]] = {}
    for txn_id, ts, customer, terminal in events:
        newest[customer] = max(newest.get(customer, (ts, txn_id, terminal)), (ts, txn_id, terminal))
    client = redis.Redis.from_url(settings.redis_url)
    for customer, (ts, txn_id, terminal) in newest.items():
        snapshot = _snapshot(client, customer)
        assert snapshot.txn_id == txn_id
        assert snapshot.counts == history_counts(history[terminal], ts), customer
        record = customer_record(client.hgetall(customer_key(customer)))
        assert record is not None and record.served is not None
        expected = terminal_features(history[terminal], ts)
        assert {name: record.served[name] for name in expected} == expected
    client.close()


async def test_a_terminal_that_expired_counts_on_from_above_its_old_counter(
    pipeline_settings: AggregateSettings,
) -> None:
    """A copy of the old hash must never pass for the new one, and the new hash's counts must
    win over snapshots taken from the old: the counter of a new hash starts above any old one."""
    settings = pipeline_settings
    client = redis.Redis.from_url(settings.redis_url)
    await _process(settings, [_txn(settings, "a", T0, "c-a", "t-gone")])
    old = _snapshot(client, "c-a").seq
    client.delete(terminal_key("t-gone"))  # as its TTL does after 39 quiet days
    await _process(settings, [_txn(settings, "b", T0 + 1, "c-b", "t-gone")])
    assert _snapshot(client, "c-b").seq > old
    client.close()
