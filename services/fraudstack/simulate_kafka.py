"""``fraudstack simulate --to-kafka``: the simulated stream, produced to the real broker."""

from __future__ import annotations

import argparse
import asyncio

import pyarrow as pa

from fraudstack.ingest.replay import produce_table
from fraudstack.settings import get_settings


def produce(table: pa.Table, labels: pa.Table, args: argparse.Namespace) -> int:
    settings = get_settings()
    bootstrap = settings.require("kafka_bootstrap")
    events = table.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    sent, label_count = asyncio.run(
        produce_table(
            bootstrap,
            events,
            labels,
            rate=args.rate,
            shift_to_now=getattr(args, "shift_to_now", False),
            progress=not getattr(args, "no_progress", False),
            topics=settings.topics,
        )
    )
    print(f"simulate: produced {sent} transactions and {label_count} labels to {bootstrap}")
    return 0
