"""Offline features equal online features, transaction by transaction, on simulated data."""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraudstack import offline_features
from fraudstack.adapters.online_store.codecs import customer_history, customer_history_fields
from fraudstack.features import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    CustomerHistory,
    TerminalHistory,
    all_features,
    amount_to_cents,
    compute_features,
    feature_vector,
)
from fraudstack.features.definitions import MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE
from fraudstack.simulate import SimulationConfig, make_labels, simulate

CONFIG = SimulationConfig(customers=300, terminals=600, days=45, seed=3)
# Offsets that put a second transaction exactly on a window edge of a first one (same customer,
# same terminal): customer windows (t - w, t], terminal windows (t - (n + 7) d, t - 7 d].
EDGE_OFFSETS_MS = [
    0,
    10 * MS_PER_MINUTE,
    MS_PER_HOUR,
    MS_PER_DAY,
    7 * MS_PER_DAY,
    8 * MS_PER_DAY,
    14 * MS_PER_DAY,
    30 * MS_PER_DAY,
    37 * MS_PER_DAY,
]


def with_edge_cases(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Add genuine transactions at exactly an edge offset after random existing ones."""
    picks = rng.choice(table.num_rows, 3_000, replace=False)
    offsets = np.array(EDGE_OFFSETS_MS)[rng.integers(0, len(EDGE_OFFSETS_MS), len(picks))]
    source = table.take(picks)
    extra = pa.table(
        {
            "txn_id": pa.array(np.arange(len(picks)) + table.num_rows).cast(pa.string()),
            "ts": pc.add(source.column("ts"), pa.array(offsets)),
            "customer_id": source.column("customer_id"),
            "terminal_id": source.column("terminal_id"),
            "amount": pa.array(rng.integers(0, 30_000, len(picks)) / 100.0),
            "is_fraud": pa.array(np.zeros(len(picks), dtype=bool)),
            "fraud_scenario": pa.array(np.zeros(len(picks), dtype=np.int8)),
        }
    )
    return pa.concat_tables([table, extra])


def with_unusable_labels(labels: pa.Table, table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Add labels that must change nothing: too late, not fraud, or a second copy."""
    genuine = table.filter(pc.invert(table.column("is_fraud")))
    late = genuine.take(rng.choice(genuine.num_rows, 300, replace=False))
    not_fraud = genuine.take(rng.choice(genuine.num_rows, 300, replace=False))

    def label_rows(rows: pa.Table, is_fraud: bool, delay_ms: int) -> pa.Table:
        return pa.table(
            {
                "txn_id": rows.column("txn_id"),
                "customer_id": rows.column("customer_id"),
                "terminal_id": rows.column("terminal_id"),
                "ts": rows.column("ts"),
                "is_fraud": pa.array([is_fraud] * rows.num_rows),
                "reported_at": pc.add(rows.column("ts"), delay_ms),
            }
        )

    return pa.concat_tables(
        [
            labels,
            label_rows(late, True, 7 * MS_PER_DAY + 1),
            label_rows(not_fraud, False, MS_PER_DAY),
            labels.slice(0, 100),
        ]
    )


@pytest.fixture(scope="module")
def dataset() -> tuple[pa.Table, pa.Table]:
    table = with_edge_cases(simulate(CONFIG), np.random.default_rng(0))
    labels = with_unusable_labels(make_labels(table, seed=1), table, np.random.default_rng(2))
    return table, labels


@pytest.fixture(scope="module")
def offline(dataset: tuple[pa.Table, pa.Table]) -> np.ndarray[Any, Any]:
    table, labels = dataset
    features = compute_features(table, labels)
    assert features.column("txn_id").equals(table.column("txn_id"))
    return np.column_stack([features.column(name).to_numpy() for name in FEATURE_NAMES])


def rows(table: pa.Table) -> list[tuple[str, int, str, str, int]]:
    return [
        (
            row["txn_id"],
            row["ts"],
            row["customer_id"],
            row["terminal_id"],
            amount_to_cents(row["amount"]),
        )
        for row in table.select(
            ["txn_id", "ts", "customer_id", "terminal_id", "amount"]
        ).to_pylist()
    ]


def online_features(
    table: pa.Table,
    customers: dict[str, CustomerHistory],
    terminals: dict[str, TerminalHistory],
) -> np.ndarray[Any, Any]:
    return np.array(
        [
            feature_vector(
                all_features(customers[customer], terminals[terminal], txn_id, ts, cents)
            )
            for txn_id, ts, customer, terminal, cents in rows(table)
        ]
    )


def round_trip_through_fields(
    customers: dict[str, CustomerHistory], terminals: dict[str, TerminalHistory]
) -> None:
    """Reload every history from what the store keeps of it: a customer's hash fields as Redis
    hands them back (bytes, other fields too), a terminal's events and labels as its sorted
    sets hold them (member and time, in time order)."""

    def as_redis(fields: dict[str, str]) -> dict[bytes, bytes]:
        stored = {key.encode(): value.encode() for key, value in fields.items()}
        return stored | {b"_event_ts": b"0", b"_updated_at": b"0", b"terminal_risk_1d": b"0.5"}

    for key, customer in customers.items():
        customers[key] = customer_history(as_redis(customer_history_fields(customer)))
    for key, terminal in terminals.items():
        reloaded = TerminalHistory()
        for txn_id, (ts_ms, reported_at) in terminal.labels.items():
            reloaded.add_label(txn_id, True, reported_at, ts_ms)
        for ts_ms, txn_id in zip(terminal.ts, terminal.txn_ids, strict=True):
            reloaded.add(txn_id, ts_ms, terminal.customers.get(txn_id, ""))
        terminals[key] = reloaded


def assert_same(online: np.ndarray[Any, Any], offline: np.ndarray[Any, Any]) -> None:
    for index, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(
            online[:, index], offline[:, index], rtol=1e-9, atol=0, err_msg=name
        )
    # the design promises more than the tolerance: the very same floats
    assert np.array_equal(online, offline)


def test_online_in_random_order_with_duplicates_equals_offline(
    dataset: tuple[pa.Table, pa.Table], offline: np.ndarray[Any, Any]
) -> None:
    table, labels = dataset
    stream: list[tuple[str, tuple[Any, ...]]] = [("transaction", row) for row in rows(table)]
    stream += [
        (
            "label",
            (
                label["txn_id"],
                label["terminal_id"],
                label["is_fraud"],
                label["reported_at"],
                label["ts"],
            ),
        )
        for label in labels.to_pylist()
    ]
    shuffler = random.Random(7)
    stream += shuffler.sample(stream, len(stream) // 10)  # at-least-once: replays
    shuffler.shuffle(stream)

    customers: dict[str, CustomerHistory] = defaultdict(CustomerHistory)
    terminals: dict[str, TerminalHistory] = defaultdict(TerminalHistory)
    for position, (kind, event) in enumerate(stream):
        if position == len(stream) // 2:
            round_trip_through_fields(customers, terminals)
        if kind == "transaction":
            txn_id, ts, customer, terminal, cents = event
            customers[customer].add(txn_id, ts, cents)
            terminals[terminal].add(txn_id, ts)
        else:
            txn_id, terminal, is_fraud, reported_at, ts = event
            terminals[terminal].add_label(txn_id, is_fraud, reported_at, ts)

    assert_same(online_features(table, customers, terminals), offline)


def test_chronological_stream_with_pruning_equals_offline(
    dataset: tuple[pa.Table, pa.Table], offline: np.ndarray[Any, Any]
) -> None:
    table, labels = dataset
    # by time; at the same ms labels first, then transactions in (ts, txn_id) order, which is
    # the order the windows assume (a stream that scores at arrival sees equal-ms events of one
    # customer in arrival order instead)
    stream: list[tuple[int, int, str, int, Any]] = [
        (row[1], 1, row[0], index, row) for index, row in enumerate(rows(table))
    ]
    stream += [
        (label["reported_at"], 0, label["txn_id"], index, label)
        for index, label in enumerate(labels.to_pylist())
    ]
    stream.sort(key=lambda item: item[:4])
    customers: dict[str, CustomerHistory] = defaultdict(CustomerHistory)
    terminals: dict[str, TerminalHistory] = defaultdict(TerminalHistory)
    online = np.empty_like(offline)
    for now, kind, _, index, event in stream:
        if kind == 0:
            terminal = terminals[event["terminal_id"]]
            terminal.add_label(
                event["txn_id"], event["is_fraud"], event["reported_at"], event["ts"]
            )
            terminal.prune(now)
            continue
        txn_id, ts, customer_id, terminal_id, cents = event
        customer, terminal = customers[customer_id], terminals[terminal_id]
        customer.add(txn_id, ts, cents)
        customer.prune(now)
        terminal.add(txn_id, ts)
        terminal.prune(now)
        online[index] = feature_vector(all_features(customer, terminal, txn_id, ts, cents))
    assert_same(online, offline)
    assert max(len(history) for history in customers.values()) < 200  # bounded state


def test_labels_or_is_fraud_column_give_the_same_features(
    dataset: tuple[pa.Table, pa.Table], offline: np.ndarray[Any, Any]
) -> None:
    table, _ = dataset
    from_column = compute_features(table)
    matrix = np.column_stack([from_column.column(name).to_numpy() for name in FEATURE_NAMES])
    assert np.array_equal(matrix, offline)
    risk = compute_features(table.drop_columns(["is_fraud"])).column("terminal_risk_7d")
    assert pc.max(risk).as_py() == 0.0


def test_input_order_and_duplicate_rows_change_nothing(
    dataset: tuple[pa.Table, pa.Table], offline: np.ndarray[Any, Any]
) -> None:
    table, labels = dataset
    permutation = np.random.default_rng(5).permutation(table.num_rows)
    replays = permutation[:2_000]
    shuffled = pa.concat_tables([table.take(permutation), table.take(replays)])
    features = compute_features(shuffled, labels, progress=True)
    matrix = np.column_stack([features.column(name).to_numpy() for name in FEATURE_NAMES])
    assert np.array_equal(matrix[: table.num_rows], offline[permutation])
    assert np.array_equal(matrix[table.num_rows :], offline[replays])


def small_table(events: list[tuple[str, int, str, str, float]]) -> pa.Table:
    names = ["txn_id", "ts", "customer_id", "terminal_id", "amount"]
    return pa.table({name: [event[i] for event in events] for i, name in enumerate(names)})


def test_window_edges_and_ties() -> None:
    t = 1_700_000_000_000
    day = MS_PER_DAY
    table = small_table(
        [
            ("edge-1d", t - day, "c", "k", 1.0),
            ("inside-1d", t - day + 1, "c", "k", 2.0),
            ("9", t, "c", "k", 4.0),
            ("10", t, "c", "k", 8.0),
            ("terminal-8d", t + day, "other", "k", 0.5),
            ("terminal-7d", t + 2 * day, "other", "k", 0.5),
            ("query", t + 9 * day, "c2", "k", 0.5),
        ]
    )
    labels = pa.table(
        {
            "txn_id": ["terminal-7d"],
            "ts": [t + 2 * day],
            "is_fraud": [True],
            "reported_at": [t + 9 * day],
        }
    )
    features = compute_features(table, labels).to_pylist()
    by_id = {row["txn_id"]: row for row in features}
    assert by_id["10"]["customer_nb_tx_1d"] == 2.0  # inside-1d and itself; "9" sorts after
    assert by_id["9"]["customer_nb_tx_1d"] == 3.0
    assert by_id["9"]["customer_avg_amount_1d"] == 1_400 / 3 / 100
    assert by_id["9"]["customer_nb_tx_30d"] == 4.0
    query = by_id["query"]  # terminal window (t + 1 d, t + 2 d] for 1 day
    assert (query["terminal_nb_tx_1d"], query["terminal_risk_1d"]) == (1.0, 1.0)
    assert (query["terminal_nb_tx_7d"], query["terminal_risk_7d"]) == (6.0, 1 / 6)


def test_timestamp_column_and_empty_table() -> None:
    t = 1_700_000_000_000
    table = small_table([("a", t, "c", "k", 1.5), ("b", t + 1, "c", "k", 2.5)])
    as_timestamp = table.set_column(1, "ts", table.column("ts").cast(pa.timestamp("ms", "UTC")))
    assert compute_features(as_timestamp).equals(compute_features(table))
    empty = compute_features(table.slice(0, 0))
    assert empty.num_rows == 0
    assert empty.column_names == ["txn_id", *FEATURE_NAMES]


def test_huge_amounts_give_the_online_bits() -> None:
    """Amounts whose count x sum of squares would overflow int64 (billions in cents squared):
    the table computes those columns with Python integers, as the stream does."""
    t = 1_700_000_000_000
    rows = [
        (f"t{i}", t + i * MS_PER_HOUR, "whale", "k", amount)
        for i, amount in enumerate([9e9, 1.5e10, 3e9, 2e10, 2e10, 7.25e9])
    ]
    offline = compute_features(small_table(rows)).to_pylist()
    history = CustomerHistory()
    for (txn_id, ts, _, _, amount), expected in zip(rows, offline, strict=True):
        cents = amount_to_cents(amount)
        history.add(txn_id, ts, cents)
        online = all_features(history, TerminalHistory(), txn_id, ts, cents)
        assert feature_vector(online) == [expected[name] for name in FEATURE_NAMES], txn_id
    assert offline[-1]["customer_amount_zscore_prev_30d"] < 0  # a small one after big ones


def test_bad_input_raises_value_error() -> None:
    table = small_table([("a", 1, "c", "k", 1.0)])
    with pytest.raises(ValueError, match="missing column"):
        compute_features(table.drop_columns(["amount"]))
    with_null = table.set_column(2, "customer_id", pa.array([None], pa.string()))
    with pytest.raises(ValueError, match="null"):
        compute_features(with_null)


def cli(*words: str) -> int:
    parser = argparse.ArgumentParser()
    offline_features.add_arguments(parser)
    return offline_features.run(parser.parse_args([*words, "--no-progress"]))


def test_cli_writes_features_atomically(
    dataset: tuple[pa.Table, pa.Table], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, labels = dataset
    folder = tmp_path / "events"
    folder.mkdir()
    pq.write_table(table.slice(0, 10_000), folder / "part-0.parquet")
    pq.write_table(table.slice(10_000), folder / "part-1.parquet")
    pq.write_table(labels, tmp_path / "labels.parquet")
    out = tmp_path / "out" / "features.parquet"
    assert (
        cli(
            "--events", str(folder), "--labels", str(tmp_path / "labels.parquet"), "--out", str(out)
        )
        == 0
    )
    written = pq.read_table(out)
    assert written.num_rows == table.num_rows
    assert written.schema.metadata[b"feature_set_version"] == FEATURE_SET_VERSION.encode()
    assert sorted(path.name for path in out.parent.iterdir()) == ["features.parquet"]

    assert cli("--events", str(tmp_path / "missing"), "--out", str(tmp_path / "x.parquet")) == 2
    pq.write_table(table.drop_columns(["ts"]), tmp_path / "no-ts.parquet")
    assert (
        cli("--events", str(tmp_path / "no-ts.parquet"), "--out", str(tmp_path / "x.parquet")) == 2
    )
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-2:] == [
        f"fraudstack features: no such file or folder: {tmp_path / 'missing'}",
        "fraudstack features: transactions: missing column(s) ts",
    ]
    assert not (tmp_path / "x.parquet").exists()
