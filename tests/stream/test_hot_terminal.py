"""One merchant's terminal with 100,000 events, streamed through the aggregator's processor
into the real Redis, equals the offline computation: every customer's newest transaction (as
``GET /predict`` reads it and as ``POST /v1/score`` reads it), the terminal's newest, and every
transaction of the last hour the store can answer for."""

from __future__ import annotations

import random
import zlib

import orjson
import pyarrow as pa

from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.processor import Processor
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.consistency import compare
from fraudstack.features.definitions import (
    DEFAULT_ALLOWED_LATENESS_MS,
    FEATURE_NAMES,
    MS_PER_DAY,
)
from fraudstack.features.offline import compute_features
from fraudstack.features.online import CustomerHistory, all_features

from .test_processor import Record

T0 = 1_522_540_800_000
EVENTS = 100_000
DAYS = 45  # past the 37 days a terminal keeps: the prune runs too
CUSTOMERS = 3_000
PARTITIONS = 4


def _hot_terminal() -> tuple[pa.Table, pa.Table]:
    """The events (a few at equal milliseconds) and the chargebacks, 2 % of them, reported
    within the 7-day delay or just after it (those must not count)."""
    rng = random.Random(20)
    rows, labels = [], []
    for n in range(EVENTS):
        ts = T0 + rng.randrange(DAYS * MS_PER_DAY // 1_000) * 1_000
        txn_id = f"hot-{n:06d}"
        rows.append(
            {
                "txn_id": txn_id,
                "ts": ts,
                "customer_id": f"hc-{rng.randrange(CUSTOMERS)}",
                "terminal_id": "hot-terminal",
                "amount": rng.randrange(1, 50_000) / 100,
            }
        )
        if rng.random() < 0.02:
            reported = ts + rng.choice((MS_PER_DAY, 3 * MS_PER_DAY, 7 * MS_PER_DAY + 1))
            labels.append(
                {
                    "txn_id": txn_id,
                    "customer_id": rows[-1]["customer_id"],
                    "terminal_id": "hot-terminal",
                    "ts": ts,
                    "is_fraud": True,
                    "reported_at": reported,
                }
            )
    return pa.Table.from_pylist(rows), pa.Table.from_pylist(labels)


def _records(settings: AggregateSettings, table: pa.Table, labels: pa.Table) -> list[Record]:
    """The stream in event time: each transaction at its time, each label when reported."""
    timed: list[tuple[int, Record]] = []
    for row in table.to_pylist():
        partition = zlib.crc32(row["customer_id"].encode()) % PARTITIONS
        key = row["customer_id"].encode()
        topic = settings.topics.transactions
        timed.append((row["ts"], Record(topic, partition, 0, key, orjson.dumps(row))))
    for label in labels.to_pylist():
        record = Record(settings.topics.labels, 0, 0, b"hot", orjson.dumps(label))
        timed.append((label["reported_at"], record))
    timed.sort(key=lambda pair: pair[0])
    return [record for _, record in timed]


async def test_a_terminal_with_100k_events_equals_offline(
    pipeline_settings: AggregateSettings,
) -> None:
    settings = pipeline_settings
    transactions, labels = _hot_terminal()
    records = _records(settings, transactions, labels)
    link = RedisLink(settings.redis_url, timeout=30.0)
    try:
        processor = Processor(link, settings.aggregate_allowed_lateness_ms, settings.topics)
        processor.assign(PARTITIONS)
        applied = frauds = 0
        for start in range(0, len(records), 2_000):
            result = await processor.process(records[start : start + 2_000])
            applied += result.applied
            frauds += result.labels
            assert not result.dead_letters or all(
                "after the 7-day" in reason for _, reason in result.dead_letters
            )
        assert applied == EVENTS and frauds > 1_000

        # every customer's newest transaction, as both endpoints read it, and the terminal's
        report = await compare(settings.redis_url, transactions, labels)
        assert report.ok, report.summary()
        assert report.customers == CUSTOMERS and report.terminals == 1

        # every transaction of the last allowed lateness, as POST /v1/score reads it
        offline = compute_features(transactions, labels).to_pylist()
        newest = max(transactions["ts"].to_pylist())
        store = OnlineStoreReader(link)
        compared, busiest = 0, {"terminal_nb_tx_30d": 0.0, "terminal_risk_30d": 0.0}
        for row, expected in zip(transactions.to_pylist(), offline, strict=True):
            if row["ts"] <= newest - DEFAULT_ALLOWED_LATENESS_MS:
                continue
            customer, counts = await store.for_transaction(
                row["customer_id"], row["terminal_id"], row["ts"]
            )
            history = customer.history if customer is not None else CustomerHistory()
            cents = round(row["amount"] * 100)
            online = all_features(history, counts, row["txn_id"], row["ts"], cents)
            assert {name: online[name] for name in FEATURE_NAMES} == {
                name: expected[name] for name in FEATURE_NAMES
            }, row["txn_id"]
            compared += 1
            busiest = max(busiest, expected, key=lambda features: features["terminal_nb_tx_30d"])
        assert compared > 50
        # the windows really are a busy terminal's: 30 days of 2,200 a day, frauds in them
        assert busiest["terminal_nb_tx_30d"] > 50_000 and busiest["terminal_risk_30d"] > 0
    finally:
        await link.close()
