"""Periodic snapshots of the online feature values into ``features/`` of the offline store.

For every customer in the online store, the snapshot holds the features of its newest
transaction as the inference service would compute them from Redis at that moment (customer
windows from the customer hash, terminal windows from the terminal hash). Comparing a snapshot
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
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fraudstack.adapters.offline_store import FEATURES, OfflineStore, day_of
from fraudstack.adapters.online_store import customer_record, terminal_key
from fraudstack.errors import StoreUnavailable
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.features.online import TerminalHistory, all_features

log = logging.getLogger(__name__)

_CUSTOMER_PATTERN = "fs:{customer:*}"
_BATCH = 500


async def snapshot_online_features(
    redis_url: str, store: OfflineStore, now_ms: int | None = None
) -> tuple[str | None, int]:
    """Write one snapshot; return its path (None when the store is empty) and row count."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    client = aioredis.Redis.from_url(redis_url)
    rows: list[tuple[str, str, str, int, list[float]]] = []
    try:
        keys: list[bytes] = []
        async for key in client.scan_iter(match=_CUSTOMER_PATTERN, count=1_000):
            keys.append(key)
            if len(keys) >= _BATCH:
                rows += await _features_of(client, keys)
                keys = []
        if keys:
            rows += await _features_of(client, keys)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"online store unreachable: {exc}") from exc
    finally:
        await client.aclose()
    if not rows:
        return None, 0
    table = _table(rows, now_ms)
    path = store.file_path(FEATURES, day_of(now_ms), f"snapshot-{now_ms}.parquet")
    await asyncio.to_thread(store.write_file, path, table)
    return path, table.num_rows


async def _features_of(
    client: aioredis.Redis, keys: list[bytes]
) -> list[tuple[str, str, str, int, list[float]]]:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        customers = await pipe.execute()
    records = []
    for key, fields in zip(keys, customers, strict=True):
        record = customer_record(fields)
        if record is not None and record.last is not None:
            customer_id = key.decode()[len("fs:{customer:") : -1]
            records.append((customer_id, record))
    async with client.pipeline(transaction=False) as pipe:
        for _, record in records:
            assert record.last is not None
            pipe.hgetall(terminal_key(record.last.terminal_id))
        terminals = await pipe.execute()
    rows = []
    for (customer_id, record), terminal_fields in zip(records, terminals, strict=True):
        last = record.last
        assert last is not None
        values = all_features(
            record.history,
            TerminalHistory.from_fields(terminal_fields),
            last.txn_id,
            last.ts_ms,
            last.amount_cents,
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
        except StoreUnavailable as exc:
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
