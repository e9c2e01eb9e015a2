"""``--events``: a user's transaction table for ``fraudstack train``, good and bad."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from fraudstack.adapters.registry import ModelRegistry
from fraudstack.cli import main
from fraudstack.features.definitions import MS_PER_DAY
from fraudstack.simulate import SimulationConfig, simulate

# 70 days: 30 of history, then one validation fold and the test split (5 weeks)
CONFIG = SimulationConfig(customers=400, terminals=800, days=70, seed=11)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return simulate(CONFIG).drop_columns(["fraud_scenario"])


def _write(table: pa.Table, path: Path) -> str:
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    code = main(argv)
    error = capsys.readouterr().err.strip()
    assert code == 1, error
    assert len(error.splitlines()) == 1, error  # one line, no stack trace
    for fragment in fragments:
        assert fragment in error, error
    return error


@pytest.mark.parametrize("protocol", ["handbook", "store"])
def test_a_missing_column_is_named(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    path = _write(table.drop_columns(["amount", "is_fraud"]), tmp_path / "events.parquet")
    argv = ["train", "--protocol", protocol, "--events", path, "--registry", str(tmp_path / "r")]
    _fails(argv, capsys, "missing column(s) amount, is_fraud")


@pytest.mark.parametrize(
    ("column", "values", "fragment"),
    [
        ("amount", lambda n: pa.array(["12.5"] * n), "column amount is string, expected a number"),
        ("ts", lambda n: pa.array([1.5] * n), "column ts is double, expected int64 epoch"),
        ("is_fraud", lambda n: pa.array([2] * n), "column is_fraud is integer values [2]"),
        ("customer_id", lambda n: pa.array([None] * n, pa.string()), "customer_id has"),
    ],
)
def test_a_wrong_type_is_named(
    table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    column: str,
    values: object,
    fragment: str,
) -> None:
    index = table.column_names.index(column)
    bad = table.set_column(index, column, values(table.num_rows))  # type: ignore[operator]
    path = _write(bad, tmp_path / "events.parquet")
    _fails(["train", "--protocol", "handbook", "--events", path], capsys, fragment)


def test_too_few_days_for_the_protocol(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(table, tmp_path / "events.parquet")
    # 30 days of history, then 56 from the fourth fold's training to the test end; 70 here
    _fails(
        ["train", "--protocol", "handbook", "--events", path, "--no-progress"],
        capsys,
        "70 days",
        "the protocol needs 86",
    )


def test_a_period_without_frauds_is_named(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ts = table.column("ts").to_numpy()
    last_week = ts >= (int(ts.max()) // MS_PER_DAY - 6) * MS_PER_DAY
    no_fraud = pc.and_(table.column("is_fraud"), pa.array(~last_week))
    path = _write(table.set_column(5, "is_fraud", no_fraud), tmp_path / "events.parquet")
    argv = ["train", "--protocol", "handbook", "--events", path, "--folds", "1", "--no-progress"]
    _fails(argv, capsys, "no frauds in the test days of the test split")


def test_handbook_protocol_on_a_csv_table(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _write(table, tmp_path / "events.csv")
    results = tmp_path / "results"
    argv = ["train", "--protocol", "handbook", "--events", csv, "--folds", "1", "--seeds", "0-1"]
    argv += ["--models", "logistic_regression", "--results", str(results), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((results / "model_quality.json").read_text())
    assert report["seeds"] == [0, 1]
    (entry,) = report["summary"]
    assert len(entry["auc_roc"]["per_seed"]) == 2
    assert 0.5 < entry["auc_roc"]["mean"] <= 1.0
    # the test week is the table's last
    last_day = CONFIG.start_date + timedelta(days=CONFIG.days - 1)
    assert report["protocol"]["test"].endswith(str(last_day))
    assert (results / "model_quality.png").read_bytes().startswith(b"\x89PNG")


def test_store_protocol_publishes_a_model_from_a_table(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(table, tmp_path / "events.parquet")
    registry = tmp_path / "registry"
    argv = ["train", "--events", path, "--registry", str(registry), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    version = capsys.readouterr().out.strip().splitlines()[-1]
    metadata = ModelRegistry(registry).verify(version)
    assert metadata.model_type.startswith("forest_logistic_blend")
    assert "forest.npz" in metadata.files
    assert metadata.metrics["validation"]["auc_roc"] > 0.6
    # validation ends a delay before the table's last day: its labels had time to arrive
    last = int(np.max(table.column("ts").to_numpy())) // MS_PER_DAY
    assert metadata.extra["validation_window"]["start"] < str(
        CONFIG.start_date + timedelta(days=last - int(table.column("ts")[0].as_py()) // MS_PER_DAY)
    )
