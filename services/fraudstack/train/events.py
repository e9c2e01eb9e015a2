"""A user's transaction table (``--events``) in the simulator's schema, read and checked.

The schema (the README documents it for users):

============== ======================================== ============================================
column         type                                     meaning
============== ======================================== ============================================
``txn_id``     string (or integer)                      the transaction's id, unique
``ts``         int64 epoch milliseconds UTC, or a       when the transaction happened
               timestamp (a CSV: an ISO-8601 text)
``customer_id`` string (or integer)                     the card / customer
``terminal_id`` string (or integer)                     the terminal / merchant
``amount``     number (float or integer), >= 0          amount in currency units (e.g. 12.34)
``is_fraud``   boolean (or integer 0/1)                 the fraud label, as eventually known
============== ======================================== ============================================

Other columns are ignored. Labels are taken as the chargebacks of the protocol: known 7 days
after the transaction (a terminal window counts a fraud only once that delay has passed, so
nothing from the future reaches a feature). Every problem is raised as
:class:`~fraudstack.errors.InvalidTable` with a one-line message naming it.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from fraudstack.errors import InvalidTable
from fraudstack.train.dataset import LabelledSet
from fraudstack.train.handbook import DELAY_DAYS, TEST_DAYS, TRAIN_DAYS, fold_starts, split

COLUMNS = ("txn_id", "ts", "customer_id", "terminal_id", "amount", "is_fraud")
_IDS = ("txn_id", "customer_id", "terminal_id")


def read_events(path: str | os.PathLike[str]) -> pa.Table:
    """The checked table of ``path``: a Parquet file or folder, or a CSV file (``.csv``,
    ``.csv.gz``), with the columns of :data:`COLUMNS` cast to the simulator's types."""
    where = str(path)
    if "://" not in where and not Path(where).exists():
        raise InvalidTable(f"--events {where}: no such file or folder")
    try:
        if where.endswith((".csv", ".csv.gz")):
            table = pacsv.read_csv(
                where,
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in _IDS}
                ),
            )
        else:
            table = ds.dataset(where, format="parquet", partitioning="hive").to_table()
    except (OSError, pa.ArrowInvalid) as exc:
        message = " ".join(str(exc).split())
        raise InvalidTable(f"--events {where}: cannot be read: {message}") from exc
    return checked(table, where)


def checked(table: pa.Table, where: str = "the table") -> pa.Table:
    """``table``'s columns of the schema, in the simulator's types, or InvalidTable."""
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise InvalidTable(
            f"--events {where}: missing column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)})"
        )
    if table.num_rows == 0:
        raise InvalidTable(f"--events {where}: no transactions")
    columns = {}
    for name in COLUMNS:
        column = table.column(name)
        if column.null_count:
            raise InvalidTable(
                f"--events {where}: column {name} has {column.null_count} empty value(s)"
            )
        columns[name] = _cast(column, name, where)
    result = pa.table(columns)
    if pc.min(result.column("amount")).as_py() < 0:
        raise InvalidTable(f"--events {where}: column amount has negative values")
    if len(pc.unique(result.column("txn_id"))) != result.num_rows:
        raise InvalidTable(f"--events {where}: column txn_id has repeated values")
    return result


def _cast(column: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    kind = column.type
    if name in _IDS:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
            return column.cast(pa.string())
        expected = "a string or an integer"
    elif name == "ts":
        if pa.types.is_timestamp(kind):
            return column.cast(pa.timestamp("ms", tz=kind.tz)).cast(pa.int64())
        if pa.types.is_integer(kind):
            return column.cast(pa.int64())
        expected = "int64 epoch milliseconds or a timestamp"
    elif name == "amount":
        if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
            return column.cast(pa.float64())
        expected = "a number (currency units)"
    else:  # is_fraud
        if pa.types.is_boolean(kind):
            return column
        if pa.types.is_integer(kind):
            values = pc.unique(column).to_pylist()
            if set(values) <= {0, 1}:
                return pc.not_equal(column, 0)
            expected = "a boolean or 0/1"
            return _wrong(where, name, f"integer values {sorted(values)[:5]}", expected)
        expected = "a boolean or 0/1"
    return _wrong(where, name, str(kind), expected)


def _wrong(where: str, name: str, found: str, expected: str) -> pa.ChunkedArray:
    raise InvalidTable(f"--events {where}: column {name} is {found}, expected {expected}")


#: Days of history the features need before the first training day: the longest customer
#: window (the terminal windows' 37 days are covered for all but the first week's earliest).
HISTORY_DAYS = 30


def protocol_start(data: LabelledSet, folds: int, where: str) -> date:
    """The training start of the handbook protocol on a user's table: its test week is the
    table's last 7 days. InvalidTable when the table is too short for the protocol's periods
    (with :data:`HISTORY_DAYS` of history before them) or a period has no fraud."""
    first, last = int(data.day.min()), int(data.day.max())
    span = TRAIN_DAYS + DELAY_DAYS + TEST_DAYS
    train_start = _date(last - span + 1)
    earliest = min(fold_starts(folds, train_start), default=train_start)
    needed = (last - _epoch_day(earliest) + 1) + HISTORY_DAYS
    if last - first + 1 < needed:
        raise InvalidTable(
            f"--events {where}: {last - first + 1} days ({_date(first)}..{_date(last)}), the "
            f"protocol needs {needed}: {HISTORY_DAYS} days of history, then {folds} validation "
            f"fold(s) and the test split of {TRAIN_DAYS} training, {DELAY_DAYS} delay and "
            f"{TEST_DAYS} test days, a week apart"
        )
    periods = [("test split", train_start)] + [
        (f"validation fold {index + 1}", start)
        for index, start in enumerate(fold_starts(folds, train_start))
    ]
    for name, start in periods:
        train, test = split(data, start)
        for part, rows, begin in (
            ("training", train, start),
            (
                "test" if name == "test split" else "validation",
                test,
                start + timedelta(days=TRAIN_DAYS + DELAY_DAYS),
            ),
        ):
            if rows.frauds == 0:
                days = TRAIN_DAYS if part == "training" else TEST_DAYS
                raise InvalidTable(
                    f"--events {where}: no frauds in the {part} days of the {name} "
                    f"({begin}..{begin + timedelta(days=days - 1)}, {len(rows):,} transactions)"
                )
    return train_start


def _date(epoch_day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=epoch_day)


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days
