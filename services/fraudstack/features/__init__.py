"""The one definition of every feature: pure code, no I/O.

``definitions`` names the features, their windows and the feature-set version; ``online``
keeps per-entity state and computes one transaction's features (stream and inference);
``offline`` computes them for a whole table (training, consistency checks). Both paths give
the same value for the same transaction: that equality is tested.
"""

from typing import TYPE_CHECKING

from fraudstack.features.definitions import (
    CUSTOMER_HORIZON_MS,
    DEFAULT_ALLOWED_LATENESS_MS,
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    LABEL_DELAY_MS,
    TERMINAL_DELAY_MS,
    TERMINAL_HORIZON_MS,
    amount_to_cents,
    label_counts,
)
from fraudstack.features.online import (
    CustomerHistory,
    TerminalHistory,
    all_features,
    customer_features,
    feature_vector,
    history_counts,
    terminal_counts,
    terminal_features,
    terminal_features_from_counts,
    terminal_window_bounds,
    transaction_features,
)

if TYPE_CHECKING:
    from fraudstack.features.offline import compute_features

__all__ = [
    "CUSTOMER_HORIZON_MS",
    "DEFAULT_ALLOWED_LATENESS_MS",
    "FEATURE_NAMES",
    "FEATURE_SET_VERSION",
    "LABEL_DELAY_MS",
    "TERMINAL_DELAY_MS",
    "TERMINAL_HORIZON_MS",
    "CustomerHistory",
    "TerminalHistory",
    "all_features",
    "amount_to_cents",
    "compute_features",
    "customer_features",
    "feature_vector",
    "history_counts",
    "label_counts",
    "terminal_counts",
    "terminal_features",
    "terminal_features_from_counts",
    "terminal_window_bounds",
    "transaction_features",
]


def __getattr__(name: str) -> object:
    # the offline path pulls in pyarrow; the inference service only needs ``online``
    if name == "compute_features":
        from fraudstack.features.offline import compute_features

        return compute_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
