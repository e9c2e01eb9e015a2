"""Every feature of every transaction of a table, vectorised (training, consistency checks).

The definitions are those of :mod:`fraudstack.features.definitions`, computed so that each
value equals, bit for bit, what :mod:`fraudstack.features.online` returns for the same
transaction: windows come from one sort by a composite key ``entity * stride + time`` and
``searchsorted`` on it, and amounts are cumulative sums of the same integer cents the online
path adds one by one.

Transactions are identified by ``txn_id``: a txn_id that appears more than once is one
transaction (its first row wins), as the idempotent online state sees it, and every row of it
gets that transaction's features.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from fraudstack.features.definitions import (
    CUSTOMER_HISTORY_WINDOWS,
    CUSTOMER_HORIZON_MS,
    CUSTOMER_WINDOWS,
    EPOCH_WEEKDAY,
    FEATURE_NAMES,
    LABEL_DELAY_MS,
    MS_PER_DAY,
    MS_PER_HOUR,
    NIGHT_LAST_HOUR,
    NO_HISTORY,
    OVER_PREV_MAX,
    SECONDS_SINCE_PREV,
    TERMINAL_DELAY_MS,
    TERMINAL_HORIZON_MS,
    TERMINAL_WINDOWS,
    WEEKEND_FIRST_WEEKDAY,
)

TRANSACTION_COLUMNS = ("txn_id", "ts", "customer_id", "terminal_id", "amount")
LABEL_COLUMNS = ("txn_id", "ts", "is_fraud", "reported_at")

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
_KEY_LIMIT = 2**62


def compute_features(
    transactions: pa.Table, labels: pa.Table | None = None, progress: bool = False
) -> pa.Table:
    """``txn_id`` and every feature (float64), one row per transaction, in input order.

    ``transactions`` needs the columns of a transaction event (``ts`` in epoch ms, or a
    timestamp). Frauds come from ``labels`` (the label events); without them, from an
    ``is_fraud`` column of ``transactions`` (the simulator's), taken as reported within the
    delay; without either, every terminal risk is 0. Raises ``ValueError`` for a missing column
    or a null value.
    """
    _require(transactions, TRANSACTION_COLUMNS, "transactions")
    if labels is not None:
        _require(labels, LABEL_COLUMNS, "labels")
    with _steps(progress, total=5) as step:
        txn_id = _column(transactions, "txn_id").cast(pa.string())
        ts = _epoch_ms(transactions, "ts")
        amount = _column(transactions, "amount").cast(pa.float64()).to_numpy()
        cents = np.rint(amount * 100).astype(np.int64)
        # dense rank in string order: ties at equal ts are broken by it, duplicates share it
        rank = pc.rank(txn_id, sort_keys="ascending", tiebreaker="dense").to_numpy()
        rank = rank.astype(np.int64) - 1
        first_row = _first_row_of_each_rank(rank)
        step("prepared")

        # from here on, arrays hold one entry per distinct transaction, in txn_id order
        ts_u = ts[first_row]
        customer = _codes(transactions, "customer_id")[first_row]
        terminal = _codes(transactions, "terminal_id")[first_row]
        columns: dict[str, Floats] = {}
        _transaction_columns(ts_u, cents[first_row], columns)
        _customer_columns(customer, ts_u, cents[first_row], columns)
        step("customer windows")

        fraud = _fraud_flags(transactions, labels, txn_id)[first_row]
        step("labels")
        _terminal_columns(terminal, ts_u, fraud, columns)
        step("terminal windows")

        arrays = [txn_id] + [pa.array(columns[name][rank]) for name in FEATURE_NAMES]
        table = pa.Table.from_arrays(arrays, names=["txn_id", *FEATURE_NAMES])
        step("table")
    return table


def _require(table: pa.Table, names: tuple[str, ...], what: str) -> None:
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
    for name in names:
        nulls = table.column(name).null_count
        if nulls:
            raise ValueError(f"{what}: column {name} has {nulls} null value(s)")


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _epoch_ms(table: pa.Table, name: str) -> Ints:
    column = _column(table, name)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("ms", tz=column.type.tz)).cast(pa.int64())
    elif not pa.types.is_integer(column.type):
        raise ValueError(f"column {name} must be epoch milliseconds or a timestamp")
    values: Ints = column.cast(pa.int64()).to_numpy()
    return values


def _codes(table: pa.Table, name: str) -> Ints:
    """A dense integer code per distinct entity id."""
    encoded = pc.dictionary_encode(_column(table, name))
    codes: Ints = encoded.indices.to_numpy().astype(np.int64)
    return codes


def _first_row_of_each_rank(rank: Ints) -> Ints:
    order = np.argsort(rank, kind="stable")
    sorted_rank = rank[order]
    starts = np.flatnonzero(np.diff(sorted_rank, prepend=-1))
    first: Ints = order[starts]
    return first


def _fraud_flags(
    transactions: pa.Table, labels: pa.Table | None, txn_id: pa.Array
) -> npt.NDArray[np.bool_]:
    if labels is not None:
        ts = _epoch_ms(labels, "ts")
        reported_at = _epoch_ms(labels, "reported_at")
        is_fraud = _column(labels, "is_fraud").cast(pa.bool_()).to_numpy(zero_copy_only=False)
        counts = is_fraud & (reported_at <= ts + LABEL_DELAY_MS)
        fraud_ids = _column(labels, "txn_id").cast(pa.string()).filter(pa.array(counts))
        flags = pc.is_in(txn_id, value_set=fraud_ids)
    elif "is_fraud" in transactions.column_names:
        flags = pc.fill_null(_column(transactions, "is_fraud").cast(pa.bool_()), False)
    else:
        return np.zeros(len(txn_id), dtype=np.bool_)
    result: npt.NDArray[np.bool_] = flags.to_numpy(zero_copy_only=False)
    return result


def _composite_keys(entity: Ints, ts: Ints, reach_ms: int) -> tuple[Ints, int]:
    """``entity * stride + (ts - origin)``, with room below each entity's first event."""
    if len(ts) == 0:
        return ts.copy(), 1
    origin = int(ts.min()) - reach_ms
    stride = int(ts.max()) - origin + 1
    if (int(entity.max()) + 1) * stride >= _KEY_LIMIT:
        raise ValueError("time span times number of entities too large for 64-bit window keys")
    keys: Ints = entity * stride + (ts - origin)
    return keys, stride


def _transaction_columns(ts: Ints, cents: Ints, out: dict[str, Floats]) -> None:
    day, ms_of_day = np.divmod(ts, MS_PER_DAY)
    out["amount"] = cents / 100.0
    weekend = (day + EPOCH_WEEKDAY) % 7 >= WEEKEND_FIRST_WEEKDAY
    out["tx_during_weekend"] = weekend.astype(np.float64)
    out["tx_during_night"] = (ms_of_day // MS_PER_HOUR <= NIGHT_LAST_HOUR).astype(np.float64)


def _customer_columns(customer: Ints, ts: Ints, cents: Ints, out: dict[str, Floats]) -> None:
    keys, _ = _composite_keys(customer, ts, CUSTOMER_HORIZON_MS)
    # stable: equal keys (same customer, same ms) stay in txn_id order
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    sorted_cents = cents[order]
    cumulative = np.concatenate(([0], np.cumsum(sorted_cents)))
    position = np.arange(len(order))
    starts: list[Ints] = []
    for count_name, amount_name, window_ms, is_mean in CUSTOMER_WINDOWS:
        start = np.searchsorted(sorted_keys, sorted_keys - window_ms, side="right")
        count = (position - start + 1).astype(np.float64)
        total = (cumulative[position + 1] - cumulative[start]).astype(np.float64)
        amount = total / count / 100.0 if is_mean else total / 100.0
        out[count_name] = _unsort(count, order)
        out[amount_name] = _unsort(amount, order)
        starts.append(start)
    history = _history_columns(sorted_keys, sorted_cents, cumulative, starts)
    for name, values in history.items():
        out[name] = _unsort(values, order)


def _history_columns(
    sorted_keys: Ints, cents: Ints, cumulative: Ints, starts: list[Ints]
) -> dict[str, Floats]:
    """The amount against the customer's history (see :mod:`.definitions`), rows in key order;
    ``starts`` are the first row of each window of :data:`CUSTOMER_WINDOWS`."""
    position = np.arange(len(cents))
    start_30d = starts[len(CUSTOMER_HISTORY_WINDOWS) - 1]
    whole = _whole_numbers(cents, position - start_30d)
    big_cents: npt.NDArray[Any] = cents.astype(whole)
    squares: npt.NDArray[Any] = np.concatenate(([0], np.cumsum(big_cents * big_cents)))
    squares = squares.astype(whole)
    out: dict[str, Floats] = {}
    # the history windows are the first (day) windows of CUSTOMER_WINDOWS, in the same order
    for (over_prev, zscore, over_avg), start in zip(CUSTOMER_HISTORY_WINDOWS, starts, strict=False):
        count: npt.NDArray[Any] = (position - start).astype(whole)
        total: npt.NDArray[Any] = (cumulative[position] - cumulative[start]).astype(whole)
        out[over_prev] = _ratio(big_cents * count, total)
        out[over_avg] = _ratio(big_cents * (count + 1), total + big_cents)
        if zscore is not None:
            sum_squares = squares[position] - squares[start]
            out[zscore] = _zscore(big_cents, count, total, sum_squares)
    has_previous = start_30d < position
    since = np.full(len(cents), NO_HISTORY)
    previous = position[has_previous] - 1
    since[has_previous] = (sorted_keys[has_previous] - sorted_keys[previous]).astype(
        np.float64
    ) / 1000.0
    out[SECONDS_SINCE_PREV] = since
    largest = _range_max(cents, start_30d, position)
    out[OVER_PREV_MAX] = np.where(has_previous, _ratio(big_cents, largest), NO_HISTORY)
    return out


def _whole_numbers(cents: Ints, counts: Ints) -> type:
    """int64 when ``count * sum of squares`` cannot overflow it, else Python ints (object
    arrays: slow, but exact as the online path's Python ints are)."""
    if len(cents) == 0:
        return np.int64
    largest = float(np.max(np.abs(cents))) ** 2 * (float(np.max(counts)) + 1) ** 2
    return np.int64 if largest < 2.0**62 else object


def _ratio(numerator: npt.NDArray[Any], denominator: npt.NDArray[Any]) -> Floats:
    """``numerator / denominator`` (each a float64 first), -1.0 where the denominator is not
    positive."""
    top = numerator.astype(np.float64)
    bottom = denominator.astype(np.float64)
    result: Floats = np.full(len(top), NO_HISTORY)
    np.divide(top, bottom, out=result, where=denominator > 0)
    return result


def _zscore(
    cents: npt.NDArray[Any],
    count: npt.NDArray[Any],
    total: npt.NDArray[Any],
    squares: npt.NDArray[Any],
) -> Floats:
    spread = count * squares - total * total
    result: Floats = np.where(count > 0, 0.0, NO_HISTORY)
    varied = spread > 0
    numerator = (cents * count - total)[varied].astype(np.float64)
    result[varied] = numerator / np.sqrt(spread[varied].astype(np.float64))
    return result


def _range_max(values: Ints, start: Ints, end: Ints) -> Ints:
    """``max(values[start[i]:end[i]])`` for every i (0 for an empty range), by a sparse table
    built one level at a time: level k holds the max of each run of 2**k values, and a range of
    length L is the max of two (overlapping) runs of the largest 2**k <= L."""
    length = end - start
    result = np.zeros(len(values), dtype=values.dtype)
    level = values.copy()
    size = 1
    needed = int(length.max()) if len(length) else 0
    while size <= needed:
        asked = (length >= size) & (length < 2 * size)
        if asked.any():
            result[asked] = np.maximum(level[start[asked]], level[end[asked] - size])
        if 2 * size <= needed:
            level = np.maximum(level[:-size], level[size:]) if size < len(level) else level[:0]
        size *= 2
    return result


def _terminal_columns(
    terminal: Ints, ts: Ints, fraud: npt.NDArray[np.bool_], out: dict[str, Floats]
) -> None:
    keys, _ = _composite_keys(terminal, ts, TERMINAL_HORIZON_MS)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cumulative = np.concatenate(([0], np.cumsum(fraud[order], dtype=np.int64)))
    end = np.searchsorted(sorted_keys, sorted_keys - TERMINAL_DELAY_MS, side="right")
    for count_name, risk_name, window_ms in TERMINAL_WINDOWS:
        reach_ms = TERMINAL_DELAY_MS + window_ms
        start = np.searchsorted(sorted_keys, sorted_keys - reach_ms, side="right")
        count = (end - start).astype(np.float64)
        frauds = (cumulative[end] - cumulative[start]).astype(np.float64)
        risk = np.divide(frauds, count, out=np.zeros_like(count), where=count > 0)
        out[count_name] = _unsort(count, order)
        out[risk_name] = _unsort(risk, order)


def _unsort(values: Floats, order: npt.NDArray[np.intp]) -> Floats:
    result = np.empty_like(values)
    result[order] = values
    return result


@contextmanager
def _steps(progress: bool, total: int) -> Iterator[Callable[[str], None]]:
    if not progress:
        yield _no_step
        return
    from tqdm import tqdm  # only when asked: the feature code itself needs no terminal

    with tqdm(total=total, desc="features", unit="step", file=sys.stderr) as bar:

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        yield step


def _no_step(name: str) -> None:
    return None
