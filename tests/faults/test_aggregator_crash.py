"""The aggregator killed with ``kill -9`` in the middle of a stream, on the real broker and Redis.

A simulated stream of more than 100,000 events (transactions and their chargebacks) is in Kafka
first; ``fraudstack aggregate`` processes run on it as they would in production (subprocesses, a
consumer group, a private Redis). One is killed -9 when about half the stream is committed:

* alone: it is started again and finishes the stream;
* one of two: the other takes its partitions once the group notices (session timeout).

Afterwards the online store must equal the offline computation of every feature of every
customer and terminal: no event lost, none counted twice.
"""

from __future__ import annotations

import threading
import time

import pytest

from fraudstack.simulate import SimulationConfig, make_labels, simulate
from support.aggregation import Run, Stream, finished, kill_midway, online_equals_offline, stop
from support.waiting import eventually

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def stream() -> Stream:
    """About 100,000 transactions over three weeks, with their chargebacks."""
    transactions = simulate(SimulationConfig(customers=2_600, terminals=5_200, days=21, seed=31))
    assert transactions.num_rows >= 100_000, transactions.num_rows
    return Stream(transactions, make_labels(transactions, seed=31))


def test_a_lone_aggregator_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
    aggregation_run: Run, stream: Stream
) -> None:
    run = aggregation_run
    run.produce(stream)
    first = run.start_aggregator("first")
    try:
        share = kill_midway(run, first)
    finally:
        stop(first)
    again = run.start_aggregator("again")
    try:
        finished(run, 300)
    finally:
        stop(again)
    online_equals_offline(run, stream, "one instance", share)


def test_one_of_two_aggregators_killed_mid_stream_the_other_takes_over(
    aggregation_run: Run, stream: Stream
) -> None:
    run = aggregation_run
    survivor = run.start_aggregator("survivor")
    victim = run.start_aggregator("victim")
    try:
        # both in the group before the stream comes, so each owns half of it from the start
        eventually(lambda: run.members() == 2, "both in the group", 60, 0.2)
        producing = threading.Thread(target=run.produce, args=(stream,))
        producing.start()
        share = kill_midway(run, victim)
        producing.join()
        started = time.monotonic()
        finished(run, 300)
        print(
            f"\nthe survivor finished the stream {time.monotonic() - started:.0f} s after the kill"
        )
    finally:
        stop(victim)
        stop(survivor)
    online_equals_offline(run, stream, "two instances", share)
