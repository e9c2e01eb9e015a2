"""``fraudstack features``: compute every feature of a table of transactions, offline.

    fraudstack features --events PATH --out PATH [--labels PATH]

``--events`` and ``--labels`` are a Parquet file or a folder of Parquet files (hive partitions
such as ``date=2018-04-01/`` are fine), local or as a pyarrow filesystem URI. Without
``--labels``, frauds come from an ``is_fraud`` column of the events if there is one (the
simulator's output). The output, ``txn_id`` plus one float64 column per feature in model order,
is written to a hidden temporary file next to ``--out`` and renamed over it, so a reader never
sees half a file. Bad input (a path that does not exist, a missing column, a null value) prints
one line on stderr and exits with code 2, writing nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from fraudstack.adapters.offline_store import write_local_atomically
from fraudstack.features.definitions import FEATURE_SET_VERSION
from fraudstack.features.offline import compute_features

EXIT_BAD_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        required=True,
        metavar="PATH",
        help="transactions: a Parquet file or a folder of Parquet files",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="the Parquet file to write (replaced atomically)",
    )
    parser.add_argument(
        "--labels", metavar="PATH", help="label events (chargebacks): a Parquet file or folder"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        events = read_parquet(args.events)
        labels = read_parquet(args.labels) if args.labels else None
        features = compute_features(events, labels, progress=not args.no_progress)
    except (OSError, ValueError, pa.ArrowInvalid) as exc:
        message = " ".join(str(exc).split())  # one line, whatever pyarrow put in it
        print(f"fraudstack features: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    metadata = {"feature_set_version": FEATURE_SET_VERSION}
    write_parquet_atomically(features, args.out, metadata=metadata)
    elapsed = time.perf_counter() - started
    print(
        f"{features.num_rows:,} transactions, {features.num_columns - 1} features "
        f"({FEATURE_SET_VERSION}) -> {args.out} in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


def read_parquet(path: str | os.PathLike[str]) -> pa.Table:
    """A Parquet file or folder (or a pyarrow filesystem URI) as one table."""
    if "://" not in str(path) and not Path(path).exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def write_parquet_atomically(
    table: pa.Table, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write ``table`` to a temporary file beside ``path``, then rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if metadata:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata({**existing, **metadata})
    # under a dot name: dataset readers skip it, so nobody reads the file while it is written
    write_local_atomically(table, str(target), compression="snappy")
