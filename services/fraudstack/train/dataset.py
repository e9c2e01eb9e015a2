"""Point-in-time training sets: features as the stream computed them, labels as known then.

Features come from :func:`fraudstack.features.offline.compute_features`, the one shared feature
code, which gives every transaction the values the stream computed at that moment: a terminal
window only counts frauds whose label was reported within the 7-day delay, so nothing from the
future leaks in. The target of a transaction is whether a fraud label for it was known at
``labels_known_at`` (the time the model is trained).

Reading from the offline store, the events of the window are read together with the 37 days
before it (the furthest a terminal window reaches back), so the first transactions of the
window have complete windows too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from fraudstack.adapters.offline_store import EVENTS, LABEL_SCHEMA, LABELS, OfflineStore
from fraudstack.errors import StoreError
from fraudstack.features.definitions import FEATURE_NAMES, MS_PER_DAY, TERMINAL_HORIZON_MS
from fraudstack.features.offline import compute_features

TRANSACTION_COLUMNS = ["txn_id", "ts", "customer_id", "terminal_id", "amount"]
LABEL_COLUMNS = ["txn_id", "customer_id", "terminal_id", "ts", "is_fraud", "reported_at"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class LabelledSet:
    """Transactions with their feature matrix (columns in ``FEATURE_NAMES`` order) and target."""

    txn_id: npt.NDArray[np.object_]
    ts: Ints
    customer: Ints  # dense code per customer id: the "card" of Card Precision@k
    features: Floats
    is_fraud: Flags

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def day(self) -> Ints:
        days: Ints = self.ts // MS_PER_DAY
        return days

    @property
    def frauds(self) -> int:
        return int(self.is_fraud.sum())

    def select(self, mask: Flags | Ints) -> LabelledSet:
        return LabelledSet(
            self.txn_id[mask],
            self.ts[mask],
            self.customer[mask],
            self.features[mask],
            self.is_fraud[mask],
        )

    def window(self, start_ms: int, end_ms: int) -> LabelledSet:
        """The transactions with ``start_ms <= ts < end_ms``."""
        return self.select((self.ts >= start_ms) & (self.ts < end_ms))


def build(
    transactions: pa.Table,
    labels: pa.Table | None = None,
    labels_known_at_ms: int | None = None,
    progress: bool = False,
    timings: dict[str, float] | None = None,
) -> LabelledSet:
    """Features and targets of every transaction, one row per distinct ``txn_id``.

    Without ``labels``, the target is the ``is_fraud`` column of ``transactions`` (the
    simulator's ground truth) and frauds feed the terminal windows as reported in time.
    ``timings``, when given, receives ``offline_features_seconds``: the time spent in the
    shared feature code.
    """
    transactions = _first_of_each_txn_id(
        transactions.select([*TRANSACTION_COLUMNS, *(["is_fraud"] if labels is None else [])])
    )
    if labels is not None:
        labels = labels.select(LABEL_COLUMNS)
        if labels_known_at_ms is not None:
            labels = labels.filter(pc.field("reported_at") <= labels_known_at_ms)
    started = time.perf_counter()
    table = compute_features(transactions, labels, progress=progress)
    if timings is not None:
        timings["offline_features_seconds"] = time.perf_counter() - started
    txn_id = transactions.column("txn_id").combine_chunks()
    if labels is None:
        target = transactions.column("is_fraud").to_numpy(zero_copy_only=False).astype(bool)
    else:
        frauds = labels.filter(pc.field("is_fraud")).column("txn_id").combine_chunks()
        target = pc.is_in(txn_id, value_set=frauds).to_numpy(zero_copy_only=False)
    features = np.column_stack([table.column(name).to_numpy() for name in FEATURE_NAMES])
    customer = pc.dictionary_encode(transactions.column("customer_id").combine_chunks())
    return LabelledSet(
        txn_id=txn_id.to_numpy(zero_copy_only=False),
        ts=transactions.column("ts").to_numpy().astype(np.int64),
        customer=customer.indices.to_numpy().astype(np.int64),
        features=np.ascontiguousarray(features, dtype=np.float64),
        is_fraud=np.asarray(target, dtype=bool),
    )


def load_from_store(
    store: OfflineStore,
    start_ms: int,
    end_ms: int,
    labels_known_at_ms: int,
    progress: bool = False,
) -> LabelledSet:
    """The labelled transactions with ``start_ms <= ts < end_ms`` from the offline store."""
    history_start = start_ms - TERMINAL_HORIZON_MS
    events = store.read(EVENTS, history_start, end_ms, columns=TRANSACTION_COLUMNS)
    if events.num_rows == 0:
        raise StoreError(
            f"offline store {store.uri}: no events between {_day(history_start)} and "
            f"{_day(end_ms)} (run `fraudstack snapshot` first)"
        )
    labels = store.read(LABELS, history_start, labels_known_at_ms + 1, columns=LABEL_COLUMNS)
    if labels.num_rows == 0:
        labels = _NO_LABELS
    return build(events, labels, labels_known_at_ms, progress).window(start_ms, end_ms)


#: The store's label schema without the Kafka source columns, for a store with no labels yet.
_NO_LABELS = LABEL_SCHEMA.empty_table().select(LABEL_COLUMNS)


def _first_of_each_txn_id(table: pa.Table) -> pa.Table:
    """A transaction produced twice (an at-least-once producer retrying) is one transaction."""
    if table.num_rows == 0:
        return table
    txn_id = table.column("txn_id").combine_chunks()
    if len(pc.unique(txn_id)) == table.num_rows:
        return table
    rank = pc.rank(txn_id, sort_keys="ascending", tiebreaker="first").to_numpy()
    dense = pc.rank(txn_id, sort_keys="ascending", tiebreaker="dense").to_numpy()
    # the row whose rank is the smallest among rows sharing the same dense rank comes first
    order = np.argsort(rank)
    sorted_dense = dense[order]
    keep = order[np.flatnonzero(np.diff(sorted_dense, prepend=0))]
    return table.take(np.sort(keep))


def _day(epoch_ms: int) -> str:
    return str(np.datetime64(epoch_ms // MS_PER_DAY, "D"))
