"""The routing key's check-and-set rules, against the test devstack's Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from fraudmodel_operator.publish import Outcome, RoutingPublisher, configmap_name
from fraudstack.adapters.redis_clients import async_redis_client
from fraudstack.devstack.redis_server import PrivateRedisCluster
from fraudstack.routing import RoutingDocument


def document(source: str = "ns/a", share: float = 10.0, generation: int = 1) -> RoutingDocument:
    return RoutingDocument(
        stable="v1",
        candidate="v2",
        candidate_share=share,
        source=source,
        generation=generation,
        updated_at=generation,
    )


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster of three masters: the operator takes a ``redis+cluster://`` URL too."""
    servers = PrivateRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield servers.url
    servers.stop()


@pytest.fixture(params=["redis", "redis-cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The devstack's Redis, then a cluster (synchronous: starting them runs event loops)."""
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))


@pytest.fixture
async def publisher(store_url: str) -> AsyncIterator[RoutingPublisher]:
    connection = async_redis_client(store_url)
    key = f"fraudstack:routing:publish-{uuid.uuid4().hex[:8]}"
    try:
        yield RoutingPublisher(connection, key)
    finally:
        await connection.delete(key)
        await connection.aclose()


async def test_only_a_routing_change_is_written(publisher: RoutingPublisher) -> None:
    first = await publisher.publish(document())
    assert first.outcome is Outcome.PUBLISHED
    same = await publisher.publish(document(generation=2))
    assert same.outcome is Outcome.UNCHANGED and same.document == document()  # kept as stored
    changed = await publisher.publish(document(share=20, generation=3))
    assert changed.outcome is Outcome.PUBLISHED
    assert await publisher.current() == document(share=20, generation=3)


async def test_another_fraudmodels_routing_is_not_overwritten(publisher: RoutingPublisher) -> None:
    await publisher.publish(document("ns/a"))
    conflict = await publisher.publish(document("ns/b", share=50))
    assert conflict.outcome is Outcome.CONFLICT and conflict.document.source == "ns/a"
    assert await publisher.current() == document("ns/a")
    taken = await publisher.publish(document("ns/b", share=50), take_over=True)
    assert taken.outcome is Outcome.PUBLISHED
    assert (await publisher.current()) == document("ns/b", share=50)


async def test_garbage_at_the_key_is_replaced(publisher: RoutingPublisher) -> None:
    await publisher.redis.set(publisher.key, b"{broken")
    assert await publisher.current() is None
    assert (await publisher.publish(document())).outcome is Outcome.PUBLISHED


async def test_withdraw_removes_only_its_own_routing(publisher: RoutingPublisher) -> None:
    await publisher.publish(document("ns/a"))
    assert await publisher.withdraw("ns/b") is False
    assert await publisher.current() is not None
    assert await publisher.withdraw("ns/a") is True
    assert await publisher.current() is None
    assert await publisher.withdraw("ns/a") is False


def test_configmap_names_fit_kubernetes() -> None:
    assert configmap_name("fraud-scorer") == "fraud-scorer-routing"
    assert len(configmap_name("x" * 253)) == 253
