"""Periodic snapshots of the online feature values, read from the real Redis."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from fraudstack.adapters.offline_store import FEATURES, OfflineStore
from fraudstack.aggregate.bulk import load_table
from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.features.offline import compute_features
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from fraudstack.snapshot.online_features import snapshot_online_features


async def test_snapshot_holds_each_customers_newest_features(
    redis_url: str, tmp_path: Path
) -> None:
    transactions = simulate(SimulationConfig(customers=40, terminals=80, days=10, seed=11))
    for column in ("customer_id", "terminal_id"):
        prefixed = pc.binary_join_element_wise("fsnap-", transactions.column(column), "")
        transactions = transactions.set_column(
            transactions.column_names.index(column), column, prefixed
        )
    labels = make_labels(transactions)
    load_table(redis_url, transactions, labels)
    store = OfflineStore(str(tmp_path))

    path, rows = await snapshot_online_features(redis_url, store, now_ms=1_600_000_000_000)

    assert path is not None
    assert path.endswith("features/date=2020-09-13/snapshot-1600000000000.parquet")
    snapshot = store.read(FEATURES)
    assert snapshot.num_rows == rows
    ours = snapshot.filter(pc.starts_with(snapshot["customer_id"], "fsnap-"))
    assert ours.num_rows == len(pc.unique(transactions["customer_id"]))
    offline = compute_features(transactions, labels)
    expected = {row["txn_id"]: row for row in offline.to_pylist()}
    for row in ours.to_pylist():
        assert {name: row[name] for name in FEATURE_NAMES} == {
            name: expected[row["txn_id"]][name] for name in FEATURE_NAMES
        }
