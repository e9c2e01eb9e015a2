"""The inference workers' side of the routing contract: ``watch_routing`` against real Redis
servers (the test devstack's, and a private one that the outage test stops and starts)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.routing import RoutingDocument
from fraudstack.serve.routing_watch import read_routing, watch_routing
from support.waiting import eventually_async, never_async

INTERVAL = 0.05


def document(share: float = 10.0, generation: int = 1, **changes: object) -> RoutingDocument:
    fields: dict[str, object] = {
        "stable": "v1",
        "candidate": "v2",
        "candidate_share": share,
        "source": "fraudstack/scorer",
        "generation": generation,
        "updated_at": 1_768_471_200_000 + generation,
    }
    fields.update(changes)
    return RoutingDocument(**fields)  # type: ignore[arg-type]


class Worker:
    """What a worker's ``apply`` sees, and a switch to make it fail."""

    def __init__(self) -> None:
        self.applied: list[RoutingDocument] = []
        self.failures = 0

    async def apply(self, routing: RoutingDocument) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("model does not load")
        self.applied.append(routing)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
def key(redis_url: str) -> Iterator[str]:
    name = f"fraudstack:routing:watch-{uuid.uuid4().hex[:8]}"
    yield name
    with redis.Redis.from_url(redis_url) as connection:
        connection.delete(name)


@pytest.fixture
async def watching(
    client: redis.asyncio.Redis, key: str
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    tasks: list[asyncio.Task[None]] = []

    async def start(**options: Any) -> Worker:
        worker = Worker()
        tasks.append(
            asyncio.create_task(
                watch_routing(client, key, worker.apply, interval_s=INTERVAL, **options)
            )
        )
        return worker

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_published_routing_is_applied_and_followed(
    client: redis.asyncio.Redis, key: str, watching: Callable[..., Awaitable[Worker]]
) -> None:
    worker = await watching()
    # nothing published: the worker keeps its own routing
    await never_async(lambda: worker.applied, "a routing applied", during=INTERVAL * 6)

    await client.set(key, document(10).to_json())
    await eventually_async(lambda: len(worker.applied) == 1, "the first routing")
    assert worker.applied[0] == document(10)
    assert await read_routing(client, key) == document(10)

    # the same routing republished (a new generation for another reason): not applied again
    await client.set(key, document(10, generation=2).to_json())
    await client.set(key, document(40, generation=3).to_json())
    await eventually_async(lambda: worker.applied[-1].candidate_share == 40.0, "the new share")
    assert [routing.candidate_share for routing in worker.applied] == [10.0, 40.0]

    # the FraudModel is deleted: the key goes, the routing stays
    await client.delete(key)
    await never_async(lambda: worker.applied[2:], "a routing applied", during=INTERVAL * 6)


async def test_a_bad_document_is_ignored_and_the_worker_carries_on(
    client: redis.asyncio.Redis,
    key: str,
    watching: Callable[..., Awaitable[Worker]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await client.set(key, document(10).to_json())
    worker = await watching()
    await eventually_async(lambda: len(worker.applied) == 1, "the first routing")

    await client.set(
        key, b'{"stable": "v1", "source": "fraudstack/scorer", "candidate_share": 300}'
    )
    await never_async(lambda: worker.applied[1:], "a bad routing applied", during=INTERVAL * 6)
    refused = [r for r in caplog.records if "ignoring the routing" in r.getMessage()]
    assert len(refused) == 1  # logged once, not on every poll
    assert "candidate_share 300.0 is outside 0-100" in refused[0].getMessage()

    await client.set(key, b"not json at all")
    await client.set(key, document(20, generation=2).to_json())
    await eventually_async(lambda: len(worker.applied) == 2, "the next good routing")


async def test_a_routing_that_cannot_be_applied_is_retried(
    client: redis.asyncio.Redis, key: str, watching: Callable[..., Awaitable[Worker]]
) -> None:
    worker = await watching(retry_apply_s=0.3)
    worker.failures = 2
    started = time.monotonic()
    await client.set(key, document(10).to_json())
    await eventually_async(lambda: len(worker.applied) == 1, "the routing after two failures")
    assert time.monotonic() - started >= 0.6  # two retries, 0.3 s apart
    assert worker.failures == 0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, to stop and start again on the same port."""
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_watch_survives_a_redis_outage(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fraudstack.serve.routing")
    connection = redis.asyncio.Redis(
        port=private_redis.port, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    worker = Worker()
    task = asyncio.create_task(
        watch_routing(connection, "routing", worker.apply, interval_s=INTERVAL, max_backoff_s=0.2)
    )
    try:
        await connection.set("routing", document(10).to_json())
        await eventually_async(lambda: len(worker.applied) == 1, "the first routing")

        private_redis.stop()

        def outage_logs() -> int:
            return sum("cannot read the routing" in r.getMessage() for r in caplog.records)

        await eventually_async(lambda: outage_logs() > 0, "the outage to be noticed")
        await never_async(
            lambda: task.done() or worker.applied[1:] or outage_logs() > 1,
            "the watch ending, a routing applied, or the outage logged again on a poll",
            during=1.0,
        )

        private_redis.start()  # back, empty (no persistence): the operator would publish again
        await connection.set("routing", document(30, generation=2).to_json())
        await eventually_async(lambda: len(worker.applied) == 2, "the routing after the outage")
        assert worker.applied[-1].candidate_share == 30.0
        assert any("readable again" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connection.aclose()
