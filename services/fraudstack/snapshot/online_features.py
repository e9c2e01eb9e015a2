"""Periodic snapshots of the online feature values into ``features/`` of the offline store.

For every customer in the online store, the snapshot holds the features of its newest
transaction as the inference service would compute them from Redis at that moment (customer
windows from the customer's events, terminal windows counted on the terminal), read through the
store's reader. Comparing a snapshot
with the offline features of the same transactions is the consistency check; keeping them over
time is the feature log a model can be audited against.

One file per snapshot: ``features/date=YYYY-MM-DD/snapshot-<epoch ms>.parquet``, columns
``snapshot_at``, ``customer_id``, ``terminal_id``, ``txn_id``, ``ts``, then every feature.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pyarrow as pa

from fraudstack.adapters.offline_store import FEATURES, OfflineStore, day_of
from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.errors import StoreError
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.features.online import all_features

log = logging.getLogger(__name__)

_BATCH = 500


async def snapshot_online_features(
    redis_url: str, store: OfflineStore, now_ms: int | None = None
) -> tuple[str | None, int]:
    """Write one snapshot; return its path (None when the store is empty) and row count."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    online = OnlineStoreReader.from_url(redis_url)
    rows: list[tuple[str, str, str, int, list[float]]] = []
    try:
        async for customer_ids in online.customer_ids(_BATCH):
            rows += await _features_of(online, customer_ids)
    finally:
        await online.close()
    if not rows:
        return None, 0
    table = _table(rows, now_ms)
    path = store.file_path(FEATURES, day_of(now_ms), f"snapshot-{now_ms}.parquet")
    await asyncio.to_thread(store.write_file, path, table)
    return path, table.num_rows


async def _features_of(
    store: OnlineStoreReader, customer_ids: list[str]
) -> list[tuple[str, str, str, int, list[float]]]:
    """The features of these customers' newest transactions, two round trips for them all."""
    records = [
        (customer_id, record)
        for customer_id, record in zip(
            customer_ids, await store.customers(customer_ids), strict=True
        )
        if record is not None and record.last is not None
    ]
    wanted = [(record.last.terminal_id, record.last.ts_ms) for _, record in records if record.last]
    counts = await store.terminal_counts_many(wanted)
    rows = []
    for (customer_id, record), terminal_counts in zip(records, counts, strict=True):
        last = record.last
        assert last is not None
        values = all_features(
            record.history, terminal_counts, last.txn_id, last.ts_ms, last.amount_cents
        )
        rows.append(
            (
                customer_id,
                last.terminal_id,
                last.txn_id,
                last.ts_ms,
                [values[name] for name in FEATURE_NAMES],
            )
        )
    return rows


def _table(rows: list[tuple[str, str, str, int, list[float]]], now_ms: int) -> pa.Table:
    customer_ids, terminal_ids, txn_ids, ts, vectors = zip(*rows, strict=True)
    columns: dict[str, pa.Array] = {
        "snapshot_at": pa.array([now_ms] * len(rows), type=pa.int64()),
        "customer_id": pa.array(customer_ids, type=pa.string()),
        "terminal_id": pa.array(terminal_ids, type=pa.string()),
        "txn_id": pa.array(txn_ids, type=pa.string()),
        "ts": pa.array(ts, type=pa.int64()),
    }
    for index, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array([vector[index] for vector in vectors], type=pa.float64())
    table = pa.table(columns)
    return table.replace_schema_metadata({"feature_set_version": FEATURE_SET_VERSION})


async def run_periodically(
    redis_url: str,
    store: OfflineStore,
    every_seconds: float,
    stopping: asyncio.Event,
    on_written: Callable[[int], None] | None = None,
) -> None:
    """Take a snapshot every ``every_seconds`` until ``stopping`` is set."""
    while not stopping.is_set():
        try:
            path, count = await snapshot_online_features(redis_url, store)
        except StoreError as exc:
            log.warning("feature snapshot skipped: %s", exc)
        else:
            if path is not None:
                log.info("feature snapshot: %d customers -> %s", count, path)
                if on_written is not None:
                    on_written(count)
        try:
            await asyncio.wait_for(stopping.wait(), timeout=every_seconds)
        except TimeoutError:
            continue
