"""The features the service scores equal the offline definition's, bit for bit.

``POST /v1/score`` finishes every window at the transaction's own time with the transaction
included, so what the store kept from the customer's previous transaction (its aggregates, at
its time) must not leak in: the stale case below checks a 1-day count that drops what fell out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pytest
import redis

from fraudstack.adapters.online_store.codecs import (
    TerminalSnapshot,
    pack_customer_features,
    unpack_customer_features,
)
from fraudstack.adapters.online_store.layout import (
    CUSTOMER_FEATURES_FIELD,
    READY_FIELD,
    STORE_KEY,
    TERMINAL_SNAPSHOT_FIELD,
    customer_key,
)
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import StoreNotReady
from fraudstack.events import Transaction
from fraudstack.features.definitions import FEATURE_NAMES, MS_PER_DAY
from fraudstack.features.offline import compute_features
from fraudstack.serve.lookup import FeatureLookup


@pytest.fixture
async def lookup(store: PrivateRedis) -> AsyncIterator[FeatureLookup]:
    link = RedisLink(store.url)
    yield FeatureLookup(link)
    await link.close()


def offline_row(
    transactions: pa.Table, extra: list[dict[str, Any]], txn_id: str
) -> dict[str, float]:
    """The offline features of ``txn_id`` with ``extra`` transactions added to the table."""
    rows = pa.Table.from_pylist(
        [{**row, "is_fraud": False, "fraud_scenario": 0} for row in extra],
        schema=transactions.schema,
    )
    table = pa.concat_tables([transactions, rows])
    features = compute_features(table)
    index = features["txn_id"].to_pylist().index(txn_id)
    return {name: features[name][index].as_py() for name in FEATURE_NAMES}


def busiest_customer(transactions: pa.Table) -> dict[str, Any]:
    """The newest transaction of a customer whose last day holds several transactions."""
    rows = sorted(
        transactions.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"]).to_pylist(),
        key=lambda row: (row["ts"], row["txn_id"]),
    )
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_customer.setdefault(row["customer_id"], []).append(row)
    for history in by_customer.values():
        newest = history[-1]
        same_day = [row for row in history if row["ts"] > newest["ts"] - MS_PER_DAY]
        if len(same_day) >= 3:
            return newest
    raise AssertionError("no customer with three transactions in a day")


async def test_a_new_transaction_gets_the_offline_features_at_its_own_time(
    lookup: FeatureLookup, transactions: pa.Table
) -> None:
    newest = busiest_customer(transactions)
    for minutes in (1, 45, 300):
        event = {
            "txn_id": f"probe-{minutes}",
            "ts": newest["ts"] + minutes * 60_000,
            "customer_id": newest["customer_id"],
            "terminal_id": newest["terminal_id"],
            "amount": 42.5,
        }
        scored = await lookup.transaction(Transaction(**event))
        assert scored.features == offline_row(transactions, [event], event["txn_id"])


async def test_stale_aggregates_of_the_previous_transaction_are_not_used(
    lookup: FeatureLookup, transactions: pa.Table, store: PrivateRedis
) -> None:
    newest = busiest_customer(transactions)
    packed = redis.Redis.from_url(store.url).hget(
        customer_key(newest["customer_id"]), CUSTOMER_FEATURES_FIELD
    )
    stored = unpack_customer_features(packed, newest["txn_id"])
    assert stored is not None and stored["customer_nb_tx_1d"] >= 3  # the last write left them
    event = {
        "txn_id": "probe-late",
        "ts": newest["ts"] + 36 * 3_600_000,
        "customer_id": newest["customer_id"],
        "terminal_id": newest["terminal_id"],
        "amount": 10.0,
    }
    scored = await lookup.transaction(Transaction(**event))
    assert scored.features["customer_nb_tx_1d"] == 1.0  # only itself: the rest fell out
    assert scored.features["customer_avg_amount_1d"] == 10.0
    assert scored.features == offline_row(transactions, [event], event["txn_id"])


async def test_a_transaction_already_in_the_store_counts_once(
    lookup: FeatureLookup, transactions: pa.Table, offline_features: pa.Table
) -> None:
    newest = busiest_customer(transactions)
    scored = await lookup.transaction(Transaction(**newest))
    index = offline_features["txn_id"].to_pylist().index(newest["txn_id"])
    assert scored.features == {
        name: offline_features[name][index].as_py() for name in FEATURE_NAMES
    }


async def test_predict_reads_the_newest_transaction_with_its_offline_features(
    lookup: FeatureLookup, transactions: pa.Table, offline_features: pa.Table
) -> None:
    index = {txn: i for i, txn in enumerate(offline_features["txn_id"].to_pylist())}
    newest = busiest_customer(transactions)
    last, scored = await lookup.newest(newest["customer_id"])
    assert last.txn_id == newest["txn_id"]
    row = index[newest["txn_id"]]
    assert scored.features == {name: offline_features[name][row].as_py() for name in FEATURE_NAMES}
    assert scored.event_ts_ms == newest["ts"]


@pytest.mark.parametrize("stored", ["missing", "another transaction's"])
async def test_predict_falls_back_to_the_events_when_stored_features_are_not_its_own(
    lookup: FeatureLookup,
    transactions: pa.Table,
    offline_features: pa.Table,
    store: PrivateRedis,
    stored: str,
) -> None:
    """A hash written before the packed features, or whose ``_last_txn`` a writer of that
    layout moved on without them, is read from its events, not answered with stale values."""
    newest = busiest_customer(transactions)
    client = redis.Redis.from_url(store.url)
    key = customer_key(newest["customer_id"])
    saved = client.hget(key, CUSTOMER_FEATURES_FIELD)
    assert saved is not None
    if stored == "missing":
        client.hdel(key, CUSTOMER_FEATURES_FIELD)
    else:
        row = offline_features["txn_id"].to_pylist().index(newest["txn_id"])
        older = {name: offline_features[name][row].as_py() for name in FEATURE_NAMES}
        older["customer_nb_tx_1d"] += 1  # what a previous transaction's would differ in
        client.hset(key, CUSTOMER_FEATURES_FIELD, pack_customer_features(older, "previous"))
    try:
        _, scored = await lookup.newest(newest["customer_id"])
    finally:
        client.hset(key, CUSTOMER_FEATURES_FIELD, saved)
    row = offline_features["txn_id"].to_pylist().index(newest["txn_id"])
    assert scored.features == {name: offline_features[name][row].as_py() for name in FEATURE_NAMES}


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(stat["calls"]) for name, stat in stats.items()}


async def test_predict_reads_one_hash_in_one_round_trip(
    lookup: FeatureLookup, transactions: pa.Table, offline_features: pa.Table, store: PrivateRedis
) -> None:
    """The terminal windows stored with the newest transaction are its own: no terminal read,
    and the store's ready mark read in the same round trip."""
    newest = busiest_customer(transactions)
    row = offline_features["txn_id"].to_pylist().index(newest["txn_id"])
    assert offline_features["terminal_nb_tx_30d"][row].as_py() > 0  # a read would show
    client = redis.Redis.from_url(store.url)
    await lookup.link.ping()  # connected before counting
    client.config_resetstat()
    _, scored = await lookup.newest(newest["customer_id"])
    calls = _calls(client)
    client.close()
    for own in ("config|resetstat", "info"):  # this test's
        calls.pop(own, None)
    assert calls == {"hmget": 1, "hget": 1}
    assert scored.features == {name: offline_features[name][row].as_py() for name in FEATURE_NAMES}


async def test_predict_reads_the_terminal_when_the_stored_windows_are_of_another_transaction(
    lookup: FeatureLookup, transactions: pa.Table, offline_features: pa.Table, store: PrivateRedis
) -> None:
    """Between the aggregator's two commands the hash may name a new transaction and still hold
    the windows of the one before: those are not used."""
    newest = busiest_customer(transactions)
    client = redis.Redis.from_url(store.url)
    key = customer_key(newest["customer_id"])
    saved = client.hget(key, TERMINAL_SNAPSHOT_FIELD)
    assert saved is not None
    stale = TerminalSnapshot("an-earlier-txn", newest["ts"] - 1, 0, (9, 9, 9, 9, 9, 9))
    client.hset(key, TERMINAL_SNAPSHOT_FIELD, stale.encode())
    try:
        client.config_resetstat()
        _, scored = await lookup.newest(newest["customer_id"])
        calls = _calls(client)
    finally:
        client.hset(key, TERMINAL_SNAPSHOT_FIELD, saved)
        client.close()
    # the terminal's windows counted where they are, six ZCOUNT, not the terminal read whole
    assert calls["hmget"] == 1 and calls["zcount"] == 6 and "hgetall" not in calls
    row = offline_features["txn_id"].to_pylist().index(newest["txn_id"])
    assert scored.features == {name: offline_features[name][row].as_py() for name in FEATURE_NAMES}


async def test_a_store_without_its_ready_mark_answers_not_ready_not_features(
    lookup: FeatureLookup, transactions: pa.Table, store: PrivateRedis
) -> None:
    """A store that came back empty and is being rebuilt holds some customers already: their
    features would be wrong (windows short), so both reads refuse until the store is ready."""
    newest = busiest_customer(transactions)
    client = redis.Redis.from_url(store.url)
    assert client.hdel(STORE_KEY, READY_FIELD) == 1
    txn = Transaction(
        txn_id="not-ready-1",
        ts=newest["ts"] + 1,
        customer_id=newest["customer_id"],
        terminal_id=newest["terminal_id"],
        amount=1.0,
    )
    try:
        with pytest.raises(StoreNotReady, match="being rebuilt"):
            await lookup.newest(newest["customer_id"])
        with pytest.raises(StoreNotReady, match="being rebuilt"):
            await lookup.transaction(txn)
    finally:
        client.hset(STORE_KEY, READY_FIELD, 1)
        client.close()
    last, _ = await lookup.newest(newest["customer_id"])
    assert last.txn_id == newest["txn_id"]
