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

The store keeps these histories in its own layout (:mod:`fraudstack.adapters.online_store`);
nothing here knows a key, a field or a byte.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fraudstack.features.definitions import (
    CUSTOMER_FEATURES,
    CUSTOMER_HISTORY_WINDOWS,
    CUSTOMER_HORIZON_MS,
    CUSTOMER_WINDOWS,
    DEFAULT_ALLOWED_LATENESS_MS,
    EPOCH_WEEKDAY,
    FEATURE_NAMES,
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
    label_counts,
)

#: Before any prune nothing is refused for being old.
_NO_HORIZON = -(2**63)

# (count feature, risk feature, how far back from the transaction the window starts)
_TERMINAL_REACH: tuple[tuple[str, str, int], ...] = tuple(
    (count_name, risk_name, TERMINAL_DELAY_MS + window_ms)
    for count_name, risk_name, window_ms in TERMINAL_WINDOWS
)


def _insert_position(ts: list[int], txn_ids: list[str], ts_ms: int, txn_id: str) -> int:
    """Where ``(ts_ms, txn_id)`` goes to keep the lists sorted by ``(ts, txn_id)``."""
    position = bisect_right(ts, ts_ms)
    while position and ts[position - 1] == ts_ms and txn_ids[position - 1] > txn_id:
        position -= 1
    return position


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

    @classmethod
    def from_events(
        cls, txn_ids: Sequence[str], ts: Sequence[int], amounts_cents: Sequence[int]
    ) -> CustomerHistory:
        """A history of these events, in any order (duplicates of an id are not expected)."""
        history = cls()
        if txn_ids:
            # the store keeps small hashes in insertion order, so this sort is usually one pass
            rows = sorted(zip(ts, txn_ids, amounts_cents, strict=True))
            history.ts = [row[0] for row in rows]
            history.txn_ids = [row[1] for row in rows]
            history.amounts_cents = [row[2] for row in rows]
            history._known = set(history.txn_ids)
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
    """The customer windows of transaction ``txn_id`` at ``ts_ms``, and the amount against the
    customer's history in them.

    The transaction counts once whether or not it is in ``history`` yet (if it is, pass the
    ``ts_ms`` it was added with). Events of the history after ``(ts_ms, txn_id)`` are ignored,
    so features of a past transaction can be recomputed from a later state.
    """
    ts = history.ts
    amounts = history.amounts_cents
    end = _insert_position(ts, history.txn_ids, ts_ms, txn_id)
    # the previous events end at ``before``: the transaction itself, if stored, is at ``end - 1``
    before = end - 1 if txn_id in history._known else end
    if before < end:
        amount_cents = amounts[before]  # the stored event wins, as the table's first row does
    features: dict[str, float] = {}
    previous: list[tuple[int, int]] = []  # (count, cents) of the events before, per window
    for count_name, amount_name, window_ms, is_mean in CUSTOMER_WINDOWS:
        start = bisect_right(ts, ts_ms - window_ms, 0, end)
        count, cents = before - start, sum(amounts[start:before])
        features[count_name] = float(count + 1)
        total = cents + amount_cents
        features[amount_name] = total / (count + 1) / 100 if is_mean else total / 100
        previous.append((count, cents))
    # the history windows are the first (day) windows of CUSTOMER_WINDOWS, in the same order
    for (over_prev, zscore, over_avg), (count, cents) in zip(
        CUSTOMER_HISTORY_WINDOWS, previous, strict=False
    ):
        features[over_prev] = _ratio(amount_cents * count, cents)
        features[over_avg] = _ratio(amount_cents * (count + 1), cents + amount_cents)
        if zscore is not None:
            window = amounts[before - count : before]
            squares = sum(map(operator.mul, window, window))
            features[zscore] = _zscore(amount_cents, count, cents, squares)
    count_30d = previous[len(CUSTOMER_HISTORY_WINDOWS) - 1][0]
    if count_30d:
        features[SECONDS_SINCE_PREV] = float(ts_ms - ts[before - 1]) / 1000.0
        features[OVER_PREV_MAX] = _ratio(amount_cents, max(amounts[before - count_30d : before]))
    else:
        features[SECONDS_SINCE_PREV] = NO_HISTORY
        features[OVER_PREV_MAX] = NO_HISTORY
    return {name: features[name] for name in CUSTOMER_FEATURES}


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator`` as the table computes it (each a float64 first), or
    :data:`NO_HISTORY` when the denominator is not positive."""
    return float(numerator) / float(denominator) if denominator > 0 else NO_HISTORY


def _zscore(cents: int, count: int, total: int, squares: int) -> float:
    """``(c n - S) / sqrt(n Q - S^2)`` in whole numbers, as the table computes it."""
    if count == 0:
        return NO_HISTORY
    spread = count * squares - total * total
    if spread <= 0:
        return 0.0
    return float(cents * count - total) / math.sqrt(float(spread))


def terminal_features(history: TerminalHistory, ts_ms: int) -> dict[str, float]:
    """The terminal windows (delayed by 7 days) of a transaction at ``ts_ms``."""
    return terminal_features_from_counts(history_counts(history, ts_ms))


def history_counts(history: TerminalHistory, ts_ms: int) -> tuple[int, ...]:
    """:func:`terminal_counts` of a transaction at ``ts_ms`` from a terminal's history."""
    fraud_ts = [ts for ts, fraud in zip(history.ts, history.frauds, strict=True) if fraud]
    return terminal_counts(history.ts, fraud_ts, ts_ms)


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


def terminal_window_bounds(ts_ms: int) -> list[tuple[int, int]]:
    """Each terminal window of a transaction at ``ts_ms`` as ``(after, through)``: it holds the
    events with ``after < ts <= through``, in :data:`TERMINAL_WINDOWS` order (a store that keeps
    event times sorted counts a window with two searches)."""
    through = ts_ms - TERMINAL_DELAY_MS
    return [(ts_ms - reach_ms, through) for _, _, reach_ms in _TERMINAL_REACH]


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


def all_features(
    customer: CustomerHistory,
    terminal: TerminalHistory | Sequence[int],
    txn_id: str,
    ts_ms: int,
    amount_cents: int,
) -> dict[str, float]:
    """Every feature of one transaction, keys in :data:`FEATURE_NAMES` order; ``terminal`` is
    the terminal's history or its windows' counts at ``ts_ms`` (:func:`terminal_counts`, as the
    store counts them)."""
    features = transaction_features(ts_ms, amount_cents)
    features.update(customer_features(customer, txn_id, ts_ms, amount_cents))
    if isinstance(terminal, TerminalHistory):
        features.update(terminal_features(terminal, ts_ms))
    else:
        features.update(terminal_features_from_counts(terminal))
    return features


def feature_vector(features: Mapping[str, float]) -> list[float]:
    """The values in the model's order; a missing feature raises ``KeyError``."""
    return [features[name] for name in FEATURE_NAMES]
