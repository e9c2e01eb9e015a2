"""The online feature state and functions, on hand-made events with known answers."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from fraudstack.features import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    CustomerHistory,
    TerminalHistory,
    all_features,
    amount_to_cents,
    customer_features,
    feature_vector,
    terminal_counts,
    terminal_features,
    terminal_window_bounds,
    transaction_features,
)
from fraudstack.features.definitions import (
    CUSTOMER_HISTORY_WINDOWS,
    CUSTOMER_HORIZON_MS,
    CUSTOMER_WINDOWS,
    MS_PER_DAY,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    OVER_PREV_MAX,
    SECONDS_SINCE_PREV,
    TERMINAL_HORIZON_MS,
    TERMINAL_WINDOWS,
)

T = 1_700_000_000_000  # a Tuesday, 22:13:20 UTC


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_feature_names_and_version() -> None:
    assert len(FEATURE_NAMES) == 29 == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[:4] == (
        "amount",
        "tx_during_weekend",
        "tx_during_night",
        "customer_nb_tx_1d",
    )
    assert FEATURE_NAMES[-1] == "terminal_risk_30d"
    assert FEATURE_SET_VERSION.startswith("fs-")
    from_windows = [name for window in CUSTOMER_WINDOWS for name in window[:2]]
    from_windows += [name for window in CUSTOMER_HISTORY_WINDOWS for name in window if name]
    from_windows += [SECONDS_SINCE_PREV, OVER_PREV_MAX]
    from_windows += [name for window in TERMINAL_WINDOWS for name in window[:2]]
    assert list(FEATURE_NAMES) == ["amount", "tx_during_weekend", "tx_during_night", *from_windows]


@pytest.mark.parametrize(
    ("when", "weekend", "night"),
    [
        ("2018-04-01T12:00:00", 1.0, 0.0),  # Sunday
        ("2018-03-31T00:00:00", 1.0, 1.0),  # Saturday, midnight
        ("2018-04-02T06:59:59.999", 0.0, 1.0),  # Monday, last ms of hour 6
        ("2018-04-02T07:00:00", 0.0, 0.0),
        ("2018-04-06T23:59:59", 0.0, 0.0),  # Friday
        ("1969-12-28T03:00:00", 1.0, 1.0),  # Sunday before the epoch: negative ms
    ],
)
def test_transaction_features(when: str, weekend: float, night: float) -> None:
    features = transaction_features(ms(when), 12_345)
    assert features == {"amount": 123.45, "tx_during_weekend": weekend, "tx_during_night": night}


def test_amount_to_cents_rounds_half_to_even() -> None:
    assert amount_to_cents(12.34) == 1234
    assert amount_to_cents(0.125) == 12  # 12.5 cents exactly
    assert amount_to_cents(1e-9) == 0


def test_customer_windows_include_the_transaction_once() -> None:
    history = CustomerHistory()
    history.add("a", T - 2 * MS_PER_DAY, 1_000)
    history.add("b", T - 30 * MS_PER_MINUTE, 2_000)
    not_yet_added = customer_features(history, "c", T, 3_000)
    assert history.add("c", T, 3_000)
    added = customer_features(history, "c", T, 3_000)
    assert not_yet_added == added
    assert added["customer_nb_tx_10m"] == 1.0
    assert added["customer_amount_sum_10m"] == 30.0
    assert added["customer_nb_tx_1h"] == 2.0
    assert added["customer_amount_sum_1h"] == 50.0
    assert added["customer_nb_tx_1d"] == 2.0
    assert added["customer_avg_amount_1d"] == 5_000 / 2 / 100
    assert added["customer_nb_tx_7d"] == added["customer_nb_tx_30d"] == 3.0
    assert added["customer_avg_amount_30d"] == 6_000 / 3 / 100


def test_amount_against_the_customers_history() -> None:
    history = CustomerHistory()
    history.add("a", T - 10 * MS_PER_DAY, 1_000)  # in 30 d only
    history.add("b", T - 3 * MS_PER_DAY, 3_000)  # in 7 d and 30 d
    history.add("c", T - 2 * MS_PER_HOUR, 2_000)  # in every day window
    history.add("later", T + 1, 900_000)  # after the transaction: never counted
    features = customer_features(history, "x", T, 4_000)
    assert features["customer_amount_over_prev_avg_1d"] == 4_000 / 2_000
    assert features["customer_amount_over_prev_avg_7d"] == 4_000 / 2_500
    assert features["customer_amount_over_prev_avg_30d"] == 4_000 / 2_000
    assert features["customer_amount_over_avg_1d"] == 4_000 / 3_000
    assert features["customer_amount_over_avg_30d"] == 4_000 * 4 / 10_000
    # previous 7 d: 3,000 and 2,000, mean 2,500, population sd 500: z = 3
    assert features["customer_amount_zscore_prev_7d"] == 3.0
    mean, sd = 2_000, (2 / 3) ** 0.5 * 1_000
    assert features["customer_amount_zscore_prev_30d"] == pytest.approx((4_000 - mean) / sd)
    assert features[SECONDS_SINCE_PREV] == 2 * 3_600.0
    assert features[OVER_PREV_MAX] == 4_000 / 3_000
    # the transaction itself in the history changes nothing
    assert history.add("x", T, 4_000)
    assert customer_features(history, "x", T, 4_000) == features


def test_history_features_without_history() -> None:
    first = customer_features(CustomerHistory(), "x", T, 4_000)
    for name in (
        "customer_amount_over_prev_avg_1d",
        "customer_amount_over_prev_avg_30d",
        "customer_amount_zscore_prev_7d",
        SECONDS_SINCE_PREV,
        OVER_PREV_MAX,
    ):
        assert first[name] == -1.0, name
    assert first["customer_amount_over_avg_30d"] == 1.0  # the mean is its own amount
    history = CustomerHistory()
    history.add("old", T - 30 * MS_PER_DAY, 5_000)  # just outside every window
    history.add("zero", T - MS_PER_DAY + 1, 0)
    history.add("zero2", T - 1, 0)
    features = customer_features(history, "x", T, 4_000)
    assert features["customer_amount_over_prev_avg_1d"] == -1.0  # previous mean 0
    assert features["customer_amount_zscore_prev_30d"] == 0.0  # previous amounts all equal
    assert features[SECONDS_SINCE_PREV] == 0.001
    assert features[OVER_PREV_MAX] == -1.0  # the largest previous amount is 0
    assert customer_features(history, "y", T, 0)["customer_amount_over_avg_1d"] == -1.0


@pytest.mark.parametrize(
    ("suffix", "window_ms"),
    [
        ("10m", 10 * MS_PER_MINUTE),
        ("1h", MS_PER_HOUR),
        ("1d", MS_PER_DAY),
        ("7d", 7 * MS_PER_DAY),
        ("30d", 30 * MS_PER_DAY),
    ],
)
def test_customer_window_edges(suffix: str, window_ms: int) -> None:
    history = CustomerHistory()
    history.add("at-edge", T - window_ms, 100)  # (t - w, t]: excluded
    history.add("inside", T - window_ms + 1, 200)
    history.add("later", T + 1, 400)  # after the transaction: never counted
    features = customer_features(history, "x", T, 800)
    assert features[f"customer_nb_tx_{suffix}"] == 2.0


def test_ties_at_equal_ts_are_ordered_by_txn_id() -> None:
    history = CustomerHistory()
    for txn_id in ["9", "10", "11"]:  # string order: "10" < "11" < "9"
        history.add(txn_id, T, 100)
    counts = {
        txn_id: customer_features(history, txn_id, T, 100)["customer_nb_tx_10m"]
        for txn_id in ["10", "11", "9"]
    }
    assert counts == {"10": 1.0, "11": 2.0, "9": 3.0}
    assert history.txn_ids == ["10", "11", "9"]
    # a transaction not yet in the history sits where its txn_id sorts
    assert customer_features(history, "0", T, 100)["customer_nb_tx_10m"] == 1.0


def test_arrival_order_and_duplicates_do_not_matter() -> None:
    events = [(str(i), T + (i // 3) * MS_PER_MINUTE, 100 + i) for i in range(40)]
    ordered = CustomerHistory()
    for event in events:
        assert ordered.add(*event)
    shuffled = CustomerHistory()
    replay = events + random.Random(1).sample(events, 15)
    random.Random(2).shuffle(replay)
    added = [shuffled.add(*event) for event in replay]
    assert sum(added) == len(events)
    assert shuffled == ordered


def test_prune_keeps_the_horizon_and_refuses_older_events() -> None:
    history = CustomerHistory()
    lateness = MS_PER_HOUR
    cutoff = T - CUSTOMER_HORIZON_MS - lateness
    history.add("old", cutoff, 100)
    history.add("kept", cutoff + 1, 200)
    history.prune(T, allowed_lateness_ms=lateness)
    assert history.txn_ids == ["kept"]
    assert "old" not in history
    assert not history.add("old", cutoff, 100)  # a replay of a pruned event stays out
    assert history.add("late-but-allowed", T - lateness, 300)
    history.prune(T - MS_PER_DAY)  # time never runs backwards for a prune
    assert len(history) == 2


def test_terminal_windows_are_delayed_by_seven_days() -> None:
    history = TerminalHistory()
    history.add("too-recent", T - 7 * MS_PER_DAY + 1)
    history.add("newest-counted", T - 7 * MS_PER_DAY)
    history.add("oldest-1d", T - 8 * MS_PER_DAY + 1)
    history.add("outside-1d", T - 8 * MS_PER_DAY)
    history.add("outside-30d", T - 37 * MS_PER_DAY)
    features = terminal_features(history, T)
    assert features["terminal_nb_tx_1d"] == 2.0
    assert features["terminal_nb_tx_7d"] == 3.0
    assert features["terminal_nb_tx_30d"] == 3.0
    assert features["terminal_risk_1d"] == 0.0
    assert terminal_features(TerminalHistory(), T)["terminal_risk_30d"] == 0.0


def test_labels_count_only_when_fraud_and_reported_within_the_delay() -> None:
    history = TerminalHistory()
    day = MS_PER_DAY
    ts = T - 10 * day
    assert history.add_label("early", True, ts + 1, ts)  # before its transaction
    history.add("early", ts)
    history.add("on-time", ts)
    assert history.add_label("on-time", True, ts + 7 * day, ts)  # exactly at the delay
    assert not history.add_label("on-time", True, ts + day, ts)  # already known
    history.add("too-late", ts)
    assert not history.add_label("too-late", True, ts + 7 * day + 1, ts)
    history.add("genuine", ts)
    assert not history.add_label("genuine", False, ts + day, ts)
    features = terminal_features(history, T)
    assert features["terminal_nb_tx_7d"] == 4.0
    assert features["terminal_risk_7d"] == 2 / 4
    assert history.frauds == [1, 0, 1, 0]  # in (ts, txn_id) order


def test_terminal_prune_drops_events_and_labels() -> None:
    history = TerminalHistory()
    cutoff = T - TERMINAL_HORIZON_MS
    history.add("old", cutoff - 5)
    history.add_label("old", True, cutoff + 1, cutoff - 5)
    history.add_label("its-event-elsewhere", True, cutoff + 1, cutoff)
    history.add("kept", cutoff + 1)
    history.add_label("kept", True, cutoff + 2, cutoff + 1)
    # the newest time dropped, of an event or a label, as the store's _dropped keeps it
    assert history.prune(T, allowed_lateness_ms=0) == cutoff
    assert history.horizon_ms == cutoff
    assert history.txn_ids == ["kept"]
    assert list(history.labels) == ["kept"]
    assert not history.add_label("old", True, cutoff + 1, cutoff - 5)
    assert history.prune(T, allowed_lateness_ms=0) == 0  # nothing more to drop


def test_all_features_and_vector_follow_the_model_order() -> None:
    customer, terminal = CustomerHistory(), TerminalHistory()
    terminal.add("old", T - 8 * MS_PER_DAY + 5)
    terminal.add_label("old", True, T - 7 * MS_PER_DAY, T - 8 * MS_PER_DAY + 5)
    features = all_features(customer, terminal, "x", T, 4_200)
    assert tuple(features) == FEATURE_NAMES
    vector = feature_vector(features)
    assert vector[0] == 42.0
    assert vector[FEATURE_NAMES.index("terminal_risk_1d")] == 1.0
    assert all(isinstance(value, float) for value in vector)


def test_all_features_take_the_terminal_windows_as_counts_alike() -> None:
    """The store counts a terminal's windows (two searches each, on the bounds given here);
    features from those counts equal the history's."""
    rng = random.Random(5)
    customer, terminal = CustomerHistory(), TerminalHistory()
    customer.add("c1", T - MS_PER_HOUR, 1_000)
    bounds = terminal_window_bounds(T)
    for i in range(300):
        edge = rng.choice(bounds)[rng.randrange(2)] + rng.choice((-1, 0, 1))
        ts = edge if i % 2 else T - rng.randrange(40 * MS_PER_DAY)
        terminal.add(f"t{i}", ts)
        if rng.random() < 0.3:
            terminal.add_label(f"t{i}", True, ts, ts)
    fraud_ts = [ts for ts, fraud in zip(terminal.ts, terminal.frauds, strict=True) if fraud]
    by_search = terminal_counts(terminal.ts, fraud_ts, T)
    by_bounds = []
    for after, through in bounds:
        by_bounds.append(sum(after < ts <= through for ts in terminal.ts))
        by_bounds.append(sum(after < ts <= through for ts in fraud_ts))
    assert by_search == tuple(by_bounds)
    assert all_features(customer, by_search, "x", T, 4_200) == all_features(
        customer, terminal, "x", T, 4_200
    )
