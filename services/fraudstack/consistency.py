"""``fraudstack check-consistency``: do the online store and the offline computation agree?

For every customer, the features of its newest transaction are read back from Redis through the
store's reader (the customer's events and the terminal's window counts, as ``POST /v1/score``
reads them, finished with :mod:`fraudstack.features.online`) and as ``GET /predict`` reads them
(:meth:`~fraudstack.serve.lookup.FeatureLookup.newest`: the stored features, or its fallback),
and compared, feature by feature, with :func:`~fraudstack.features.offline.compute_features`
over the same events; for every terminal likewise for its newest transaction. Equality is to a
relative 1e-9.

Customer features are compared at the customer's newest transaction and terminal features at
the terminal's newest: the store keeps each entity's events only as far back as a window of its
newest event can reach, which is exactly what scoring a new transaction needs; what ``GET
/predict`` answers is compared whole.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.features.definitions import (
    CUSTOMER_FEATURES,
    FEATURE_NAMES,
    TERMINAL_FEATURES,
    TRANSACTION_FEATURES,
    amount_to_cents,
)
from fraudstack.features.offline import compute_features
from fraudstack.features.online import all_features
from fraudstack.serve.lookup import FeatureLookup

RELATIVE_TOLERANCE = 1e-9


@dataclass
class Report:
    customers: int = 0
    terminals: int = 0
    compared_values: int = 0
    mismatches: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.missing

    def summary(self) -> str:
        verdict = "EQUAL" if self.ok else "DIFFERENT"
        lines = [
            f"online vs offline: {verdict} — {self.customers} customers, {self.terminals} "
            f"terminals, {self.compared_values} values compared (rel. tolerance "
            f"{RELATIVE_TOLERANCE:g})"
        ]
        lines += [f"  missing  {line}" for line in self.missing[:10]]
        lines += [f"  mismatch {line}" for line in self.mismatches[:10]]
        return "\n".join(lines)


def _newest_rows(entity: np.ndarray, ts: np.ndarray, txn_ids: np.ndarray) -> np.ndarray:
    """Index of each entity's newest transaction, by (ts, txn_id) like the windows."""
    order = np.lexsort((txn_ids, ts, entity))
    last_of_group = np.r_[entity[order][1:] != entity[order][:-1], True]
    return order[last_of_group]


async def compare(
    redis_url: str,
    transactions: pa.Table,
    labels: pa.Table | None = None,
    concurrency: int = 64,
) -> Report:
    """Compare the store at ``redis_url`` with the offline features of these events."""
    link = RedisLink(redis_url, timeout=30.0)
    try:
        store = OnlineStoreReader(link)
        # a store being rebuilt is compared as it is
        lookup = FeatureLookup(link, require_ready=False)
        return await _compare(store, lookup, transactions, labels, concurrency)
    finally:
        await link.close()


async def _compare(
    store: OnlineStoreReader,
    lookup: FeatureLookup,
    transactions: pa.Table,
    labels: pa.Table | None,
    concurrency: int,
) -> Report:
    offline = compute_features(transactions, labels)
    txn_ids = np.asarray(transactions["txn_id"].to_pylist(), dtype=object)
    customers = np.asarray(transactions["customer_id"].to_pylist(), dtype=object)
    terminals = np.asarray(transactions["terminal_id"].to_pylist(), dtype=object)
    ts = transactions["ts"].to_numpy().astype(np.int64)
    amounts = transactions["amount"].to_pylist()
    expected = {name: offline[name].to_numpy() for name in offline.column_names if name != "txn_id"}

    jobs: list[tuple[int, tuple[str, ...], bool]] = [
        (int(row), TRANSACTION_FEATURES + CUSTOMER_FEATURES, True)
        for row in _newest_rows(customers.astype(str), ts, txn_ids.astype(str))
    ]
    report = Report(customers=len(jobs))
    terminal_jobs = [
        (int(row), TERMINAL_FEATURES, False)
        for row in _newest_rows(terminals.astype(str), ts, txn_ids.astype(str))
    ]
    report.terminals = len(terminal_jobs)
    jobs += terminal_jobs

    semaphore = asyncio.Semaphore(concurrency)

    def compare_values(row: int, names: Iterable[str], online: dict[str, float], how: str) -> None:
        for name in names:
            want, got = float(expected[name][row]), online[name]
            report.compared_values += 1
            if not math.isclose(got, want, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12):
                report.mismatches.append(
                    f"txn {txn_ids[row]} {name}: {how} {got!r} offline {want!r}"
                )

    async def check(row: int, names: Iterable[str], newest_of_customer: bool) -> None:
        async with semaphore:
            customer, terminal = await store.for_transaction(
                customers[row], terminals[row], int(ts[row])
            )
        if customer is None:
            report.missing.append(f"customer {customers[row]} (txn {txn_ids[row]})")
            return
        online = all_features(
            customer.history, terminal, txn_ids[row], int(ts[row]), amount_to_cents(amounts[row])
        )
        compare_values(row, names, online, "online")
        if not newest_of_customer:
            return
        async with semaphore:  # what GET /predict answers, read as it reads it
            last, scored = await lookup.newest(customers[row])
        if last.txn_id != txn_ids[row]:
            report.missing.append(f"customer {customers[row]}'s newest txn {txn_ids[row]}")
        else:
            compare_values(row, FEATURE_NAMES, scored.features, "served")

    await asyncio.gather(*(check(*job) for job in jobs))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, help="Parquet file or folder of transactions")
    parser.add_argument("--labels", help="Parquet file or folder of labels")


def run(args: argparse.Namespace) -> int:
    import pyarrow.dataset as ds

    from fraudstack.settings import get_settings

    transactions = ds.dataset(args.events, format="parquet").to_table()
    labels = ds.dataset(args.labels, format="parquet").to_table() if args.labels else None
    report = asyncio.run(compare(get_settings().require("redis_url"), transactions, labels))
    print(report.summary())
    return 0 if report.ok else 1
