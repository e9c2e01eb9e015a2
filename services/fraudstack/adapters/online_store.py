"""The Redis online store: one HASH per entity, windows finished at read time.

Layout (hash tags keep each entity's key in one Redis Cluster slot; every command and script
touches exactly one key, so the store works unchanged on Redis Cluster)::

    fs:{customer:<id>}                       fs:{terminal:<id>}
      e:<txn_id>  "<ts_ms>:<amount_cents>"     e:<txn_id>  "<ts_ms>:<customer_id>"
      <feature>   value of the customer's      f:<txn_id>  "<ts_ms>:<reported_at_ms>"  (frauds)
                  newest transaction           _event_ts   newest event time (ms)
      _last_txn   "<txn_id>:<ts_ms>:<cents>    _seq        write counter (one per script call)
                   :<terminal_id>"             _updated_at when the hash was last written (ms)
                                               _pruned_at  the last prune's cut-off (ms)
                                               _dropped    newest time a prune deleted (ms)
      _terminal   "<txn_id>:<ts_ms>:<seq>:<events>:<frauds>..." per terminal window, of the newest
                  transaction's terminal (a snapshot, see below)
      _event_ts   newest event time (ms)
      _updated_at when the hash was last written (ms)

The ``e:``/``f:`` fields are the finest time tiles: one per event, kept for as long as a window
can reach back (customers 30 days, terminals 37 days, plus the allowed lateness). Readers rebuild
the histories with :mod:`fraudstack.features.online` and compute every window exactly at the
transaction's own time, so a feature never carries what fell out of its window since the last
write. Each key has a TTL of its horizon plus a margin: an entity that stops transacting leaves.

What ``GET /predict`` answers, the features of the customer's newest transaction, is stored in
the customer's hash alone, so that one ``HMGET`` reads it: the customer windows (finished at that
transaction's time) and ``_terminal``, its terminal windows as whole numbers. The aggregator
counts those on the terminal exactly as the write that added the transaction left it, and again
whenever a later write to the terminal (a late event or fraud label) can change them; the
terminal's ``_seq`` at counting time orders the snapshots, so an older count never replaces a
newer one (:mod:`fraudstack.aggregate.processor`). A snapshot names its transaction: one that is
not the customer's ``_last_txn`` is not used, and the reader falls back to the terminal's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fraudstack.errors import StoreUnavailable
from fraudstack.features.online import (
    CustomerHistory,
    TerminalHistory,
    customer_features,
    terminal_features_from_counts,
    transaction_features,
)

LAST_TXN_FIELD = "_last_txn"
TERMINAL_SNAPSHOT_FIELD = "_terminal"
EVENT_TS_FIELD = "_event_ts"
UPDATED_AT_FIELD = "_updated_at"
#: A terminal's last prune cut-off, and the newest time of an event or label any prune deleted.
PRUNED_AT_FIELD = "_pruned_at"
DROPPED_FIELD = "_dropped"


def customer_key(customer_id: str) -> str:
    return f"fs:{{customer:{customer_id}}}"


def terminal_key(terminal_id: str) -> str:
    return f"fs:{{terminal:{terminal_id}}}"


def watermarks_key(transactions_topic: str) -> str:
    """The hash of each partition's newest event time, as the aggregators have read it."""
    return f"fs:{{watermarks:{transactions_topic}}}"


@dataclass(frozen=True, slots=True)
class LastTransaction:
    """The newest transaction the store has for a customer."""

    txn_id: str
    ts_ms: int
    amount_cents: int
    terminal_id: str

    def encode(self) -> str:
        return f"{self.txn_id}:{self.ts_ms}:{self.amount_cents}:{self.terminal_id}"

    @classmethod
    def decode(cls, raw: bytes | str) -> LastTransaction:
        text = raw.decode() if isinstance(raw, bytes) else raw
        txn_id, ts_ms, cents, terminal_id = text.split(":", 3)
        return cls(txn_id, int(ts_ms), int(cents), terminal_id)


@dataclass(frozen=True, slots=True)
class TerminalSnapshot:
    """The terminal windows of one transaction as whole numbers (events, frauds per window; see
    :func:`~fraudstack.features.online.terminal_counts`), counted when the terminal's write
    counter stood at ``seq``; no counts: stale, the reader counts from the terminal's events."""

    txn_id: str
    ts_ms: int
    seq: int
    counts: tuple[int, ...]

    def encode(self) -> str:
        return ":".join((self.txn_id, str(self.ts_ms), str(self.seq), *map(str, self.counts)))

    @classmethod
    def decode(cls, raw: bytes | str) -> TerminalSnapshot:
        text = raw.decode() if isinstance(raw, bytes) else raw
        txn_id, ts_ms, seq, *counts = text.split(":")
        return cls(txn_id, int(ts_ms), int(seq), tuple(map(int, counts)))


def snapshot_features(raw: bytes | str | None, txn_id: str) -> dict[str, float] | None:
    """The terminal features stored for transaction ``txn_id``; None when the stored snapshot
    is missing or belongs to another transaction."""
    if raw is None:
        return None
    try:
        snapshot = TerminalSnapshot.decode(raw)
        if snapshot.txn_id != txn_id or not snapshot.counts:  # another one's, or stale
            return None
        return terminal_features_from_counts(snapshot.counts)
    except ValueError:  # a layout this code does not know (more windows, say): not used
        return None


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    history: CustomerHistory
    last: LastTransaction | None
    event_ts_ms: int | None


HashFields = Mapping[Any, Any]
"""A hash as redis-py returns it (bytes) or as code builds it (text)."""


def _event_ts(fields: HashFields) -> int | None:
    raw = fields.get(EVENT_TS_FIELD.encode())
    return int(raw) if raw is not None else None


def customer_record(fields: HashFields) -> CustomerRecord | None:
    """Parse one customer hash; None when the customer is unknown (empty hash)."""
    if not fields:
        return None
    raw_last = fields.get(LAST_TXN_FIELD.encode())
    return CustomerRecord(
        history=CustomerHistory.from_fields(fields),
        last=LastTransaction.decode(raw_last) if raw_last is not None else None,
        event_ts_ms=_event_ts(fields),
    )


class OnlineStore:
    """Reads of the online store, for the inference service and the consistency check.

    Every Redis error is mapped to :class:`~fraudstack.errors.StoreUnavailable` here, at the
    boundary, so callers handle one exception.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str, **options: object) -> OnlineStore:
        return cls(aioredis.Redis.from_url(url, **options))  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.client.aclose()

    async def read_for_transaction(
        self, customer_id: str, terminal_id: str
    ) -> tuple[CustomerRecord | None, TerminalHistory]:
        """Both entities of a transaction in ONE round trip (a pipeline of two HGETALLs)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(customer_key(customer_id))
                pipe.hgetall(terminal_key(terminal_id))
                customer_fields, terminal_fields = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"online store unreachable: {exc}") from exc
        return customer_record(customer_fields), TerminalHistory.from_fields(terminal_fields)

    async def read_customer(self, customer_id: str) -> CustomerRecord | None:
        try:
            fields = await self.client.hgetall(customer_key(customer_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"online store unreachable: {exc}") from exc
        return customer_record(fields)

    async def read_terminal(self, terminal_id: str) -> TerminalHistory:
        try:
            fields = await self.client.hgetall(terminal_key(terminal_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"online store unreachable: {exc}") from exc
        return TerminalHistory.from_fields(fields)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False


# --- writing -------------------------------------------------------------------------------


def customer_summary_fields(
    history: CustomerHistory, last: LastTransaction, now_ms: int
) -> dict[str, str | int | float]:
    """A customer hash's fields besides its events: the newest transaction's features (finished
    at that transaction's time) and the bookkeeping fields."""
    fields: dict[str, str | int | float] = {}
    fields.update(transaction_features(last.ts_ms, last.amount_cents))
    fields.update(customer_features(history, last.txn_id, last.ts_ms, last.amount_cents))
    fields[LAST_TXN_FIELD] = last.encode()
    fields[EVENT_TS_FIELD] = last.ts_ms
    fields[UPDATED_AT_FIELD] = now_ms
    return fields


#: Keys live a little longer than the furthest window reaches back.
CUSTOMER_TTL_SECONDS = 32 * 86_400
TERMINAL_TTL_SECONDS = 39 * 86_400
