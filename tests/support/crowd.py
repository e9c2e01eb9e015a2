"""Fixtures that put a real inference service next to the operator tests.

The service is the one of ``tests/serve``: real gunicorn workers started as a subprocess, the two
real models (:data:`STABLE`, :data:`CANDIDATE`) of that folder's registry, and a private
``redis-server``; here the store holds :data:`CUSTOMERS` customers, so a share measured from
answers is precise to well under the ±2 points the rollout promises. Registered as a plugin in
``tests/conftest.py``; fixtures are built on first use only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraudstack.aggregate.bulk import load_table
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.simulate import SimulationConfig, simulate
from support.serving import RunningService, start_service

CUSTOMERS = 10_000
#: How often each worker reads the routing key; short, so a switch is seen within the test.
POLL_MS = 100


@pytest.fixture(scope="module")
def crowd_table() -> tuple[pa.Table, list[str]]:
    """Transactions of exactly :data:`CUSTOMERS` customers, and their ids.

    Three days leave about one customer in eleven without a transaction, so the simulation draws
    a few more than needed and keeps the first :data:`CUSTOMERS` that have one; more days would
    cover everyone but cost seconds of loading for nothing the tests look at.
    """
    table = simulate(SimulationConfig(customers=11_500, terminals=2_000, days=3, seed=23))
    present = sorted(set(table["customer_id"].to_pylist()))
    assert len(present) >= CUSTOMERS, f"only {len(present)} customers transacted"
    kept = present[:CUSTOMERS]
    return table.filter(pc.is_in(table["customer_id"], pa.array(kept))), kept


@pytest.fixture(scope="module")
def crowd(crowd_table: tuple[pa.Table, list[str]]) -> list[str]:
    """The ids of the :data:`CUSTOMERS` customers in :func:`crowd_store`."""
    return crowd_table[1]


@pytest.fixture(scope="module")
def crowd_store(
    tmp_path_factory: pytest.TempPathFactory, crowd_table: tuple[pa.Table, list[str]]
) -> Iterator[PrivateRedis]:
    """A private redis-server holding the features of :data:`CUSTOMERS` customers."""
    table, kept = crowd_table
    server = PrivateRedis(tmp_path_factory.mktemp("crowd-redis")).start()
    try:
        customers, _ = load_table(server.url, table)
        assert customers == len(kept) == CUSTOMERS
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def serve_routing_key() -> str:
    """A routing key of this module's own: nothing else publishes or reads it."""
    return f"fraudstack:routing:serve-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    crowd_store: PrivateRedis,
    registry_root: str,
    serve_routing_key: str,
) -> Iterator[RunningService]:
    """``fraudstack serve`` with two workers following ``serve_routing_key``."""
    folder: Path = tmp_path_factory.mktemp("serve")
    running = start_service(
        folder,
        crowd_store.url,
        registry_root,
        workers=2,
        FRAUDSTACK_ROUTING_KEY=serve_routing_key,
        FRAUDSTACK_SERVE_ROUTING_POLL_MS=str(POLL_MS),
    )
    try:
        yield running
    finally:
        running.stop()
