"""The transaction simulator: determinism, schema, the fraud rules, plausible rates."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraudstack import simulate as simulate_role
from fraudstack.features.definitions import LABEL_DELAY_MS, MS_PER_DAY
from fraudstack.simulate import (
    BOOK_FRAUDS,
    BOOK_TRANSACTIONS,
    SimulationConfig,
    make_labels,
    simulate,
    summary,
)

SMALL = SimulationConfig(customers=400, terminals=800, days=40, seed=11)
SCHEMA = pa.schema(
    [
        ("txn_id", pa.string()),
        ("ts", pa.int64()),
        ("customer_id", pa.string()),
        ("terminal_id", pa.string()),
        ("amount", pa.float64()),
        ("is_fraud", pa.bool_()),
        ("fraud_scenario", pa.int8()),
    ]
)


@pytest.fixture(scope="module")
def small() -> pa.Table:
    return simulate(SMALL)


def test_same_seed_same_table_other_seed_other_table(small: pa.Table) -> None:
    assert simulate(SMALL).equals(small)
    other = simulate(SimulationConfig(customers=400, terminals=800, days=40, seed=12))
    assert not other.equals(small)


def test_schema_order_and_ids(small: pa.Table) -> None:
    assert small.schema.equals(SCHEMA)
    ts = small.column("ts").to_numpy()
    assert np.all(np.diff(ts) >= 0)
    assert small.column("txn_id").to_pylist() == [str(i) for i in range(small.num_rows)]
    start = (SMALL.start_date - date(1970, 1, 1)).days * MS_PER_DAY
    assert ts.min() > start and ts.max() < start + SMALL.days * MS_PER_DAY
    second_of_day = (ts - start) % MS_PER_DAY
    assert np.all(second_of_day % 1_000 == 0) and np.all(second_of_day > 0)
    customers = small.column("customer_id").cast(pa.int64()).to_numpy()
    terminals = small.column("terminal_id").cast(pa.int64()).to_numpy()
    assert customers.max() < SMALL.customers and terminals.max() < SMALL.terminals


def test_amounts_are_whole_cents(small: pa.Table) -> None:
    amount = small.column("amount").to_numpy()
    assert np.all(amount >= 0)
    assert np.array_equal(np.rint(amount * 100) / 100, amount)


def test_fraud_rules(small: pa.Table) -> None:
    scenario = small.column("fraud_scenario").to_numpy()
    amount = small.column("amount").to_numpy()
    assert np.array_equal(small.column("is_fraud").to_numpy(zero_copy_only=False), scenario > 0)
    assert set(np.unique(scenario)) == {0, 1, 2, 3}
    # scenario 1: every genuine amount is at most 220, every scenario-1 amount above it
    assert np.all(amount[scenario == 0] <= 220)
    assert np.all(amount[scenario == 1] > 220)
    # scenario 3 multiplied amounts by 5: whole multiples of 5 cents
    assert np.all(np.rint(amount[scenario == 3] * 100) % 5 == 0)
    # scenario 2 compromises a terminal for whole days: on a terminal-day with one scenario-2
    # fraud, every transaction is a fraud (scenario 3 may have overridden some)
    start = small.column("ts").to_numpy().min() // MS_PER_DAY
    day = small.column("ts").to_numpy() // MS_PER_DAY - start
    terminal = small.column("terminal_id").cast(pa.int64()).to_numpy()
    terminal_day = terminal * SMALL.days + day
    compromised = np.isin(terminal_day, terminal_day[scenario == 2])
    assert np.all(scenario[compromised] >= 2)
    # scenario 3 touches at most 3 customers a day over the run
    customers = small.column("customer_id").to_numpy(zero_copy_only=False)
    assert len(set(customers[scenario == 3])) <= 3 * SMALL.days


def test_labels_one_per_fraud_within_the_delay(small: pa.Table) -> None:
    labels = make_labels(small, seed=3)
    assert labels.equals(make_labels(small, seed=3))
    assert labels.num_rows == pc.sum(small.column("is_fraud").cast(pa.int64())).as_py()
    assert set(labels.column("txn_id").to_pylist()) == set(
        small.filter(small.column("is_fraud")).column("txn_id").to_pylist()
    )
    delay = pc.subtract(labels.column("reported_at"), labels.column("ts")).to_numpy()
    assert delay.min() >= 1 and delay.max() <= LABEL_DELAY_MS
    assert np.all(np.diff(labels.column("reported_at").to_numpy()) >= 0)
    assert pc.all(labels.column("is_fraud")).as_py()


def test_medium_run_has_a_plausible_size_and_fraud_rate() -> None:
    config = SimulationConfig(customers=5_000, terminals=10_000, days=60, seed=4)
    table = simulate(config)
    # expected: 2 transactions a customer-day, 96.9 % of times of day kept
    expected = config.customers * config.days * 2 * 0.969
    assert abs(table.num_rows / expected - 1) < 0.04
    rate = pc.mean(table.column("is_fraud").cast(pa.float64())).as_py()
    # lower than the book's 0.84 %: scenario 2 needs 28 days to reach its full share
    assert 0.004 < rate < 0.010
    text = summary(table)
    assert f"{BOOK_TRANSACTIONS:,}" in text and f"{BOOK_FRAUDS:,}" in text
    assert f"{table.num_rows:,}" in text


def run_cli(*words: str) -> int:
    parser = argparse.ArgumentParser()
    simulate_role.add_arguments(parser)
    return simulate_role.run(parser.parse_args([*words, "--no-progress"]))


def test_cli_writes_transactions_and_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, labels_out = tmp_path / "tx.parquet", tmp_path / "labels" / "labels.parquet"
    code = run_cli(
        "--customers",
        "50",
        "--terminals",
        "100",
        "--days",
        "10",
        "--seed",
        "1",
        "--start-date",
        "2024-01-01",
        "--out",
        str(out),
        "--labels-out",
        str(labels_out),
    )
    assert code == 0
    table = pq.read_table(out)
    expected = simulate(
        SimulationConfig(customers=50, terminals=100, days=10, seed=1, start_date=date(2024, 1, 1))
    )
    assert table.equals(expected)
    assert pq.read_table(labels_out).num_rows == pc.sum(expected["is_fraud"].cast("int64")).as_py()
    assert "| transactions |" in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labels", "tx.parquet"]

    assert run_cli("--customers", "0", "--out", str(tmp_path / "bad.parquet")) == 2
    assert run_cli("--days", "3") == 2  # nowhere to write
    assert not (tmp_path / "bad.parquet").exists()
