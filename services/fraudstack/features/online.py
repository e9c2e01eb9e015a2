"""Per-entity state and feature functions for the stream and the inference service.

A :class:`CustomerHistory` holds one customer's events sorted by ``(ts, txn_id)``; a
:class:`TerminalHistory` holds one terminal's events sorted the same way plus the fraud labels
that count. Both are idempotent (adding an event or a label twice changes nothing) and
independent of arrival order, so an at-least-once stream that replays or reorders events ends
in the same state. The windows are those of :mod:`fraudstack.features.definitions`.

Bounded state: ``prune(now_ms)`` drops the customer events with ``ts <= now - 30 d - lateness``
and the terminal events and labels with ``ts <= now - 37 d - lateness``. After a prune, an event
at or before that cut-off is refused (``add`` returns False): its own windows could no longer be
computed and it is too old for any window still to come; the stream sends it to the dead-letter
topic as too late.

Storage layout, one Redis HASH per entity, one field per event (the storage layer owns the
keys; other fields such as ``_event_ts`` are ignored here):

==================  ========================  ==========================================
entity              field                     value
==================  ========================  ==========================================
customer            ``e:<txn_id>``            ``"<ts_ms>:<amount_cents>"``
terminal            ``e:<txn_id>``            ``"<ts_ms>:<customer_id>"``
terminal            ``f:<txn_id>``            ``"<ts_ms>:<reported_at_ms>"`` (frauds only)
==================  ========================  ==========================================
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from fraudstack.features.definitions import (
    CUSTOMER_HORIZON_MS,
    CUSTOMER_WINDOWS,
    DEFAULT_ALLOWED_LATENESS_MS,
    EPOCH_WEEKDAY,
    FEATURE_NAMES,
    MS_PER_DAY,
    MS_PER_HOUR,
    NIGHT_LAST_HOUR,
    TERMINAL_DELAY_MS,
    TERMINAL_HORIZON_MS,
    TERMINAL_WINDOWS,
    WEEKEND_FIRST_WEEKDAY,
    label_counts,
)

EVENT_PREFIX = "e:"
LABEL_PREFIX = "f:"
#: A Redis hash as redis-py returns it: all bytes, or all text with ``decode_responses``
#: (its stubs say ``bytes | str``; one hash mixing the two is not supported).
HashFields = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]
#: (event, label) field prefixes and the value separator, as text (False) and as bytes (True):
#: a hash is one or the other.
_PREFIXES: dict[bool, tuple[bytes | str, bytes | str, bytes | str]] = {
    False: (EVENT_PREFIX, LABEL_PREFIX, ":"),
    True: (EVENT_PREFIX.encode(), LABEL_PREFIX.encode(), b":"),
}
#: Before any prune nothing is refused for being old.
_NO_HORIZON = -(2**63)

# (count feature, risk feature, how far back from the transaction the window starts)
_TERMINAL_REACH: tuple[tuple[str, str, int], ...] = tuple(
    (count_name, risk_name, TERMINAL_DELAY_MS + window_ms)
    for count_name, risk_name, window_ms in TERMINAL_WINDOWS
)


def event_field(txn_id: str) -> str:
    """The hash field of one transaction (customer or terminal)."""
    return EVENT_PREFIX + txn_id


def label_field(txn_id: str) -> str:
    """The hash field of one fraud label (terminal only)."""
    return LABEL_PREFIX + txn_id


def customer_event_value(ts_ms: int, amount_cents: int) -> str:
    return f"{ts_ms}:{amount_cents}"


def terminal_event_value(ts_ms: int, customer_id: str) -> str:
    """The customer rides along so that a late event or label can find the customers whose
    stored terminal windows it changes (see :mod:`fraudstack.aggregate.processor`)."""
    return f"{ts_ms}:{customer_id}"


def label_value(ts_ms: int, reported_at_ms: int) -> str:
    return f"{ts_ms}:{reported_at_ms}"


def _insert_position(ts: list[int], txn_ids: list[str], ts_ms: int, txn_id: str) -> int:
    """Where ``(ts_ms, txn_id)`` goes to keep the lists sorted by ``(ts, txn_id)``."""
    position = bisect_right(ts, ts_ms)
    while position and ts[position - 1] == ts_ms and txn_ids[position - 1] > txn_id:
        position -= 1
    return position


def _select(fields: HashFields, prefix: str) -> tuple[list[str], list[str]]:
    """The txn_ids and values (as text) of the fields whose name starts with ``prefix``."""
    if not fields:
        return [], []
    if isinstance(next(iter(fields)), bytes):
        raw_prefix = prefix.encode()
        raw = cast("Mapping[bytes, bytes]", fields)
        keys = [key for key in raw if key[:2] == raw_prefix]
        # one decode of the joined values instead of one per field
        values = b"\n".join([raw[key] for key in keys]).decode().split("\n") if keys else []
        return [key[2:].decode() for key in keys], values
    text = cast("Mapping[str, str]", fields)
    keys_text = [key for key in text if key[:2] == prefix]
    return [key[2:] for key in keys_text], [text[key] for key in keys_text]


def _pairs(values: list[str], what: str) -> tuple[list[int], list[int]]:
    """``"<a>:<b>"`` values as two lists of ints; one join and split is the fast way."""
    numbers = list(map(int, ":".join(values).split(":"))) if values else []
    if len(numbers) != 2 * len(values):
        raise ValueError(f"malformed {what} field: expected '<int>:<int>' values")
    return numbers[0::2], numbers[1::2]


@dataclass(slots=True)
class _EventLog:
    """What both histories share: events sorted by ``(ts, txn_id)``, known ids, a horizon."""

    ts: list[int] = field(default_factory=list)
    txn_ids: list[str] = field(default_factory=list)
    #: Events at or before this time were pruned and are refused; not stored in the fields.
    horizon_ms: int = field(default=_NO_HORIZON, compare=False)
    _known: set[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._known = set(self.txn_ids)

    def __len__(self) -> int:
        return len(self.ts)

    def __contains__(self, txn_id: object) -> bool:
        return txn_id in self._known

    def _place(self, txn_id: str, ts_ms: int) -> int:
        """Insert the event's time and id; its position, or -1 (nothing changed) when the
        event is a duplicate or older than the horizon."""
        if txn_id in self._known or ts_ms <= self.horizon_ms:
            return -1
        ts = self.ts
        # the newest event, as a stream mostly brings them, goes last without a search
        position = (
            len(ts)
            if not ts or ts_ms > ts[-1]
            else _insert_position(ts, self.txn_ids, ts_ms, txn_id)
        )
        self.ts.insert(position, ts_ms)
        self.txn_ids.insert(position, txn_id)
        self._known.add(txn_id)
        return position

    def _prune_through(self, cutoff: int) -> list[str]:
        """Move the horizon to ``cutoff`` and drop the events at or before it; their ids."""
        if cutoff <= self.horizon_ms:
            return []
        self.horizon_ms = cutoff
        return self._drop_through(cutoff)

    def _drop_through(self, cutoff: int) -> list[str]:
        """Drop the events at or before ``cutoff`` (the horizon stays); their ids."""
        count = bisect_right(self.ts, cutoff)
        dropped = self.txn_ids[:count]
        if count:
            self._known.difference_update(dropped)
            del self.ts[:count], self.txn_ids[:count]
        return dropped


@dataclass(slots=True)
class CustomerHistory(_EventLog):
    """One customer's events, sorted by ``(ts, txn_id)``, as three parallel lists."""

    amounts_cents: list[int] = field(default_factory=list)

    def add(self, txn_id: str, ts_ms: int, amount_cents: int) -> bool:
        """Add one event; False (state unchanged) for a duplicate or a pruned-away time."""
        position = self._place(txn_id, ts_ms)
        if position < 0:
            return False
        self.amounts_cents.insert(position, amount_cents)
        return True

    def prune(
        self, now_ms: int, allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS
    ) -> list[str]:
        """Drop events no window of a transaction at ``now - lateness`` or later can need;
        return the ids dropped (the store deletes their fields)."""
        dropped = self._prune_through(now_ms - CUSTOMER_HORIZON_MS - allowed_lateness_ms)
        del self.amounts_cents[: len(dropped)]
        return dropped

    def to_fields(self) -> dict[str, str]:
        """The hash fields of every event (see the module docstring)."""
        return {
            EVENT_PREFIX + txn_id: f"{ts_ms}:{cents}"
            for ts_ms, txn_id, cents in zip(self.ts, self.txn_ids, self.amounts_cents, strict=True)
        }

    @classmethod
    def from_fields(
        cls,
        fields: HashFields,
    ) -> CustomerHistory:
        """Rebuild a history from hash fields (bytes or text); other fields are ignored."""
        txn_ids, values = _select(fields, EVENT_PREFIX)
        ts, cents = _pairs(values, "customer event")
        history = cls()
        if txn_ids:
            # Redis keeps small hashes in insertion order, so this sort is usually a single pass
            rows = sorted(zip(ts, txn_ids, cents, strict=True))
            history.ts = [row[0] for row in rows]
            history.txn_ids = [row[1] for row in rows]
            history.amounts_cents = [row[2] for row in rows]
            history._known = set(txn_ids)
        return history


@dataclass(slots=True)
class TerminalHistory(_EventLog):
    """One terminal's events, sorted by ``(ts, txn_id)``, with a fraud flag each, and labels.

    ``labels`` maps a txn_id to ``(ts_ms, reported_at_ms)`` for every fraud label that counts
    (see :func:`~fraudstack.features.definitions.label_counts`); a label may arrive before its
    transaction, and ``frauds[i]`` is 1 when ``txn_ids[i]`` has one. ``customers`` maps a txn_id
    to its customer, where known; the windows do not use it.
    """

    frauds: list[int] = field(default_factory=list)
    labels: dict[str, tuple[int, int]] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict, compare=False)

    def add(self, txn_id: str, ts_ms: int, customer_id: str = "") -> bool:
        """Add one event; False (state unchanged) for a duplicate or a pruned-away time."""
        position = self._place(txn_id, ts_ms)
        if position < 0:
            return False
        self.frauds.insert(position, 1 if txn_id in self.labels else 0)
        if customer_id:
            self.customers[txn_id] = customer_id
        return True

    def add_label(self, txn_id: str, is_fraud: bool, reported_at_ms: int, ts_ms: int) -> bool:
        """Record a chargeback; False (state unchanged) if it does not count or is known."""
        if (
            not label_counts(is_fraud, ts_ms, reported_at_ms)
            or txn_id in self.labels
            or ts_ms <= self.horizon_ms
        ):
            return False
        self.labels[txn_id] = (ts_ms, reported_at_ms)
        if txn_id in self._known:
            self.frauds[self.txn_ids.index(txn_id)] = 1
        return True

    def prune(self, now_ms: int, allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS) -> int:
        """Drop events and labels no window at ``now - lateness`` or later can need; the newest
        time dropped, as :meth:`drop_through` (the cut-off is the new :attr:`horizon_ms`)."""
        cutoff = now_ms - TERMINAL_HORIZON_MS - allowed_lateness_ms
        if cutoff <= self.horizon_ms:
            return 0
        self.horizon_ms = cutoff
        return self.drop_through(cutoff)

    def drop_through(self, cutoff: int) -> int:
        """Drop the events and labels at or before ``cutoff``, as the store's terminal script
        prunes (which refuses nothing later: neither does this); the newest time of an event or
        label dropped (0 when none was), which the script keeps in ``_dropped``."""
        count = bisect_right(self.ts, cutoff)
        newest = self.ts[count - 1] if count else 0
        dropped = self._drop_through(cutoff)
        del self.frauds[: len(dropped)]
        for txn_id in dropped:
            self.customers.pop(txn_id, None)
        for txn_id, (ts_ms, _) in list(self.labels.items()):
            if ts_ms <= cutoff:
                del self.labels[txn_id]
                newest = max(newest, ts_ms)
        return newest

    def to_fields(self) -> dict[str, str]:
        """The hash fields of every event and fraud label (see the module docstring)."""
        customers = self.customers
        fields = {
            EVENT_PREFIX + txn_id: terminal_event_value(ts_ms, customers.get(txn_id, ""))
            for ts_ms, txn_id in zip(self.ts, self.txn_ids, strict=True)
        }
        for txn_id, (ts_ms, reported_at_ms) in self.labels.items():
            fields[LABEL_PREFIX + txn_id] = f"{ts_ms}:{reported_at_ms}"
        return fields

    @classmethod
    def from_fields(
        cls,
        fields: HashFields,
    ) -> TerminalHistory:
        """Rebuild a history from hash fields (bytes or text); other fields are ignored."""
        history = cls()
        label_ids, label_values = _select(fields, LABEL_PREFIX)
        label_ts, reported = _pairs(label_values, "terminal label")
        for txn_id, ts_ms, reported_at_ms in zip(label_ids, label_ts, reported, strict=True):
            if label_counts(True, ts_ms, reported_at_ms):
                history.labels[txn_id] = (ts_ms, reported_at_ms)
        txn_ids, values = _select(fields, EVENT_PREFIX)
        if txn_ids:
            parts = [value.partition(":") for value in values]
            rows = sorted(zip((int(part[0]) for part in parts), txn_ids, strict=True))
            history.ts = [row[0] for row in rows]
            history.txn_ids = [row[1] for row in rows]
            labels = history.labels
            history.frauds = [1 if txn_id in labels else 0 for txn_id in history.txn_ids]
            history.customers = {
                txn_id: part[2] for txn_id, part in zip(txn_ids, parts, strict=True) if part[2]
            }
            history._known = set(txn_ids)
        return history


def transaction_features(ts_ms: int, amount_cents: int) -> dict[str, float]:
    """``amount``, ``tx_during_weekend`` and ``tx_during_night`` (UTC) of one transaction."""
    day, ms_of_day = divmod(ts_ms, MS_PER_DAY)
    return {
        "amount": amount_cents / 100,
        "tx_during_weekend": 1.0 if (day + EPOCH_WEEKDAY) % 7 >= WEEKEND_FIRST_WEEKDAY else 0.0,
        "tx_during_night": 1.0 if ms_of_day // MS_PER_HOUR <= NIGHT_LAST_HOUR else 0.0,
    }


def customer_features(
    history: CustomerHistory, txn_id: str, ts_ms: int, amount_cents: int
) -> dict[str, float]:
    """The customer windows of transaction ``txn_id`` at ``ts_ms``.

    The transaction counts once whether or not it is in ``history`` yet (if it is, pass the
    ``ts_ms`` it was added with). Events of the history after ``(ts_ms, txn_id)`` are ignored,
    so features of a past transaction can be recomputed from a later state.
    """
    ts = history.ts
    amounts = history.amounts_cents
    end = _insert_position(ts, history.txn_ids, ts_ms, txn_id)
    if txn_id in history._known:
        # already in the history: the slice below ends just past it
        own_count, own_cents = 0, 0
    else:
        own_count, own_cents = 1, amount_cents
    features: dict[str, float] = {}
    for count_name, amount_name, window_ms, is_mean in CUSTOMER_WINDOWS:
        start = bisect_right(ts, ts_ms - window_ms, 0, end)
        count = end - start + own_count
        cents = sum(amounts[start:end]) + own_cents
        features[count_name] = float(count)
        features[amount_name] = cents / count / 100 if is_mean else cents / 100
    return features


def terminal_features(history: TerminalHistory, ts_ms: int) -> dict[str, float]:
    """The terminal windows (delayed by 7 days) of a transaction at ``ts_ms``."""
    return terminal_features_from_counts(history_counts(history, ts_ms))


def history_counts(history: TerminalHistory, ts_ms: int) -> tuple[int, ...]:
    """:func:`terminal_counts` of a transaction at ``ts_ms`` from a terminal's history."""
    fraud_ts = [ts for ts, fraud in zip(history.ts, history.frauds, strict=True) if fraud]
    return terminal_counts(history.ts, fraud_ts, ts_ms)


def terminal_features_from_fields(fields: HashFields, ts_ms: int) -> dict[str, float]:
    """``terminal_features(TerminalHistory.from_fields(fields), ts_ms)`` without building the
    history: the request path reads a terminal once and needs only the times of its events and
    of its frauds (a quarter of the time, measured on 40-event terminals). The two agree on the
    fields the store writes; a malformed number raises ``ValueError`` in both, though not always
    for the same field, and some oddities one accepts the other refuses (a trailing newline, a
    non-ASCII digit)."""
    if not fields:
        return _terminal_windows([], [], ts_ms)
    raw = cast("Mapping[bytes | str, bytes | str]", fields)
    event, label, colon = _PREFIXES[isinstance(next(iter(raw)), bytes)]
    event_ts: list[int] = []
    labels: list[tuple[bytes | str, bytes | str]] = []
    for key, value in raw.items():
        tag = key[:2]
        if tag == event:
            event_ts.append(int(value.partition(colon)[0]))  # type: ignore[arg-type]
        elif tag == label:
            labels.append((key, value))
    fraud_ts: list[int] = []
    for key, value in labels:  # rare: frauds only
        label_ts, reported_at = _pairs([_text(value)], "terminal label")
        known = raw.get(event + key[2:])  # type: ignore[operator]
        if known is not None and label_counts(True, label_ts[0], reported_at[0]):
            fraud_ts.append(int(known.partition(colon)[0]))  # type: ignore[arg-type]
    event_ts.sort()
    fraud_ts.sort()
    return _terminal_windows(event_ts, fraud_ts, ts_ms)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def terminal_counts(event_ts: list[int], fraud_ts: list[int], ts_ms: int) -> tuple[int, ...]:
    """The terminal windows of a transaction at ``ts_ms`` as whole numbers: (events, frauds)
    per window of :data:`~fraudstack.features.definitions.TERMINAL_WINDOWS`, from the sorted
    times of a terminal's events and of its frauds. This is all a terminal window is; the
    store keeps these numbers for a customer's newest transaction (see
    :func:`terminal_features_from_counts`)."""
    newest = ts_ms - TERMINAL_DELAY_MS
    end = bisect_right(event_ts, newest)
    fraud_end = bisect_right(fraud_ts, newest)
    counts: list[int] = []
    for _, _, reach_ms in _TERMINAL_REACH:
        counts.append(end - bisect_right(event_ts, ts_ms - reach_ms, 0, end))
        counts.append(fraud_end - bisect_right(fraud_ts, ts_ms - reach_ms, 0, fraud_end))
    return tuple(counts)


def terminal_features_from_counts(counts: Sequence[int]) -> dict[str, float]:
    """The terminal features from :func:`terminal_counts`: each count, and each risk as
    ``frauds / count`` (0.0 for an empty window)."""
    if len(counts) != 2 * len(_TERMINAL_REACH):
        raise ValueError(f"expected {2 * len(_TERMINAL_REACH)} terminal counts, got {len(counts)}")
    features: dict[str, float] = {}
    for index, (count_name, risk_name, _) in enumerate(_TERMINAL_REACH):
        count, frauds = counts[2 * index], counts[2 * index + 1]
        features[count_name] = float(count)
        features[risk_name] = frauds / count if count else 0.0
    return features


def _terminal_windows(event_ts: list[int], fraud_ts: list[int], ts_ms: int) -> dict[str, float]:
    """The terminal windows from the sorted times of a terminal's events and of its frauds."""
    return terminal_features_from_counts(terminal_counts(event_ts, fraud_ts, ts_ms))


def all_features(
    customer: CustomerHistory,
    terminal: TerminalHistory | HashFields,
    txn_id: str,
    ts_ms: int,
    amount_cents: int,
) -> dict[str, float]:
    """Every feature of one transaction, keys in :data:`FEATURE_NAMES` order; ``terminal`` is
    the terminal's history or its hash fields as the store holds them (the request path's)."""
    features = transaction_features(ts_ms, amount_cents)
    features.update(customer_features(customer, txn_id, ts_ms, amount_cents))
    if isinstance(terminal, TerminalHistory):
        features.update(terminal_features(terminal, ts_ms))
    else:
        features.update(terminal_features_from_fields(terminal, ts_ms))
    return features


def feature_vector(features: Mapping[str, float]) -> list[float]:
    """The values in the model's order; a missing feature raises ``KeyError``."""
    return [features[name] for name in FEATURE_NAMES]
