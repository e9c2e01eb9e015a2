"""``fraudstack aggregate``: keep the online store's features fresh from the streams."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group-id", help="consumer group (default: FRAUDSTACK_AGGREGATE_GROUP_ID)"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus port, 0 for none (default 9100)"
    )
    parser.add_argument(
        "--stop-after-idle",
        type=float,
        metavar="SECONDS",
        help="exit once no record arrived for this long (for batch runs and demos)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from prometheus_client import start_http_server

    from fraudstack.adapters.scrape import announce
    from fraudstack.aggregate.service import Aggregator
    from fraudstack.aggregate.settings import get_settings

    settings = get_settings()
    if args.group_id:
        settings.aggregate_group_id = args.group_id
    port = args.metrics_port if args.metrics_port is not None else settings.aggregate_metrics_port
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    if port:
        start_http_server(port, addr="0.0.0.0")
        announce(settings.scrape_targets_dir, "aggregate", port)
    processed = asyncio.run(Aggregator(settings).run(stop_after_idle_s=args.stop_after_idle))
    print(f"aggregate: {processed} records processed")
    return 0
