"""A transaction's features from the online store, as the offline definition computes them.

The store's reads (:mod:`fraudstack.adapters.online_store.reader`) bring the stored state; every
window is finished here with the one feature code (:mod:`fraudstack.features.online`) at the
transaction's own time, so a value never carries what fell out of its window since the last
write:

* ``newest(customer)`` (``GET /predict``): the customer's newest transaction (``_last_txn``),
  in ONE round trip: one ``HMGET`` of its customer windows, finished at its own time when it
  was written, and of its terminal windows, counted by the aggregator when it reached its
  terminal and again whenever a late event or label changed them (the ``_terminal`` snapshot).
  A hash without those fields, or whose snapshot is of an earlier transaction (written between
  two commands of the aggregator's update) or stale, falls back to the customer's events and to
  a second round trip for the terminal's window counts (six ``ZCOUNT``, O(log n)). The store
  keeps a terminal's events for 37 days plus the allowed lateness behind the partitions' low
  watermark, so on that path the far end of a 30-day window of a transaction much older than
  its terminal's newest event may already be pruned and count short.
* ``transaction(txn)`` (``POST /v1/score``): the customer hash and the terminal's window counts
  at the transaction's time in ONE round trip, O(log n) in the terminal's events; the customer
  windows are computed from the customer's events with the transaction included. A customer the
  store has never seen is a first transaction, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from fraudstack.adapters.online_store.codecs import LastTransaction, snapshot_features
from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.errors import EntityNotFound
from fraudstack.events import Transaction
from fraudstack.features.online import (
    CustomerHistory,
    all_features,
    customer_features,
    terminal_features_from_counts,
    transaction_features,
)


@dataclass(frozen=True, slots=True)
class Scored:
    """What a request scores: the features by name and the age of the stored state."""

    features: dict[str, float]
    #: Newest event time (ms) in the customer's stored features; None for a new customer.
    event_ts_ms: int | None


class FeatureLookup:
    def __init__(self, link: RedisLink, require_ready: bool = True) -> None:
        """``require_ready``: answer StoreNotReady (503) from a store being rebuilt; only the
        consistency check, which compares a store as it is, reads without it."""
        self.link = link
        self.store = OnlineStoreReader(link, require_ready)

    async def newest(self, customer_id: str) -> tuple[LastTransaction, Scored]:
        """The customer's newest transaction and its features; EntityNotFound if none."""
        record = await self.store.newest(customer_id)
        if record is None:
            raise EntityNotFound(f"no stored transaction for customer {customer_id!r}")
        last = record.last
        features = transaction_features(last.ts_ms, last.amount_cents)
        if record.customer_features is None:
            history = await self._customer_history(customer_id)
            features.update(customer_features(history, last.txn_id, last.ts_ms, last.amount_cents))
        else:
            features.update(record.customer_features)
        terminal = snapshot_features(record.terminal_snapshot, last.txn_id)
        if terminal is None:
            counts = await self.store.terminal_counts(last.terminal_id, last.ts_ms)
            terminal = terminal_features_from_counts(counts)
        features.update(terminal)
        return last, Scored(features, record.event_ts_ms)

    async def transaction(self, txn: Transaction) -> Scored:
        """The features of ``txn`` at its own time, the transaction included."""
        record, counts = await self.store.for_transaction(txn.customer_id, txn.terminal_id, txn.ts)
        history = record.history if record is not None else CustomerHistory()
        features = all_features(history, counts, txn.txn_id, txn.ts, txn.amount_cents)
        return Scored(features, record.event_ts_ms if record is not None else None)

    async def _customer_history(self, customer_id: str) -> CustomerHistory:
        record = await self.store.customer(customer_id)
        if record is None:
            raise EntityNotFound(f"no stored transaction for customer {customer_id!r}")
        return record.history
