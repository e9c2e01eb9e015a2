"""Redis comes back empty while the aggregator runs: rebuilt from the topics, never served wrong.

A Redis without persistence that restarts has lost every feature, and answers as if nothing
happened. Before the store had a generation marker, the aggregator went on from its committed
offsets into the empty store, and after the stream 46,273 of 216,800 values were wrong while
``GET /predict`` and ``POST /v1/score`` answered 200.

Here the first half of a stream is aggregated into a private Redis; while the second half is
being produced and aggregated, the Redis is stopped and started again, empty. A prober asks the
inference service (``fraudstack serve``, a subprocess) for customers of the first half all along.
The aggregator must notice the missing marker and replay its partitions from their first offset;
until the store is whole again the service answers 503 with a reason, never 200 from a partial
store; afterwards every value of every customer and terminal equals the offline computation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis

from fraudstack.adapters.online_store.layout import READY_FIELD, STORE_KEY
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from support.aggregation import (
    Run,
    Stream,
    metric,
    metrics_port,
    online_equals_offline,
    stop,
)
from support.serving import start_service
from support.waiting import eventually

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def halves() -> tuple[Stream, Stream]:
    """About 60,000 transactions over three weeks with their chargebacks, cut in two by time."""
    transactions = simulate(SimulationConfig(customers=1_500, terminals=3_000, days=21, seed=53))
    labels = make_labels(transactions, seed=53)
    bounds = pc.min_max(transactions["ts"])
    middle = (bounds["min"].as_py() + bounds["max"].as_py()) // 2
    first = transactions.filter(pc.less(transactions["ts"], middle))
    second = transactions.filter(pc.greater_equal(transactions["ts"], middle))
    return (
        Stream(first, labels.filter(pc.is_in(labels["txn_id"], first["txn_id"]))),
        Stream(second, labels.filter(pc.is_in(labels["txn_id"], second["txn_id"]))),
    )


@dataclass
class Prober:
    """``GET /predict`` for known customers in a loop, each answer with whether the store was
    ready once it came (the mark is monotone within a generation: not ready after a 200 means
    the 200 was served from a store being rebuilt)."""

    url: str
    redis_url: str
    customers: list[str]
    answers: list[tuple[float, int, bool, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        with httpx.Client(base_url=self.url, timeout=5) as http:
            index = 0
            while not self.stopping.is_set():
                customer = self.customers[index % len(self.customers)]
                index += 1
                sent = time.monotonic()
                response = http.get(f"/predict/{customer}")
                try:
                    ready = client.hget(STORE_KEY, READY_FIELD) is not None
                except redis.RedisError:
                    ready = False
                self.answers.append((sent, response.status_code, ready, response.text[:200]))
                time.sleep(0.005)
        client.close()


def test_redis_back_empty_is_rebuilt_from_the_topics_and_never_served_wrong(
    aggregation_run: Run, halves: tuple[Stream, Stream], registry_root: str, tmp_path: Path
) -> None:
    run = aggregation_run
    first, second = halves
    whole = Stream(
        pa.concat_tables([first.transactions, second.transactions]),
        pa.concat_tables([first.labels, second.labels]),
    )
    port = metrics_port()
    aggregator = run.start_aggregator("aggregator", port)
    service = start_service(tmp_path / "serve", run.redis.url, registry_root, workers=1)
    client = redis.Redis.from_url(run.redis.url)
    try:
        run.produce(first)
        eventually(lambda: run.progress() >= 1.0, "the first half aggregated", 300, 0.5)
        eventually(lambda: client.hget(STORE_KEY, READY_FIELD), "the store ready", 60, 0.2)
        customers = sorted(set(first.transactions["customer_id"].to_pylist()))[:200]
        assert httpx.get(f"{service.url}/predict/{customers[0]}", timeout=5).status_code == 200

        prober = Prober(service.url, run.redis.url, customers)
        probing = threading.Thread(target=prober.run)
        probing.start()
        producing = threading.Thread(target=run.produce, args=(second,))
        producing.start()
        run.expected = whole.events
        eventually(lambda: run.progress() >= 0.55, "a part of the second half", 300, 0.2)
        share = run.progress()
        run.redis.stop()
        run.redis.start()  # the same port, nothing on disk: empty
        restarted = time.monotonic()
        producing.join()
        eventually(lambda: run.progress() >= 1.0, "the whole stream committed", 600, 0.5)
        eventually(lambda: client.hget(STORE_KEY, READY_FIELD), "the store ready again", 300)
        time.sleep(1)
        prober.stopping.set()
        probing.join()
        rebuilds = metric(port, "aggregate_store_rebuilds_total")
    finally:
        client.close()
        service.stop()
        stop(aggregator)

    after = [answer for answer in prober.answers if answer[0] > restarted]
    refused = [answer for answer in after if answer[1] == 503]
    # at first the service's connection is refused (Redis was away), then the store is rebuilt
    rebuilding = [answer for answer in refused if "being rebuilt" in answer[3]]
    wrong = [answer for answer in after if answer[1] == 200 and not answer[2]]
    others = [answer for answer in after if answer[1] not in (200, 503)]
    print(
        f"\nRedis restarted empty at {share:.0%} of {whole.events:,} events: "
        f"{len(after):,} requests after the restart, {len(refused):,} answered 503 "
        f"({len(rebuilding):,} of them while the store was rebuilt), {len(wrong)} answered "
        f"200 from a store not ready, {len(others)} other; the store was rebuilt "
        f"{rebuilds:.0f} times (its first fill included)"
    )
    assert not wrong, wrong[:3]
    assert not others, others[:3]
    assert rebuilding, "no request saw the store being rebuilt"
    assert rebuilds >= 2, rebuilds  # the first fill, and after the loss
    online_equals_offline(run, whole, "Redis back empty", share)
