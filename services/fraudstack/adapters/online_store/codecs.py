"""Values of the online store as bytes or text, and back (the layout is :mod:`.layout`'s).

Redis answers bytes (redis-py, hiredis) and code builds text; the parsers take either. The
feature code in :mod:`fraudstack.features` never sees a byte.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from fraudstack.adapters.online_store.layout import (
    CUSTOMER_FEATURES_FIELD,
    EVENT_PREFIX,
    EVENT_TS_FIELD,
    LAST_TXN_FIELD,
    UPDATED_AT_FIELD,
)
from fraudstack.features.definitions import CUSTOMER_FEATURES
from fraudstack.features.online import (
    CustomerHistory,
    customer_features,
    terminal_features_from_counts,
)

HashFields = Mapping[Any, Any]
"""A hash as redis-py or hiredis returns it (bytes) or as code builds it (text)."""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


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
        txn_id, ts_ms, cents, terminal_id = _text(raw).split(":", 3)
        return cls(txn_id, int(ts_ms), int(cents), terminal_id)


@dataclass(frozen=True, slots=True)
class TerminalSnapshot:
    """The terminal windows of one transaction as whole numbers (events, frauds per window; see
    :func:`~fraudstack.features.online.terminal_counts`), counted when the terminal's write
    counter stood at ``seq``; no counts: stale, the reader counts on the terminal instead."""

    txn_id: str
    ts_ms: int
    seq: int
    counts: tuple[int, ...]

    def encode(self) -> str:
        return ":".join((self.txn_id, str(self.ts_ms), str(self.seq), *map(str, self.counts)))

    @classmethod
    def decode(cls, raw: bytes | str) -> TerminalSnapshot:
        txn_id, ts_ms, seq, *counts = _text(raw).split(":")
        return cls(txn_id, int(ts_ms), int(seq), tuple(map(int, counts)))


def snapshot_features(raw: bytes | str | None, txn_id: str) -> dict[str, float] | None:
    """The terminal features stored for transaction ``txn_id``; None when the stored snapshot
    is missing, stale or belongs to another transaction."""
    if raw is None:
        return None
    try:
        snapshot = TerminalSnapshot.decode(raw)
        if snapshot.txn_id != txn_id or not snapshot.counts:  # another one's, or stale
            return None
        return terminal_features_from_counts(snapshot.counts)
    except ValueError:  # a layout this code does not know (more windows, say): not used
        return None


#: The packed customer features: one little-endian double per name, in CUSTOMER_FEATURES order.
_PACKED_FEATURES: Final = struct.Struct(f"<{len(CUSTOMER_FEATURES)}d")


def pack_customer_features(features: Mapping[str, float], txn_id: str) -> bytes:
    """A transaction's customer features as the ``_customer`` field stores them: the doubles,
    then the transaction's id, so a reader can tell them from another transaction's (a hash
    whose ``_last_txn`` an older writer moved on without them)."""
    return _PACKED_FEATURES.pack(*[features[name] for name in CUSTOMER_FEATURES]) + txn_id.encode()


def unpack_customer_features(raw: bytes | None, txn_id: str) -> dict[str, float] | None:
    """The customer features packed for transaction ``txn_id``; None when the field is missing,
    another transaction's, or of another feature set (another length). One ``unpack`` of exact
    doubles: the read ``GET /predict`` makes on every request, with no text to parse."""
    if raw is None or raw[_PACKED_FEATURES.size :] != txn_id.encode():
        return None
    return dict(zip(CUSTOMER_FEATURES, _PACKED_FEATURES.unpack_from(raw), strict=True))


def customer_event_value(ts_ms: int, amount_cents: int) -> str:
    return f"{ts_ms}:{amount_cents}"


def customer_history_fields(history: CustomerHistory) -> dict[str, str]:
    """The hash fields of every event of a customer's history."""
    return {
        EVENT_PREFIX + txn_id: customer_event_value(ts_ms, cents)
        for ts_ms, txn_id, cents in zip(
            history.ts, history.txn_ids, history.amounts_cents, strict=True
        )
    }


def customer_history(fields: HashFields) -> CustomerHistory:
    """A customer's history from its hash (bytes or text); other fields are ignored."""
    if not fields:
        return CustomerHistory()
    if isinstance(next(iter(fields)), bytes):
        raw = cast("Mapping[bytes, bytes]", fields)
        prefix = EVENT_PREFIX.encode()
        keys = [key for key in raw if key[:2] == prefix]
        # one decode of the joined values instead of one per field
        values = b"\n".join([raw[key] for key in keys]).decode().split("\n") if keys else []
        txn_ids = [key[2:].decode() for key in keys]
    else:
        text = cast("Mapping[str, str]", fields)
        keys_text = [key for key in text if key[:2] == EVENT_PREFIX]
        txn_ids, values = [key[2:] for key in keys_text], [text[key] for key in keys_text]
    numbers = list(map(int, ":".join(values).split(":"))) if values else []
    if len(numbers) != 2 * len(values):
        raise ValueError("malformed customer event field: expected '<int>:<int>' values")
    return CustomerHistory.from_events(txn_ids, numbers[0::2], numbers[1::2])


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    history: CustomerHistory
    last: LastTransaction | None
    event_ts_ms: int | None


def customer_record(fields: HashFields) -> CustomerRecord | None:
    """Parse one customer hash; None when the customer is unknown (empty hash)."""
    if not fields:
        return None
    raw_last = fields.get(LAST_TXN_FIELD.encode(), fields.get(LAST_TXN_FIELD))
    raw_event_ts = fields.get(EVENT_TS_FIELD.encode(), fields.get(EVENT_TS_FIELD))
    return CustomerRecord(
        history=customer_history(fields),
        last=LastTransaction.decode(raw_last) if raw_last is not None else None,
        event_ts_ms=int(raw_event_ts) if raw_event_ts is not None else None,
    )


def customer_summary_fields(
    history: CustomerHistory, last: LastTransaction, now_ms: int
) -> dict[str, bytes | str | int]:
    """A customer hash's fields besides its events: the newest transaction, its customer
    features (finished at that transaction's time, packed) and the bookkeeping fields. Its
    transaction features are not stored: they are its amount and time, in ``_last_txn``."""
    features = customer_features(history, last.txn_id, last.ts_ms, last.amount_cents)
    return {
        LAST_TXN_FIELD: last.encode(),
        CUSTOMER_FEATURES_FIELD: pack_customer_features(features, last.txn_id),
        EVENT_TS_FIELD: last.ts_ms,
        UPDATED_AT_FIELD: now_ms,
    }
