"""The link on a real Redis Cluster of three masters: routing by slot, replies in the batch's
order, scripts loaded on every node, ``ASK`` and ``MOVED`` followed through a slot migration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import pairwise

import pytest
import redis

from fraudstack.adapters.redis_clients import redis_client
from fraudstack.adapters.redis_cluster import ClusterLink, key_slot, split_cluster_url
from fraudstack.adapters.redis_link import RedisLink, encode_command
from fraudstack.devstack.redis_server import PrivateRedisCluster
from fraudstack.errors import ScriptNotLoaded, StoreRefused, StoreUnavailable
from support.waiting import eventually, eventually_async


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    servers = PrivateRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield servers
    servers.stop()


def _node(cluster: PrivateRedisCluster, port: int) -> redis.Redis:
    return redis.Redis(port=port)


def _owner(cluster: PrivateRedisCluster, slot: int) -> int:
    """The port of the master serving ``slot``, as the cluster itself says."""
    with _node(cluster, cluster.ports[0]) as node:
        for first, last, master, *_ in node.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(master[1])
    raise AssertionError(f"slot {slot} unserved")


def test_a_cluster_url_makes_a_cluster_link_and_names_its_seeds() -> None:
    link = RedisLink("rediss+cluster://user:secret@10.0.0.1:7000,10.0.0.2:7001?ssl_cert_reqs=none")
    assert isinstance(link, ClusterLink)
    assert type(RedisLink("redis://127.0.0.1:6379/0")) is RedisLink
    seeds, template = split_cluster_url(link.url)
    assert seeds == ["10.0.0.1:7000", "10.0.0.2:7001"]
    assert template == "rediss://user:secret@{address}/0?ssl_cert_reqs=none"
    seeds, template = split_cluster_url("redis+cluster://:p%40ss{x}@h1:1,h2:2")
    assert seeds == ["h1:1", "h2:2"]
    assert template.replace("{address}", "h2:2", 1) == "redis://:p%40ss{x}@h2:2/0"
    with pytest.raises(StoreUnavailable, match="database 0"):
        RedisLink("redis+cluster://127.0.0.1:7000/3")


def test_slots_are_the_servers_hash_tags_included(cluster: PrivateRedisCluster) -> None:
    keys = ["fs:{customer:42}", "fs:{terminal:7}:events", "plain", "{}empty-tag", "a{b", "x{}{y}"]
    with _node(cluster, cluster.ports[0]) as node:
        for key in keys:
            assert key_slot(key.encode()) == node.execute_command("CLUSTER", "KEYSLOT", key)


async def test_a_batch_over_every_node_comes_back_in_order(cluster: PrivateRedisCluster) -> None:
    link = RedisLink(cluster.url, timeout=5.0)
    try:
        keys = [f"fs:{{customer:batch-{n}}}" for n in range(300)]
        assert {_owner(cluster, key_slot(k.encode())) for k in keys} == set(cluster.ports)
        await link.execute_many([("SET", key, str(n)) for n, key in enumerate(keys)])
        # interleaved keyless and keyed commands, one write per node, replies in the batch's order
        batch = [c for n, key in enumerate(keys) for c in (("GET", key), ("PING",))]
        replies = await link.execute_many(batch)
        assert replies[0::2] == [str(n).encode() for n in range(300)]
        assert set(replies[1::2]) <= {b"PONG", "PONG"}
        # pre-encoded commands (the request path's HMGET) are split alike
        payload = b"".join(encode_command(b"GET", key) for key in keys[:40])
        assert await link.execute(payload, 40) == [str(n).encode() for n in range(40)]
        # concurrent requests, each with its own reply
        singles = await asyncio.gather(*(link.get(key) for key in keys))
        assert singles == [str(n).encode() for n in range(300)]
        # every key landed on the node its slot names
        for port in cluster.ports:
            with _node(cluster, port) as node:
                assert node.dbsize() > 0
        assert await link.ping()
        with pytest.raises(StoreRefused, match="WRONGTYPE"):
            await link.execute_many([("HGET", keys[0], "field")])
    finally:
        await link.close()


async def test_scripts_load_on_every_node_and_run_by_their_first_key(
    cluster: PrivateRedisCluster,
) -> None:
    link = RedisLink(cluster.url, timeout=5.0)
    source = "return redis.call('INCR', KEYS[1])"
    try:
        await link.execute_many([("SCRIPT", "FLUSH")])
        keys = [f"{{terminal:script-{n}}}:count" for n in range(30)]
        (sha,) = await link.execute_many([("SCRIPT", "LOAD", source)])
        with pytest.raises(ScriptNotLoaded):
            await link.execute_many([("SCRIPT", "FLUSH"), ("EVALSHA", sha, 1, keys[0])])
        await link.execute_many([("SCRIPT", "LOAD", source)])
        for port in cluster.ports:
            with _node(cluster, port) as node:
                assert node.script_exists(sha) == [True]
        replies = await link.execute_many([("EVALSHA", sha, 1, key) for key in keys])
        assert replies == [1] * 30
        assert await link.execute_many([("EVAL", source, 1, keys[3])]) == [2]
    finally:
        await link.close()


async def test_scan_walks_every_node(cluster: PrivateRedisCluster) -> None:
    link = RedisLink(cluster.url, timeout=5.0)
    try:
        wanted = {f"fs:{{scan:{n}}}" for n in range(120)}
        await link.execute_many([("SET", key, "1") for key in wanted])
        seen: set[str] = set()
        cursor: bytes | str = b"0"
        while True:
            ((cursor, keys),) = await link.execute_many(
                [("SCAN", cursor, "MATCH", "fs:{scan:*}", "COUNT", 10)]
            )
            seen.update(key.decode() for key in keys)
            if cursor in (b"0", "0"):
                break
        assert seen == wanted
    finally:
        await link.close()


async def test_ask_then_moved_are_followed_through_a_slot_migration(
    cluster: PrivateRedisCluster,
) -> None:
    """Migrate one slot by hand as ``redis-cli --cluster reshard`` would: while it migrates, a
    key already moved answers ``ASK`` from the source; once the slot is handed over, the source
    answers ``MOVED`` and the link refreshes its slot map."""
    link = RedisLink(cluster.url, timeout=5.0)
    assert isinstance(link, ClusterLink)
    key, other = "fs:{customer:migrating}", "fs:{customer:migrating}:second"
    slot = key_slot(key.encode())
    source_port = _owner(cluster, slot)
    target_port = next(port for port in cluster.ports if port != source_port)
    with _node(cluster, source_port) as source, _node(cluster, target_port) as target:
        source_id = source.execute_command("CLUSTER", "MYID").decode()
        target_id = target.execute_command("CLUSTER", "MYID").decode()
        try:
            await link.execute_many([("SET", key, "before"), ("SET", other, "stays")])
            refreshes = link.refreshes
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            source.execute_command("MIGRATE", "127.0.0.1", target_port, key, 0, 5000)
            # the moved key by ASK, the one not yet moved from the source, in one batch
            assert await link.execute_many([("GET", key), ("GET", other)]) == [b"before", b"stays"]
            assert link.refreshes == refreshes  # ASK does not change the slot map
            source.execute_command("MIGRATE", "127.0.0.1", target_port, other, 0, 5000)
            for port in cluster.ports:
                with _node(cluster, port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            keys = [f"fs:{{customer:after-{n}}}" for n in range(50)]
            batch = [("GET", key), *(("SET", k, k) for k in keys), ("GET", other)]
            replies = await link.execute_many(batch)
            assert replies[0] == b"before" and replies[-1] == b"stays"
            assert link.refreshes == refreshes + 1  # MOVED: the whole map, once
            assert await link.execute_many([("GET", k) for k in keys]) == [k.encode() for k in keys]
        finally:
            # hand the slot back, so the cluster stays as the fixture made it
            for moved in (key, other):
                if target.exists(moved):
                    target.delete(moved)
            for port in cluster.ports:
                with _node(cluster, port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", source_id)
            await link.close()


def test_redis_py_clients_take_the_same_url(cluster: PrivateRedisCluster) -> None:
    client = redis_client(cluster.url)
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        client.set("fs:{customer:redis-py}", "yes")
        assert client.get("fs:{customer:redis-py}") == b"yes"
        assert len(client.get_primaries()) == len(cluster.ports)
    finally:
        client.close()
    single = redis_client(f"redis://127.0.0.1:{cluster.ports[0]}/0")
    assert type(single) is redis.Redis
    single.close()


def test_slot_ranges_cover_every_slot_once(cluster: PrivateRedisCluster) -> None:
    with _node(cluster, cluster.ports[0]) as node:
        ranges = sorted(
            (first, last) for first, last, *_ in node.execute_command("CLUSTER", "SLOTS")
        )
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383
    assert all(after[0] == before[1] + 1 for before, after in pairwise(ranges))


async def test_a_master_restarted_is_found_again_without_a_new_link(
    cluster: PrivateRedisCluster,
) -> None:
    """A master that goes away fails its own commands at once (503 upstream), and the link
    asks for the slot map again; once it is back (its node file keeps its slots), the same link
    serves its keys again."""
    link = RedisLink(cluster.url, timeout=2.0, retry_after=0.05)
    assert isinstance(link, ClusterLink)
    server = cluster.servers[0]
    mine = next(
        f"fs:{{customer:restart-{n}}}"
        for n in range(1000)
        if _owner(cluster, key_slot(f"fs:{{customer:restart-{n}}}".encode())) == server.port
    )
    try:
        await link.execute_many([("SET", mine, "1")])
        refreshes = link.refreshes
        server.stop()
        with pytest.raises(StoreUnavailable):
            await link.execute_many([("GET", mine)])
        server.start()

        async def served() -> bool:
            try:
                await link.execute_many([("SET", mine, "2")])
            except (StoreUnavailable, StoreRefused):  # CLUSTERDOWN while it rejoins
                return False
            return True

        await eventually_async(served, "the restarted master to serve its slots", timeout=30)
        assert await link.get(mine) == b"2"
        assert link.refreshes > refreshes  # the map was asked for again
    finally:
        await link.close()
        if server.process is None:
            server.start()
        eventually(lambda: all(_cluster_state_ok(port) for port in cluster.ports), "cluster ok")


def _cluster_state_ok(port: int) -> bool:
    with redis.Redis(port=port) as node:
        return b"cluster_state:ok" in node.execute_command("CLUSTER", "INFO")


async def test_send_returns_error_replies_as_the_single_link_does(
    cluster: PrivateRedisCluster,
) -> None:
    link = RedisLink(cluster.url, timeout=5.0)
    try:
        await link.execute_many([("SET", "fs:{customer:send}", "text")])
        payload = encode_command("GET", "fs:{customer:send}") + encode_command(
            "HGET", "fs:{customer:send}", "field"
        )
        value, refused = await link.send(payload, 2)
        assert value == b"text" and "WRONGTYPE" in str(refused)
    finally:
        await link.close()


async def test_a_cluster_that_requires_a_password(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The chart always sets a password: every node's session authenticates with the URL's."""
    secured = PrivateRedisCluster(
        tmp_path_factory.mktemp("redis-cluster-auth"), password="s3cret/with:odd@chars"
    ).start()
    try:
        link = RedisLink(secured.url, timeout=5.0)
        try:
            keys = [f"fs:{{customer:auth-{n}}}" for n in range(60)]
            await link.execute_many([("SET", key, key) for key in keys])
            assert await link.execute_many([("GET", key) for key in keys]) == [
                key.encode() for key in keys
            ]
        finally:
            await link.close()
        wrong = RedisLink(secured.url.replace("s3cret", "wrong"), timeout=5.0)
        with pytest.raises(StoreUnavailable):
            await wrong.execute_many([("GET", keys[0])])
        assert not await wrong.ping()
        await wrong.close()
        client = redis_client(secured.url)
        try:
            assert client.get(keys[1]) == keys[1].encode()
        finally:
            client.close()
    finally:
        secured.stop()
