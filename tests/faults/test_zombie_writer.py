"""A zombie writer: an aggregator paused with SIGSTOP past its session, resumed mid-stream.

The stream is skewed as real card traffic is: one merchant's terminal takes 20 % of more than
200,000 events. Two ``fraudstack aggregate`` processes share it; one is stopped (``SIGSTOP``) for
longer than the consumer session, so the group gives its partitions to the other, then resumed
(``SIGCONT``): it wakes up in the middle of the batch it held and writes it, as a stale owner.
Afterwards every value of every customer and terminal must equal the offline computation (so no
customer's newest transaction is stale), and the writes the store refused the zombie are
counted.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from fraudstack.aggregate.service import SESSION_TIMEOUT_MS
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from support.aggregation import (
    Run,
    Stream,
    finished,
    metric,
    metrics_port,
    online_equals_offline,
    stop,
)
from support.waiting import eventually

pytestmark = pytest.mark.faults

HOT_TERMINAL = "busy-merchant"
HOT_SHARE = 0.2


@pytest.fixture(scope="module")
def skewed() -> Stream:
    """The simulator's stream with 20 % of the transactions moved to one terminal."""
    table = simulate(SimulationConfig(customers=5_000, terminals=10_000, days=22, seed=41))
    assert table.num_rows >= 200_000, table.num_rows
    rng = np.random.default_rng(41)
    hot = rng.random(table.num_rows) < HOT_SHARE
    terminals = np.where(hot, HOT_TERMINAL, table["terminal_id"].to_numpy(zero_copy_only=False))
    table = table.set_column(
        table.schema.get_field_index("terminal_id"), "terminal_id", pa.array(terminals)
    )
    return Stream(table, make_labels(table, seed=41))


def test_a_paused_then_resumed_aggregator_changes_nothing_its_successor_wrote(
    aggregation_run: Run, skewed: Stream
) -> None:
    run = aggregation_run
    session_s = SESSION_TIMEOUT_MS / 1000
    ports = {"survivor": metrics_port(), "zombie": metrics_port()}
    survivor = run.start_aggregator("survivor", ports["survivor"])
    zombie = run.start_aggregator("zombie", ports["zombie"])
    try:
        # both in the group before the stream comes, so each owns half of it from the start
        eventually(lambda: run.members() == 2, "both in the group", 60, 0.2)
        producing = threading.Thread(target=run.produce, args=(skewed,))
        producing.start()
        eventually(lambda: run.progress() >= 0.25, "a quarter of the stream", 300, 0.2)
        share = run.progress()
        os.killpg(zombie.pid, signal.SIGSTOP)
        # the group notices after the session timeout and gives its partitions to the survivor
        eventually(lambda: run.members() == 1, "the group to drop the paused one", 3 * session_s)
        time.sleep(2)  # the survivor is writing the zombie's partitions now
        os.killpg(zombie.pid, signal.SIGCONT)  # the zombie finishes what it held, then rejoins
        producing.join()
        finished(run, 600)
        refused = metric(ports["zombie"], "aggregate_refused_writes_total")
    finally:
        stop(zombie)
        stop(survivor)
    hot = sum(1 for t in skewed.transactions["terminal_id"].to_pylist() if t == HOT_TERMINAL)
    print(f"\nhot terminal: {hot:,} of {skewed.transactions.num_rows:,} transactions")
    online_equals_offline(run, skewed, "skewed, one of two paused past its session", share)
    print(f"writes refused to the zombie: {refused:.0f}")
    # it woke up holding a fetched poll and wrote it before it heard of the rebalance
    assert refused > 0, "the zombie wrote nothing stale: the pause did not catch it mid-stream"
