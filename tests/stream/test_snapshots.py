"""The terminal windows stored with each customer's newest transaction (what ``GET /predict``
reads in one round trip) against the real Redis: counted when the transaction reaches its
terminal, counted again when a late event or label reaches them, never put back by an older
count.
"""

from __future__ import annotations

import asyncio
import random
import zlib

import orjson
import pytest
import redis

from fraudstack.adapters.online_store.codecs import TerminalSnapshot, snapshot_features
from fraudstack.adapters.online_store.layout import (
    TERMINAL_SNAPSHOT_FIELD,
    customer_key,
    terminal_events_key,
    terminal_keys,
)
from fraudstack.adapters.online_store.scripts import SNAPSHOT_WRITE
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.processor import Processor
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
    partition = zlib.crc32(customer.encode()) % 4
    return Record(
        settings.topics.transactions, partition, 0, customer.encode(), orjson.dumps(event)
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


async def _process(settings: AggregateSettings, *batches: list[Record], instances: int = 1) -> None:
    """Apply the batches in order; with several instances, each owns its share of partitions
    (as a consumer group splits them) and takes the labels in turn."""
    link = RedisLink(settings.redis_url, timeout=10.0)
    try:
        processors = [
            Processor(link, settings.aggregate_allowed_lateness_ms, settings.topics)
            for _ in range(instances)
        ]
        for processor in processors:  # as each learns when the consumer group assigns it
            processor.assign(4)
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
    served = snapshot_features(client.hget(customer_key("c-x"), TERMINAL_SNAPSHOT_FIELD), "x")
    assert served is not None and served["terminal_risk_7d"] == 1.0
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
            client.eval(
                SNAPSHOT_WRITE.source, 1, key, txn_id, snapshot.ts_ms, seq, snapshot.encode(), 3_600
            )
        )

    # another instance's recount may come before the owner writes the transaction
    assert store("b", 2, (1, 0, 1, 0, 1, 0)) == 1
    assert 0 < client.ttl(key) <= 3_600  # a key it creates does not outlive the customer's
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
    ("instances", "days"),
    [(1, 21), (2, 21), (1, 60), (2, 60)],
    ids=["one instance", "two instances", "sixty days, pruned", "sixty days, two instances"],
)
async def test_stored_windows_equal_the_history_whatever_the_arrival_order(
    pipeline_settings: AggregateSettings, instances: int, days: int
) -> None:
    """Weeks on four terminals, sent partition after partition in batches: partitions days
    apart, labels early and late, events at equal times and on the windows' edges. Every
    customer's stored terminal windows equal those of its newest transaction computed from all
    the events, also when two instances write the same terminals, and over sixty days, where
    the terminals prune: behind the partition that lags, not behind their own newest event."""
    settings = pipeline_settings
    rng = random.Random(7)
    events, labels = [], []
    history: dict[str, TerminalHistory] = {}
    for n in range(600):
        # whole hours and days, so that many events sit exactly on a window's edge
        ts = T0 + rng.randrange(days * 24) * MS_PER_HOUR + rng.choice((0, 0, 1))
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
    if days < 37:  # labels anywhere in the stream, some long before their event, some far after
        for record in label_records:
            batches.insert(rng.randrange(len(batches) + 1), [record])
    else:  # a labels topic in step with the partition that lags, and far behind the others
        slowest = batches[len(batches) - len(part) // 40 - (1 if len(part) % 40 else 0) :]
        released = batches[: len(batches) - len(slowest)]
        pending = sorted(
            label_records, key=lambda record: orjson.loads(record.value or b"")["reported_at"]
        )
        for batch in slowest:  # a label goes before the batch that takes the partition past it
            last = orjson.loads(batch[-1].value or b"")["ts"]
            while pending and orjson.loads(pending[0].value or b"")["reported_at"] < last:
                released.append([pending.pop(0)])
            released.append(batch)
        batches = released + [[record] for record in pending]
    await _process(settings, *batches, instances=instances)

    newest: dict[str, tuple[int, str, str]] = {}
    for txn_id, ts, customer, terminal in events:
        newest[customer] = max(newest.get(customer, (ts, txn_id, terminal)), (ts, txn_id, terminal))
    client = redis.Redis.from_url(settings.redis_url)
    stale = 0
    for customer, (ts, txn_id, terminal) in newest.items():
        snapshot = _snapshot(client, customer)
        assert snapshot.txn_id == txn_id
        served = snapshot_features(
            client.hget(customer_key(customer), TERMINAL_SNAPSHOT_FIELD), txn_id
        )
        if not snapshot.counts:  # a late label reached windows already pruned: read instead
            assert served is None
            stale += 1
            continue
        assert snapshot.counts == history_counts(history[terminal], ts), customer
        assert served == terminal_features(history[terminal], ts)
    client.close()
    # nothing is pruned in three weeks; over sixty days the prune waits for the partition that
    # lags and the labels in step with it, so every count is taken whole
    assert stale == 0


async def test_a_terminal_that_expired_counts_on_from_above_its_old_counter(
    pipeline_settings: AggregateSettings,
) -> None:
    """The new terminal's counts must win over snapshots taken from the old: the counter of a
    new terminal starts above any old one."""
    settings = pipeline_settings
    client = redis.Redis.from_url(settings.redis_url)
    await _process(settings, [_txn(settings, "a", T0, "c-a", "t-gone")])
    old = _snapshot(client, "c-a").seq
    client.delete(*terminal_keys("t-gone"))  # as their TTL does after 39 quiet days
    await _process(settings, [_txn(settings, "b", T0 + 1, "c-b", "t-gone")])
    assert _snapshot(client, "c-b").seq > old
    client.close()


def _drop_connections(client: redis.Redis, database: int) -> None:
    """Close every connection to ``database`` but ``client``'s, as a restart of Redis closes
    them all (the other tests' clients, on other databases of the shared server, are spared)."""
    own = client.client_id()
    for peer in client.client_list():
        if int(peer["db"]) == database and int(peer["id"]) != own:
            client.client_kill_filter(_id=peer["id"])


@pytest.mark.parametrize("restart", ["between two batches", "between two round trips"])
async def test_windows_counted_after_redis_lost_a_write_are_those_of_what_redis_holds(
    pipeline_settings: AggregateSettings, restart: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarts and has lost a terminal's last write; another instance's write brings the
    terminal's ``_seq`` back to the number it had after the lost write. Nothing this instance
    remembers may pass for the terminal, whether the restart falls between two batches or
    between a batch's customer reads and its terminal writes: the windows stored are those of
    what Redis holds. (The restart is played on the real server: the terminal restored as it
    was before the write, the connections dropped.)"""
    settings = pipeline_settings
    client = redis.Redis.from_url(settings.redis_url)
    database = int(settings.redis_url.rsplit("/", 1)[1])
    links = [RedisLink(settings.redis_url, timeout=10.0) for _ in range(2)]
    first, second = (
        Processor(link, settings.aggregate_allowed_lateness_ms, settings.topics) for link in links
    )
    first.assign(4)
    second.assign(4)
    keys = list(terminal_keys("t"))
    try:
        await first.process([_txn(settings, "a1", T0, "c-1", "t")])
        before = {key: client.dump(key) for key in keys}
        await first.process([_txn(settings, "a2", T0 + MS_PER_HOUR, "c-2", "t")])
        for key, dumped in before.items():
            client.delete(key)
            if dumped is not None:
                client.restore(key, 0, dumped)
        if restart == "between two batches":
            _drop_connections(client, database)
        else:
            hydrate = first._hydrate

            async def hydrate_then_restart(customer_ids: set[str]) -> int:
                low_watermark = await hydrate(customer_ids)
                _drop_connections(client, database)
                # the link sees its connection close before the terminal writes go out (if
                # they went out first, they would fail, and the batch would be retried whole)
                await asyncio.sleep(0.2)
                return low_watermark

            monkeypatch.setattr(first, "_hydrate", hydrate_then_restart)
        # two days behind, so the lost a2 and this b fall in different windows of a3
        await second.process([_txn(settings, "b", T0 - 2 * MS_PER_DAY, "c-3", "t")])
        later = T0 + 8 * MS_PER_DAY
        await first.process([_txn(settings, "a3", later, "c-4", "t")])

        held = TerminalHistory()
        for txn_id, ts in client.zrange(terminal_events_key("t"), 0, -1, withscores=True):
            held.add(txn_id.decode(), int(ts))
        assert held.txn_ids == ["b", "a1", "a3"]
        assert _snapshot(client, "c-4").counts == history_counts(held, later) == (0, 0, 2, 0, 2, 0)
    finally:
        for link in links:
            await link.close()
        client.close()
