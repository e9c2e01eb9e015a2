"""Load a whole table of transactions into the online store at once.

For benchmarks, demos and tests that need a populated store without streaming it: the end state
is the one the streaming aggregator reaches for the same events (the same histories, the same
layout), built in one pass and written in pipelined batches, and marked ready last (see
:mod:`fraudstack.adapters.online_store.generation`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from fraudstack.adapters.online_store.codecs import LastTransaction, TerminalSnapshot
from fraudstack.adapters.online_store.generation import ready_commands
from fraudstack.adapters.online_store.writer import customer_replacement, terminal_replacement
from fraudstack.adapters.redis_clients import redis_client
from fraudstack.adapters.redis_link import Command
from fraudstack.features.online import (
    CustomerHistory,
    TerminalHistory,
    history_counts,
)


def load_table(
    redis_url: str,
    transactions: pa.Table,
    labels: pa.Table | None = None,
    batch: int = 2_000,
) -> tuple[int, int]:
    """Write every customer and terminal of ``transactions``; return their counts.

    ``labels`` needs ``txn_id``, ``ts``, ``terminal_id``, ``is_fraud``, ``reported_at``; when it is
    None and the table has ``is_fraud``, every fraud is taken as reported one day later.
    """
    columns = transactions.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    txn_ids = columns["txn_id"].to_pylist()
    ts = columns["ts"].to_numpy().astype(np.int64)
    customers = columns["customer_id"].to_pylist()
    terminals = columns["terminal_id"].to_pylist()
    cents = np.rint(columns["amount"].to_numpy() * 100).astype(np.int64)

    customer_histories: dict[str, CustomerHistory] = {}
    last: dict[str, LastTransaction] = {}
    terminal_histories: dict[str, TerminalHistory] = {}
    for index in np.argsort(ts, kind="stable"):
        txn_id, when, amount = txn_ids[index], int(ts[index]), int(cents[index])
        customer, terminal = customers[index], terminals[index]
        if not customer_histories.setdefault(customer, CustomerHistory()).add(txn_id, when, amount):
            continue  # a duplicate row, refused as the stream refuses it
        known = last.get(customer)
        # the newest by (ts, txn_id), as the stream orders ties, not by input order
        if known is None or (when, txn_id) > (known.ts_ms, known.txn_id):
            last[customer] = LastTransaction(txn_id, when, amount, terminal)
        terminal_histories.setdefault(terminal, TerminalHistory()).add(txn_id, when, customer)

    for txn_id, when, terminal, reported in _label_rows(transactions, labels):
        terminal_histories.setdefault(terminal, TerminalHistory()).add_label(
            txn_id, True, reported, when
        )

    client = redis_client(redis_url)  # a single server or a cluster, by the URL
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    queued = 0
    for customer, history in customer_histories.items():
        newest = last[customer]
        history.prune(newest.ts_ms)
        # counted from every event and label, before any terminal is pruned; seq 0 is older
        # than any count the terminal script will take
        counts = history_counts(terminal_histories[newest.terminal_id], newest.ts_ms)
        snapshot = TerminalSnapshot(newest.txn_id, newest.ts_ms, 0, counts)
        commands = customer_replacement(customer, history, newest, snapshot, now_ms)
        queued = _queue(pipe, commands, queued, batch)
    for terminal, terminal_history in terminal_histories.items():
        # pruned as the terminal script prunes, and saying so
        dropped = terminal_history.prune(terminal_history.ts[-1]) if terminal_history.ts else 0
        commands = terminal_replacement(terminal, terminal_history, dropped, now_ms)
        queued = _queue(pipe, commands, queued, batch)
    # last, once everything else is written: the store is whole, in a generation of its own
    _queue(pipe, ready_commands(), queued, batch)
    pipe.execute()
    client.close()
    return len(customer_histories), len(terminal_histories)


def _queue(pipe: Any, commands: list[Command], queued: int, batch: int) -> int:
    """Queue an entity's commands; send the pipeline every ``batch`` entities."""
    for command in commands:
        pipe.execute_command(*command)
    if queued + 1 >= batch:
        pipe.execute()
        return 0
    return queued + 1


def _label_rows(transactions: pa.Table, labels: pa.Table | None) -> list[tuple[str, int, str, int]]:
    if labels is not None:
        rows = labels.select(["txn_id", "ts", "terminal_id", "is_fraud", "reported_at"]).to_pylist()
        return [
            (row["txn_id"], int(row["ts"]), row["terminal_id"], int(row["reported_at"]))
            for row in rows
            if row["is_fraud"]
        ]
    if "is_fraud" not in transactions.column_names:
        return []
    frauds = transactions.filter(transactions["is_fraud"]).select(["txn_id", "ts", "terminal_id"])
    return [
        (row["txn_id"], int(row["ts"]), row["terminal_id"], int(row["ts"]) + 86_400_000)
        for row in frauds.to_pylist()
    ]
