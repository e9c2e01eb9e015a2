"""Fixtures of the streaming tests: a simulated month, and a pipeline of its own per test.

Each test gets its own topic prefix and Redis database, so tests sharing the one real broker
and Redis of the session never see each other's events.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pytest
import redis

from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.simulate import SimulationConfig, make_labels, simulate

#: Databases 8 to 15 in turn; each test empties its database before and after.
_next_database = itertools.cycle(range(8, 16))


@dataclass(frozen=True)
class Month:
    transactions: pa.Table
    labels: pa.Table


@pytest.fixture(scope="session")
def month() -> Month:
    """About 30,000 transactions: 400 customers, 800 terminals, 35 days, with chargebacks."""
    table = simulate(SimulationConfig(customers=400, terminals=800, days=35, seed=11))
    events = table.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    return Month(events, make_labels(table, seed=11))


@pytest.fixture
def pipeline_settings(redis_url: str, kafka_bootstrap: str) -> Iterator[AggregateSettings]:
    database = next(_next_database)
    url = redis_url.rsplit("/", 1)[0] + f"/{database}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield AggregateSettings(
        redis_url=url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"test-{uuid.uuid4().hex[:8]}.",
        aggregate_group_id=f"aggregate-{uuid.uuid4().hex[:8]}",
        aggregate_metrics_port=0,
    )
    client.flushdb()
    client.close()
