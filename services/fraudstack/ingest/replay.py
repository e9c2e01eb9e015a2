"""Stream a table of transactions (and their labels) into Kafka, in event-time order.

Transactions go to ``transactions`` keyed by customer id; labels go to ``labels`` keyed by
terminal id, interleaved at their ``reported_at`` time, as chargebacks arrive. With a ``rate``
the stream is paced (events per second, labels included); with ``shift_to_now`` every time is
moved so the first event happens now, which makes freshness and lag figures meaningful.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pyarrow as pa
from tqdm import tqdm

from fraudstack.adapters.kafka import ensure_topics, make_producer
from fraudstack.settings import Topics

KafkaRecord = tuple[str, bytes, bytes]

_CHUNK = 2_000


def _transaction_records(
    table: pa.Table, shift_ms: int, topic: str
) -> tuple[np.ndarray, list[KafkaRecord]]:
    txn_ids = table["txn_id"].to_pylist()
    ts = table["ts"].to_numpy().astype(np.int64) + shift_ms
    customers = table["customer_id"].to_pylist()
    terminals = table["terminal_id"].to_pylist()
    amounts = table["amount"].to_pylist()
    records = [
        (
            topic,
            customer.encode(),
            orjson.dumps(
                {
                    "txn_id": txn_id,
                    "ts": int(when),
                    "customer_id": customer,
                    "terminal_id": terminal,
                    "amount": amount,
                }
            ),
        )
        for txn_id, when, customer, terminal, amount in zip(
            txn_ids, ts.tolist(), customers, terminals, amounts, strict=True
        )
    ]
    return ts, records


def _label_records(
    labels: pa.Table, shift_ms: int, topic: str
) -> tuple[np.ndarray, list[KafkaRecord]]:
    reported = labels["reported_at"].to_numpy().astype(np.int64) + shift_ms
    rows = labels.select(
        ["txn_id", "customer_id", "terminal_id", "ts", "is_fraud", "reported_at"]
    ).to_pylist()
    records = []
    for row in rows:
        row["ts"] = int(row["ts"]) + shift_ms
        row["reported_at"] = int(row["reported_at"]) + shift_ms
        records.append((topic, row["terminal_id"].encode(), orjson.dumps(row)))
    return reported, records


async def produce_table(
    bootstrap: str,
    transactions: pa.Table,
    labels: pa.Table | None = None,
    rate: float | None = None,
    shift_to_now: bool = False,
    progress: bool = True,
    topics: Topics | None = None,
) -> tuple[int, int]:
    """Produce every transaction and label; return how many of each the broker acknowledged."""
    first_ts = int(pa.compute.min(transactions["ts"]).as_py()) if len(transactions) else 0
    shift_ms = int(time.time() * 1000) - first_ts if shift_to_now else 0
    topics = topics or Topics()
    times, records = _transaction_records(transactions, shift_ms, topics.transactions)
    label_count = 0
    if labels is not None and len(labels):
        label_times, label_records = _label_records(labels, shift_ms, topics.labels)
        label_count = len(label_records)
        times = np.concatenate([times, label_times])
        records.extend(label_records)
    order = np.argsort(times, kind="stable")

    await ensure_topics(bootstrap, topics)
    producer = make_producer(bootstrap, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    bar = tqdm(total=len(records), unit="ev", disable=not progress, desc="producing")
    try:
        for chunk_start in range(0, len(order), _CHUNK):
            futures = []
            for sent, index in enumerate(order[chunk_start : chunk_start + _CHUNK], chunk_start):
                if rate:
                    await _pace(started, sent, rate)
                topic, key, value = records[index]
                futures.append(await producer.send(topic, value, key=key))
            # acknowledged by the broker before the next chunk: nothing is left in flight
            await asyncio.gather(*futures)
            bar.update(len(futures))
    finally:
        bar.close()
        await producer.stop()
    return len(records) - label_count, label_count


async def _pace(started: float, sent: int, rate: float) -> None:
    """Sleep until event number ``sent`` is due at ``rate`` events per second."""
    delay = started + sent / rate - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
