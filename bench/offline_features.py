"""Benchmark: simulate the book-sized dataset, then compute every feature offline.

    python bench/offline_features.py [--repeat 3] [--seed 8] [--out PATH]

Prints a Markdown table and writes the figures, with the machine they were measured on, as
JSON. Times are wall-clock seconds, the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstack.features import FEATURE_NAMES, FEATURE_SET_VERSION, compute_features
from fraudstack.simulate import (
    BOOK_DAYS,
    BOOK_FRAUDS,
    BOOK_TRANSACTIONS,
    SimulationConfig,
    make_labels,
    simulate,
)
from machine import machine  # bench/machine.py: the script's folder is on sys.path

DEFAULT_OUT = Path(__file__).parent / "results" / "offline_features.json"
Result = TypeVar("Result")


def timed(function: Callable[[], Result], repeat: int) -> tuple[Result, list[float]]:
    seconds = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    assert result is not None
    return result, seconds


def machine_block() -> dict[str, object]:
    # the shared block, plus what matters to vectorised code and to timings on a shared host
    return {
        **machine(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=SimulationConfig().seed)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    config = SimulationConfig(seed=args.seed)
    table, simulate_seconds = timed(lambda: simulate(config, progress=True), args.repeat)
    labels = make_labels(table, seed=args.seed)
    features, feature_seconds = timed(
        lambda: compute_features(table, labels, progress=True), args.repeat
    )
    assert features.num_rows == table.num_rows
    assert features.column_names == ["txn_id", *FEATURE_NAMES]

    transactions = table.num_rows
    frauds = int(pc.sum(table.column("is_fraud").cast(pa.int64())).as_py())
    rate, book_rate = frauds / transactions, BOOK_FRAUDS / BOOK_TRANSACTIONS
    size_vs_book = transactions / BOOK_TRANSACTIONS - 1
    simulator = {
        "customers": config.customers,
        "terminals": config.terminals,
        "days": config.days,
        "start_date": config.start_date.isoformat(),
        "radius": config.radius,
        "seed": config.seed,
        "transactions": transactions,
        "frauds": frauds,
        "fraud_rate": rate,
        "frauds_per_day": frauds / config.days,
        "book": {
            "transactions": BOOK_TRANSACTIONS,
            "frauds": BOOK_FRAUDS,
            "fraud_rate": book_rate,
            "frauds_per_day": BOOK_FRAUDS / BOOK_DAYS,
        },
        "transactions_vs_book": size_vs_book,
        "fraud_rate_points_vs_book": 100 * (rate - book_rate),
    }
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {
        "offline_features_seconds": min(feature_seconds),
        "offline_features_seconds_all": feature_seconds,
        "offline_features_rows_per_second": transactions / min(feature_seconds),
        "simulate_seconds": min(simulate_seconds),
        "simulate_seconds_all": simulate_seconds,
        "feature_set_version": FEATURE_SET_VERSION,
        "labels": labels.num_rows,
        "peak_rss_mb": peak_rss_mb,
        "simulator": simulator,
        "machine": (host := machine_block()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    rows = [
        (
            "simulate (book size)",
            f"{min(simulate_seconds):.2f} s",
            f"median {statistics.median(simulate_seconds):.2f} s",
        ),
        (
            "compute_features",
            f"{min(feature_seconds):.2f} s",
            f"median {statistics.median(feature_seconds):.2f} s, "
            f"{transactions / min(feature_seconds):,.0f} rows/s",
        ),
        (
            "transactions",
            f"{transactions:,}",
            f"book {BOOK_TRANSACTIONS:,} ({100 * size_vs_book:+.2f} %)",
        ),
        ("frauds", f"{frauds:,}", f"book {BOOK_FRAUDS:,}"),
        (
            "fraud rate",
            f"{rate:.3%}",
            f"book {book_rate:.3%} ({100 * (rate - book_rate):+.3f} points)",
        ),
        ("frauds per day", f"{frauds / config.days:.1f}", f"book {BOOK_FRAUDS / BOOK_DAYS:.1f}"),
        ("peak RSS", f"{peak_rss_mb:.0f} MB", ""),
    ]
    print("| measure | value | notes |\n|---|---:|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")
    print(
        f"\n{host['platform']}, {host['cpus']} CPUs, Python {host['python']}; "
        f"written to {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
