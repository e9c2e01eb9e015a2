"""One aggregator instance of the scaling benchmark (:mod:`stream_scaling`), in its own process.

The production :class:`~fraudstack.aggregate.service.Aggregator`, with one difference at the
seam to Kafka: its consumer joins the group at once but hands out no record until the file
``--go`` exists. The benchmark creates it once the group is stable with every instance in it,
so the group's forming (the broker starts a group with the first member that joins, and
rebalances as the next one comes) is over before the first record is applied, and a rebalance
counted after it is one during the steady run.

On SIGTERM it writes its figures to ``--result`` (JSON) at once, before it stops: leaving the
group rebalances the instances still in it, which is no part of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import signal
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from fraudstack.aggregate import service
from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings


def gated_consumer(go: Path) -> type[AIOKafkaConsumer]:
    class GatedConsumer(AIOKafkaConsumer):
        """A consumer whose polls are empty until ``go`` exists (the group forms meanwhile:
        aiokafka joins and heartbeats from its coordinator task, not from ``getmany``)."""

        async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: Any = None):  # type: ignore[no-untyped-def]
            if not go.exists():
                await asyncio.sleep(timeout_ms / 1000)
                return {}
            return await super().getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )

    return GatedConsumer


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(group: str, go: Path, result: Path) -> None:
    service.AIOKafkaConsumer = gated_consumer(go)  # type: ignore[misc]
    aggregator = Aggregator(AggregateSettings(aggregate_group_id=group, aggregate_metrics_port=0))
    at_go: dict[str, int] = {}
    reported = False

    async def watch_go() -> None:
        while not go.exists():
            await asyncio.sleep(0.05)
        at_go.update(aggregator.rebalances)

    def report() -> None:
        nonlocal reported
        if reported:  # a second SIGTERM (the benchmark stopping the process) changes nothing
            return
        reported = True
        figures = {
            "processed": aggregator.processed,
            # CLOCK_MONOTONIC: one clock for every process of the machine
            "first_batch_at": aggregator.first_batch_at,
            "last_batch_at": aggregator.last_batch_at,
            "rebalances_before_go": at_go,
            "rebalances": dict(aggregator.rebalances),
            "longest_stall_s": aggregator.longest_stall_s,
            "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in aggregator.assignment),
            "cpu_s": _cpu_s(),
            "reported_at": time.monotonic(),
        }
        result.write_text(json.dumps(figures, indent=2) + "\n")
        aggregator.stopping.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, report)
    watching = asyncio.create_task(watch_go())
    await aggregator.run()
    watching.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--group", required=True, help="the consumer group")
    parser.add_argument("--go", type=Path, required=True, help="records flow once this exists")
    parser.add_argument("--result", type=Path, required=True, help="figures written here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(run(args.group, args.go, args.result))


if __name__ == "__main__":
    main()
