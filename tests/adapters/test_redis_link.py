"""The pipelined Redis connection: replies in order, errors, timeouts, reconnection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fraudstack.adapters.redis_link import RedisLink, encode_command
from fraudstack.devstack.process import free_port
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import StoreError, StoreUnavailable
from support.waiting import eventually_async


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private redis-server, so these tests may write what they like."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis-link")).start()
    yield server
    server.stop()


def test_commands_are_encoded_in_the_redis_protocol() -> None:
    assert encode_command(b"HGET", "fs:{customer:1}", b"_event_ts") == (
        b"*3\r\n$4\r\nHGET\r\n$15\r\nfs:{customer:1}\r\n$9\r\n_event_ts\r\n"
    )


async def test_concurrent_requests_share_one_connection_and_get_their_own_replies(
    store: PrivateRedis,
) -> None:
    redis.Redis.from_url(store.url).mset({f"link-test-{n}": str(n) for n in range(200)})
    link = RedisLink(store.url)
    replies = await asyncio.gather(*(link.get(f"link-test-{n}") for n in range(200)))
    assert replies == [str(n).encode() for n in range(200)]
    pair = await link.execute(
        encode_command(b"GET", b"link-test-1") + encode_command(b"GET", b"link-test-2"), 2
    )
    assert pair == [b"1", b"2"]
    await link.close()


async def test_an_error_reply_fails_that_request_only(store: PrivateRedis) -> None:
    link = RedisLink(store.url)
    with pytest.raises(StoreError, match="refused a command"):
        await link.execute(encode_command(b"NO-SUCH-COMMAND"))
    assert await link.ping()
    await link.close()


async def test_a_database_number_in_the_url_is_selected(store: PrivateRedis) -> None:
    redis.Redis(port=store.port, db=3).set("link-db-test", "three")
    link = RedisLink(f"redis://127.0.0.1:{store.port}/3")
    assert await link.get("link-db-test") == b"three"
    await link.close()


async def test_a_server_that_does_not_answer_times_out() -> None:
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://127.0.0.1:{port}/0", timeout=0.2, connect_timeout=0.5)
    with pytest.raises(StoreUnavailable):  # not a hang: the bound is 20 times the link's timeout
        await asyncio.wait_for(link.execute(encode_command(b"PING")), 10)
    silent.close()
    await link.close()


async def test_closing_while_connecting_leaves_no_connection_behind() -> None:
    accepted: list[asyncio.StreamReader] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)  # and never answer the handshake

    silent = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://127.0.0.1:{port}/0", timeout=5, connect_timeout=5)
    waiting = asyncio.ensure_future(link.execute(encode_command(b"PING")))
    while not accepted:  # the handshake is on its way
        await asyncio.sleep(0.01)
    await link.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await waiting
    # the server sees the connection end: nothing is left open
    await asyncio.wait_for(accepted[0].read(), 2)
    silent.close()


async def test_no_server_fails_fast_then_retries_after_the_delay(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, port=free_port())
    link = RedisLink(server.url, retry_after=3.0)
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await link.get("anything")
    server.start()
    try:
        # The server answers now, but the delay has not passed: no new attempt is made.
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await link.get("anything")
        assert link.connections == 0
        await eventually_async(link.ping, "the link to reconnect after the delay", timeout=10)
        server.stop()
        with pytest.raises(StoreUnavailable):
            await link.get("anything")
        server.start()
        await eventually_async(link.ping, "the link to reconnect by itself", timeout=10)
        assert await link.get("anything") is None
        assert link.connections == 2
    finally:
        await link.close()
        server.stop()


async def test_a_restart_under_load_fails_pending_requests_and_recovers(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis").start()
    link = RedisLink(server.url, retry_after=0.05)
    assert await link.ping()
    server.stop()
    results = await asyncio.gather(*(link.ping() for _ in range(50)))
    assert not any(results)
    server.start()
    await eventually_async(link.ping, "the link to reconnect", timeout=10)
    assert all(await asyncio.gather(*(link.ping() for _ in range(50))))
    await link.close()
    server.stop()
