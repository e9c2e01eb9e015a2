"""``fraudstack snapshot``: write ``transactions`` and ``labels`` to the Parquet offline store.

Settings (environment; a command-line flag wins over its variable):

=========================================  ==================================================
variable                                   meaning
=========================================  ==================================================
``FRAUDSTACK_OFFLINE_STORE_URI``           root of the offline store (path or pyarrow URI)
``FRAUDSTACK_KAFKA_BOOTSTRAP``             Kafka bootstrap servers
``FRAUDSTACK_REDIS_URL``                   online store, for ``--features-every``
``FRAUDSTACK_TOPIC_PREFIX``                prefix of the default topic names
``FRAUDSTACK_SNAPSHOT_GROUP``              consumer group (default ``fraudstack-snapshot``)
``FRAUDSTACK_SNAPSHOT_FLUSH_ROWS``         flush a partition's buffer at this many rows (10000)
``FRAUDSTACK_SNAPSHOT_FLUSH_SECONDS``      ... or when its oldest record waited this long (60)
``FRAUDSTACK_SNAPSHOT_METRICS_PORT``       Prometheus metrics port, 0 for none (9104)
``FRAUDSTACK_SNAPSHOT_FEATURES_EVERY``     seconds between online-feature snapshots, 0 = off
=========================================  ==================================================

Exit codes: 0 after SIGTERM/SIGINT (buffers flushed and committed), 1 when Kafka cannot be
reached (so Kubernetes restarts the pod), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic_settings import SettingsConfigDict

from fraudstack.settings import CommonSettings

if TYPE_CHECKING:
    from fraudstack.snapshot.consumer import SnapshotConfig


class SnapshotSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUDSTACK_", extra="ignore")

    snapshot_group: str = "fraudstack-snapshot"
    """``FRAUDSTACK_SNAPSHOT_GROUP``."""
    snapshot_flush_rows: int = 10_000
    """``FRAUDSTACK_SNAPSHOT_FLUSH_ROWS``."""
    snapshot_flush_seconds: float = 60.0
    """``FRAUDSTACK_SNAPSHOT_FLUSH_SECONDS``."""
    snapshot_metrics_port: int = 9104
    """``FRAUDSTACK_SNAPSHOT_METRICS_PORT``; 0 disables the endpoint."""
    snapshot_features_every: float = 0.0
    """``FRAUDSTACK_SNAPSHOT_FEATURES_EVERY``; 0 disables the feature snapshots."""


@lru_cache
def get_settings() -> SnapshotSettings:
    return SnapshotSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URI", help="offline store root (path or URI)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--group", help="consumer group id")
    # default: the shared topic names, with FRAUDSTACK_TOPIC_PREFIX
    parser.add_argument("--transactions-topic")
    parser.add_argument("--labels-topic")
    parser.add_argument("--dead-letter-topic")
    parser.add_argument("--flush-rows", type=int, help="rows per partition buffer before a flush")
    parser.add_argument("--flush-seconds", type=float, help="age of a buffer before a flush")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port; 0 for none")
    parser.add_argument(
        "--features-every",
        type=float,
        metavar="SECONDS",
        help="snapshot the online feature values this often; 0 = never",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from fraudstack.snapshot.consumer import SnapshotConfig

    flush_rows = args.flush_rows or settings.snapshot_flush_rows
    flush_seconds = args.flush_seconds or settings.snapshot_flush_seconds
    if flush_rows < 1 or flush_seconds <= 0:
        print(
            "fraudstack snapshot: --flush-rows and --flush-seconds must be positive",
            file=sys.stderr,
        )
        return 2
    topics = settings.topics
    config = SnapshotConfig(
        bootstrap=args.bootstrap or settings.require("kafka_bootstrap"),
        store_uri=args.store or settings.offline_store_uri,
        group_id=args.group or settings.snapshot_group,
        transactions_topic=args.transactions_topic or topics.transactions,
        labels_topic=args.labels_topic or topics.labels,
        dead_letter_topic=args.dead_letter_topic or topics.dead_letter,
        flush_rows=flush_rows,
        flush_seconds=flush_seconds,
    )
    port = settings.snapshot_metrics_port if args.metrics_port is None else args.metrics_port
    every = settings.snapshot_features_every if args.features_every is None else args.features_every
    redis_url = settings.require("redis_url") if every > 0 else ""
    asyncio.run(_serve(config, port, every, redis_url))
    return 0


async def _serve(config: SnapshotConfig, port: int, every: float, redis_url: str) -> None:
    import asyncio
    import signal

    from prometheus_client import start_http_server

    from fraudstack.snapshot.consumer import SnapshotConsumer
    from fraudstack.snapshot.online_features import run_periodically

    snapshot = SnapshotConsumer(config)
    if port:
        start_http_server(port, registry=snapshot.metrics.registry)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, snapshot.stop)
    tasks = []
    if every > 0:
        tasks.append(
            asyncio.create_task(
                run_periodically(
                    redis_url,
                    snapshot.store,
                    every,
                    snapshot.stopping,
                    on_written=snapshot.metrics.feature_rows.inc,
                )
            )
        )
    try:
        await snapshot.run()
    finally:
        snapshot.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
