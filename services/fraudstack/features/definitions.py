"""The names, windows and version of every feature: the one place they are defined.

Times are epoch milliseconds (UTC) and amounts integer cents everywhere in this package, so
that the online path (sums over a few events) and the offline path (differences of cumulative
sums) add the very same integers and produce bit-identical floats.

Semantics follow the Fraud Detection Handbook (Le Borgne et al., ULB), chapter 3.3, plus two
short customer windows for real-time fraud. For a transaction X at time ``t`` (ms):

* ``amount`` is X's amount; ``tx_during_weekend`` is 1.0 when the UTC weekday of ``t`` is
  Saturday or Sunday; ``tx_during_night`` is 1.0 when the UTC hour of ``t`` is 0 to 6.
* customer windows of ``w`` in {10 min, 1 h, 1 d, 7 d, 30 d} hold the customer's events ``e``
  with ``ts_e > t - w`` and ``(ts_e, txn_id_e) <= (t, txn_id_X)``: X itself is included, and
  events at the same millisecond are ordered by ``txn_id`` (string order), so the answer does
  not depend on the order events arrived in. Day windows give the count and the mean amount
  (``cents_sum / count / 100``, in exactly that order); short windows give the count and the
  amount sum (``cents_sum / 100``).
* terminal windows for ``n`` in {1, 7, 30} days hold the terminal's transactions with
  ``t - (n + 7) d < ts_e <= t - 7 d``; X itself is never included. They give the count and the
  risk, ``frauds / count`` (0.0 for an empty window). A transaction is a fraud when it has a
  label with ``is_fraud`` true and ``reported_at <= ts + 7 d`` (the label's ``ts``); such a label
  is always known at ``t`` because ``ts + 7 d <= t``. A later label is not used; the stream sends
  it to the dead-letter topic. Labels with ``is_fraud`` false are ignored: no label means
  genuine.

* the customer's amount against its own history (feature set ``fs-v2``), from the same
  windows. With ``n``, ``S`` and ``Q`` the count, the sum of cents and the sum of squared cents
  of the window's events *before* X (X excluded), ``c`` X's cents, and ``N``, ``S + c`` the
  window with X:

  - ``customer_amount_over_prev_avg_{1d,7d,30d}`` = ``c * n / S``: the amount over the mean
    of the previous amounts (-1.0 when ``n = 0`` or ``S = 0``);
  - ``customer_amount_zscore_prev_{7d,30d}`` = ``(c * n - S) / sqrt(n * Q - S * S)``: the
    z-score of the amount among the previous amounts (-1.0 when ``n = 0``; 0.0 when they are
    all equal);
  - ``customer_amount_over_avg_{1d,7d,30d}`` = ``c * N / (S + c)``: the amount over the
    window's ``customer_avg_amount`` (-1.0 when that is 0);
  - ``customer_seconds_since_prev`` = ``(t - ts_prev) / 1000`` for the customer's previous
    event in the 30-day window (so at most 30 days; -1.0 when there is none);
  - ``customer_amount_over_prev_max_30d`` = ``c / M``, ``M`` the largest previous amount in 30
    days (-1.0 when there is none or it is 0).

  Numerators and denominators are whole numbers (cents), each turned into a float64 once and
  divided (and square-rooted) once, so the stream and the table get the same bits.

Windows are exact to the millisecond; there is no tiling.

Bounded state: a customer needs its events of the last 30 days, a terminal its events and fraud
labels of the last 37 days (30 + the 7-day delay). Both keep, in addition, an allowed lateness,
so that an event up to that much older than the newest one still finds every event its windows
need.
"""

from __future__ import annotations

from typing import Final

#: Changes whenever the definition of any feature changes; recorded with every model.
FEATURE_SET_VERSION: Final = "fs-v2"

MS_PER_SECOND: Final = 1_000
MS_PER_MINUTE: Final = 60 * MS_PER_SECOND
MS_PER_HOUR: Final = 60 * MS_PER_MINUTE
MS_PER_DAY: Final = 24 * MS_PER_HOUR

#: 1970-01-01, day 0 of the epoch, was a Thursday (Monday = 0).
EPOCH_WEEKDAY: Final = 3
#: Saturday and Sunday.
WEEKEND_FIRST_WEEKDAY: Final = 5
#: ``tx_during_night`` covers the UTC hours 0 to 6 inclusive.
NIGHT_LAST_HOUR: Final = 6

#: Customer windows: (count feature, amount feature, length in ms, amount is a mean, not a sum).
CUSTOMER_WINDOWS: Final[tuple[tuple[str, str, int, bool], ...]] = (
    ("customer_nb_tx_1d", "customer_avg_amount_1d", 1 * MS_PER_DAY, True),
    ("customer_nb_tx_7d", "customer_avg_amount_7d", 7 * MS_PER_DAY, True),
    ("customer_nb_tx_30d", "customer_avg_amount_30d", 30 * MS_PER_DAY, True),
    ("customer_nb_tx_10m", "customer_amount_sum_10m", 10 * MS_PER_MINUTE, False),
    ("customer_nb_tx_1h", "customer_amount_sum_1h", 1 * MS_PER_HOUR, False),
)

#: The amount against the customer's own history (see the module docstring): each is -1.0
#: when the history it needs is empty. ``(over previous mean, z-score or None, over mean)``
#: per customer day window, in :data:`CUSTOMER_WINDOWS` order.
CUSTOMER_HISTORY_WINDOWS: Final[tuple[tuple[str, str | None, str], ...]] = (
    ("customer_amount_over_prev_avg_1d", None, "customer_amount_over_avg_1d"),
    (
        "customer_amount_over_prev_avg_7d",
        "customer_amount_zscore_prev_7d",
        "customer_amount_over_avg_7d",
    ),
    (
        "customer_amount_over_prev_avg_30d",
        "customer_amount_zscore_prev_30d",
        "customer_amount_over_avg_30d",
    ),
)
SECONDS_SINCE_PREV: Final = "customer_seconds_since_prev"
OVER_PREV_MAX: Final = "customer_amount_over_prev_max_30d"
#: What a history feature is when the history it needs is empty.
NO_HISTORY: Final = -1.0

#: Terminal windows end this long before the transaction: fraud labels are known after it.
TERMINAL_DELAY_MS: Final = 7 * MS_PER_DAY
#: Terminal windows: (count feature, risk feature, length in ms before the delay).
TERMINAL_WINDOWS: Final[tuple[tuple[str, str, int], ...]] = (
    ("terminal_nb_tx_1d", "terminal_risk_1d", 1 * MS_PER_DAY),
    ("terminal_nb_tx_7d", "terminal_risk_7d", 7 * MS_PER_DAY),
    ("terminal_nb_tx_30d", "terminal_risk_30d", 30 * MS_PER_DAY),
)
#: A fraud label counts only if reported at most this long after its transaction.
LABEL_DELAY_MS: Final = TERMINAL_DELAY_MS

#: How far back a customer's windows reach from the transaction.
CUSTOMER_HORIZON_MS: Final = max(window[2] for window in CUSTOMER_WINDOWS)
#: How far back a terminal's windows reach from the transaction.
TERMINAL_HORIZON_MS: Final = TERMINAL_DELAY_MS + max(window[2] for window in TERMINAL_WINDOWS)
#: Default allowed lateness of an event behind the newest one of its entity.
DEFAULT_ALLOWED_LATENESS_MS: Final = 1 * MS_PER_HOUR

TRANSACTION_FEATURES: Final = ("amount", "tx_during_weekend", "tx_during_night")
# Written out in full so the model order can be read here; a test checks it against the windows.
CUSTOMER_FEATURES: Final = (
    "customer_nb_tx_1d",
    "customer_avg_amount_1d",
    "customer_nb_tx_7d",
    "customer_avg_amount_7d",
    "customer_nb_tx_30d",
    "customer_avg_amount_30d",
    "customer_nb_tx_10m",
    "customer_amount_sum_10m",
    "customer_nb_tx_1h",
    "customer_amount_sum_1h",
    # fs-v2: the amount against the customer's own history
    "customer_amount_over_prev_avg_1d",
    "customer_amount_over_avg_1d",
    "customer_amount_over_prev_avg_7d",
    "customer_amount_zscore_prev_7d",
    "customer_amount_over_avg_7d",
    "customer_amount_over_prev_avg_30d",
    "customer_amount_zscore_prev_30d",
    "customer_amount_over_avg_30d",
    "customer_seconds_since_prev",
    "customer_amount_over_prev_max_30d",
)
TERMINAL_FEATURES: Final = (
    "terminal_nb_tx_1d",
    "terminal_risk_1d",
    "terminal_nb_tx_7d",
    "terminal_risk_7d",
    "terminal_nb_tx_30d",
    "terminal_risk_30d",
)
#: Every feature, in the order the model takes them.
FEATURE_NAMES: Final[tuple[str, ...]] = TRANSACTION_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES


def amount_to_cents(amount: float) -> int:
    """Currency units to integer cents, rounding half to even like ``numpy.rint``."""
    return round(amount * 100)


def label_counts(is_fraud: bool, ts_ms: int, reported_at_ms: int) -> bool:
    """Whether a label makes its transaction a fraud for the terminal features."""
    return bool(is_fraud) and reported_at_ms <= ts_ms + LABEL_DELAY_MS
