"""Offline features equal the online ones read back from the real Redis, bit for bit."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.aggregate.bulk import load_table
from fraudstack.features.definitions import (
    DEFAULT_ALLOWED_LATENESS_MS,
    FEATURE_NAMES,
    MS_PER_DAY,
)
from fraudstack.features.offline import compute_features
from fraudstack.features.online import CustomerHistory, all_features


def _prefixed(table: pa.Table, prefix: str) -> pa.Table:
    # ids of our own, so no other test's keys in the shared Redis are read or overwritten
    for column in ("customer_id", "terminal_id"):
        index = table.column_names.index(column)
        table = table.set_column(
            index, column, pc.binary_join_element_wise(prefix, table.column(column), "")
        )
    return table


def test_offline_features_equal_online_features(
    redis_url: str, simulation: tuple[pa.Table, pa.Table]
) -> None:
    """The online store at a moment C holds what the stream had read by C, pruned to each
    entity's horizon plus the allowed lateness: it can answer for the transactions of the
    last lateness before C. Several such moments are checked, each after loading the
    events (and the labels reported) up to it, as the stream would have."""
    transactions, labels = (_prefixed(table, "equality-") for table in simulation)
    offline = compute_features(transactions, labels)
    ts = transactions.column("ts").to_numpy()
    first_day = int(ts.min()) // MS_PER_DAY
    compared = frauds_seen = histories_seen = 0
    for day in (22, 27, 32, 37):
        moment = (first_day + day) * MS_PER_DAY + 14 * 3_600_000
        load_table(
            redis_url,
            transactions.filter(pc.field("ts") <= moment),
            labels.filter(pc.field("reported_at") <= moment),
        )
        rows = np.flatnonzero((ts <= moment) & (ts > moment - DEFAULT_ALLOWED_LATENESS_MS))
        online = asyncio.run(_read_online(redis_url, transactions.take(rows).to_pylist()))
        for expected, actual in zip(offline.take(rows).to_pylist(), online, strict=True):
            for name in FEATURE_NAMES:
                assert actual[name] == expected[name], (expected["txn_id"], name)
            frauds_seen += actual["terminal_risk_30d"] > 0
            histories_seen += actual["customer_amount_zscore_prev_30d"] not in (-1.0, 0.0)
        compared += len(rows)
    assert compared >= 60
    assert frauds_seen > 0  # the terminal risk windows were really exercised
    # and the amount-vs-history features had histories to compare against
    assert histories_seen > compared // 2


async def _read_online(redis_url: str, rows: list[dict]) -> list[dict[str, float]]:
    store = OnlineStoreReader.from_url(redis_url)
    try:
        results = []
        for row in rows:
            customer, terminal = await store.for_transaction(
                row["customer_id"], row["terminal_id"], row["ts"]
            )
            history = customer.history if customer is not None else CustomerHistory()
            results.append(
                all_features(
                    history, terminal, row["txn_id"], row["ts"], round(row["amount"] * 100)
                )
            )
        return results
    finally:
        await store.close()
