"""A transaction's features from the online store, as the offline definition computes them.

The layout is the store's (:mod:`fraudstack.adapters.online_store`), and every window is
finished here with the one feature code (:mod:`fraudstack.features.online`) at the transaction's
own time, so a value never carries what fell out of its window since the last write:

* ``newest(customer)`` (``GET /predict``): the customer's newest transaction (``_last_txn``),
  in ONE round trip: one ``HMGET`` of its customer windows, finished at its own time when it
  was written, and of its terminal windows, counted by the aggregator when it reached its
  terminal and again whenever a late event or label changed them (the ``_terminal`` snapshot,
  see :mod:`fraudstack.adapters.online_store`). A hash without those fields, or whose snapshot
  is of an earlier transaction (written between two commands of the aggregator's update) or
  stale, falls back to the customer's events and to a second round trip for the terminal's.
  The store keeps a terminal's events for 37 days plus the allowed lateness behind the
  partitions' low watermark, so on that path the far end of a 30-day window of a transaction
  much older than its terminal's newest event may already be pruned and count short.
* ``transaction(txn)`` (``POST /v1/score``): both hashes in ONE round trip (two ``HGETALL`` in
  one send); the customer windows are computed from the customer's events at the transaction's
  time with the transaction included, the terminal windows from the terminal's events and fraud
  labels. A customer the store has never seen is a first transaction, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from fraudstack.adapters.online_store import (
    EVENT_TS_FIELD,
    LAST_TXN_FIELD,
    TERMINAL_SNAPSHOT_FIELD,
    LastTransaction,
    customer_key,
    customer_record,
    snapshot_features,
    terminal_key,
)
from fraudstack.adapters.redis_link import RedisLink, bulk_string, command_head, hash_reply
from fraudstack.errors import EntityNotFound
from fraudstack.events import Transaction
from fraudstack.features.definitions import CUSTOMER_FEATURES
from fraudstack.features.online import (
    CustomerHistory,
    all_features,
    customer_features,
    terminal_features_from_fields,
    transaction_features,
)

_NEWEST_FIELDS = (LAST_TXN_FIELD, EVENT_TS_FIELD, TERMINAL_SNAPSHOT_FIELD, *CUSTOMER_FEATURES)
# the constant parts of "HMGET <key> <fields...>" and "HGETALL <key>", encoded once
_NEWEST_HEAD = command_head(len(_NEWEST_FIELDS) + 2) + bulk_string("HMGET")
_NEWEST_TAIL = b"".join(map(bulk_string, _NEWEST_FIELDS))
_HGETALL = command_head(2) + bulk_string("HGETALL")


@dataclass(frozen=True, slots=True)
class Scored:
    """What a request scores: the features by name and the age of the stored state."""

    features: dict[str, float]
    #: Newest event time (ms) in the customer's stored features; None for a new customer.
    event_ts_ms: int | None


class FeatureLookup:
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def newest(self, customer_id: str) -> tuple[LastTransaction, Scored]:
        """The customer's newest transaction and its features; EntityNotFound if none."""
        key = customer_key(customer_id)
        (values,) = await self.link.execute(_NEWEST_HEAD + bulk_string(key) + _NEWEST_TAIL)
        raw_last, raw_event_ts, raw_snapshot = values[0], values[1], values[2]
        if raw_last is None:
            raise EntityNotFound(f"no stored transaction for customer {customer_id!r}")
        last = LastTransaction.decode(raw_last)
        features = transaction_features(last.ts_ms, last.amount_cents)
        stored = values[3:]
        if None in stored:
            history = await self._customer_history(key, customer_id)
            features.update(customer_features(history, last.txn_id, last.ts_ms, last.amount_cents))
        else:
            for name, raw in zip(CUSTOMER_FEATURES, stored, strict=True):
                features[name] = float(raw)
        terminal = snapshot_features(raw_snapshot, last.txn_id)
        if terminal is None:
            (flat,) = await self.link.execute(
                _HGETALL + bulk_string(terminal_key(last.terminal_id))
            )
            terminal = terminal_features_from_fields(hash_reply(flat), last.ts_ms)
        features.update(terminal)
        event_ts = int(raw_event_ts) if raw_event_ts is not None else None
        return last, Scored(features, event_ts)

    async def transaction(self, txn: Transaction) -> Scored:
        """The features of ``txn`` at its own time, the transaction included."""
        customer_flat, terminal_flat = await self.link.execute(
            _HGETALL
            + bulk_string(customer_key(txn.customer_id))
            + _HGETALL
            + bulk_string(terminal_key(txn.terminal_id)),
            2,
        )
        record = customer_record(hash_reply(customer_flat))
        history = record.history if record is not None else CustomerHistory()
        terminal = hash_reply(terminal_flat)  # read as fields: no history to build
        features = all_features(history, terminal, txn.txn_id, txn.ts, txn.amount_cents)
        return Scored(features, record.event_ts_ms if record is not None else None)

    async def _customer_history(self, key: str, customer_id: str) -> CustomerHistory:
        (flat,) = await self.link.execute(_HGETALL + bulk_string(key))
        record = customer_record(hash_reply(flat))
        if record is None:
            raise EntityNotFound(f"no stored transaction for customer {customer_id!r}")
        return record.history
