"""``fraudstack ingest``: serve the HTTP API, or replay a Parquet file into Kafka."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="the HTTP API (POST /v1/transactions)")
    serve.add_argument("--bind", help="host:port (default: FRAUDSTACK_INGEST_BIND, 0.0.0.0:8000)")
    replay = actions.add_parser("replay", help="stream a Parquet file of transactions into Kafka")
    replay.add_argument("--file", required=True, help="Parquet file or folder of transactions")
    replay.add_argument("--labels", help="Parquet file or folder of labels to interleave")
    replay.add_argument(
        "--rate", type=float, help="events per second (default: as fast as possible)"
    )
    replay.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move every timestamp so that the first event happens now",
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.action == "serve":
        return _serve(args)
    return _replay(args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fraudstack.adapters.scrape import announce
    from fraudstack.ingest.app import create_app
    from fraudstack.ingest.settings import get_settings

    settings = get_settings()
    host, _, port = (args.bind or settings.ingest_bind).rpartition(":")
    announce(settings.scrape_targets_dir, "ingest", int(port))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=int(port),
        access_log=False,
        log_level=settings.log_level.lower(),
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    import asyncio

    import pyarrow.dataset as ds

    from fraudstack.errors import ConfigurationError
    from fraudstack.ingest.replay import produce_table
    from fraudstack.settings import get_settings

    try:
        table = ds.dataset(args.file, format="parquet").to_table()
        labels = ds.dataset(args.labels, format="parquet").to_table() if args.labels else None
    except (FileNotFoundError, OSError) as exc:
        raise ConfigurationError(f"cannot read {args.file}: {exc}") from exc
    settings = get_settings()
    bootstrap = settings.require("kafka_bootstrap")
    sent, label_count = asyncio.run(
        produce_table(
            bootstrap,
            table,
            labels,
            rate=args.rate,
            shift_to_now=args.shift_to_now,
            progress=not args.no_progress,
            topics=settings.topics,
        )
    )
    print(f"ingest replay: {sent} transactions and {label_count} labels produced")
    return 0
