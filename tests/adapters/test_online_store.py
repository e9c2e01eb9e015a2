"""The online store's layout, codecs, scripts and reads, against a real redis-server."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from fraudstack.adapters.online_store import scripts
from fraudstack.adapters.online_store.codecs import customer_history, customer_history_fields
from fraudstack.adapters.online_store.layout import (
    customer_id_of,
    customer_key,
    event_field,
    terminal_keys,
)
from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.adapters.online_store.writer import OnlineStoreWriter, TerminalItems
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import ScriptNotLoaded, StoreRefused
from fraudstack.features.definitions import MS_PER_DAY, MS_PER_HOUR, TERMINAL_WINDOWS
from fraudstack.features.online import CustomerHistory, TerminalHistory, history_counts

T = 1_700_000_000_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private redis-server, so these tests may flush its scripts and write what they like."""
    server = PrivateRedis(tmp_path_factory.mktemp("online-store")).start()
    yield server
    server.stop()


def test_every_key_of_an_entity_is_in_its_hash_tag_slot() -> None:
    for key in terminal_keys("t:1"):
        assert key.startswith("fs:{terminal:t:1}")
    assert customer_key("c}1").startswith("fs:{customer:")
    assert customer_id_of(customer_key("c-1").encode()) == "c-1"
    with pytest.raises(ValueError, match="not a customer key"):
        customer_id_of(terminal_keys("t")[0])


def test_customer_fields_round_trip_as_text_and_bytes() -> None:
    history = CustomerHistory()
    for i in range(150):
        history.add(str(i), T + (i % 7) * 1_000, 10 * i)
    fields = customer_history_fields(history)
    assert fields[event_field("3")] == f"{T + 3_000}:30"
    assert customer_history(fields) == history
    as_redis = {key.encode(): value.encode() for key, value in fields.items()}
    as_redis |= {b"_event_ts": b"123", b"customer_nb_tx_1d": b"4.0"}
    assert customer_history(as_redis) == history
    assert customer_history({}) == CustomerHistory()
    with pytest.raises(ValueError, match="malformed customer event"):
        customer_history({b"e:1": b"12"})


async def test_an_unknown_script_is_a_typed_error_and_is_loaded_again(store: PrivateRedis) -> None:
    client = redis.Redis.from_url(store.url)
    client.script_flush()
    link = RedisLink(store.url, timeout=5.0)
    command = scripts.SNAPSHOT_WRITE.call((customer_key("c-script"),), "x", 1, 1, "x:1:1", 60)
    try:
        with pytest.raises(ScriptNotLoaded):
            await link.execute_many([command])
        with pytest.raises(StoreRefused) as refused:
            await link.execute_many([("HSET", "only-a-key")])
        assert refused.value.code == "ERR" and not isinstance(refused.value, ScriptNotLoaded)
        assert await scripts.execute(link, [command]) == [1]  # loaded, then run
    finally:
        await link.close()
        client.close()


def _random_terminal(rng: random.Random, name: str) -> tuple[TerminalHistory, list[TerminalItems]]:
    """A terminal with events on the windows' edges, late and early labels, labels whose event
    never comes, as the history knows it and as script calls in a random order."""
    history = TerminalHistory()
    day = MS_PER_DAY
    through = T - 7 * day
    edges = [through - length for _, _, length in TERMINAL_WINDOWS] + [through]
    items: list[TerminalItems] = []
    for i in range(rng.randrange(0, 80)):
        ts = (
            rng.choice(edges) + rng.choice((-1, 0, 1))
            if i % 3 == 0
            else T - rng.randrange(40 * day)
        )
        txn_id = f"{name}-{i}"
        history.add(txn_id, ts, "c")
        items.append(TerminalItems(name, events=[(txn_id, ts, "c", False)]))
        if rng.random() < 0.25:
            history.add_label(txn_id, True, ts + day, ts)
            items.append(TerminalItems(name, labels=[(txn_id, ts)]))
    for i in range(rng.randrange(0, 3)):  # labels whose transaction never arrives
        ts = T - rng.randrange(8 * day, 20 * day)
        history.add_label(f"{name}-orphan{i}", True, ts + day, ts)
        items.append(TerminalItems(name, labels=[(f"{name}-orphan{i}", ts)]))
    rng.shuffle(items)
    return history, items


async def test_terminal_windows_counted_in_redis_equal_the_history(store: PrivateRedis) -> None:
    """Random terminals written by the terminal script in a random order (labels before and
    after their event), then read with six ZCOUNT: the counts equal the history's, event by
    event, at the transaction's time and on every window edge."""
    rng = random.Random(11)
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "transactions", MS_PER_HOUR)
    reader = OnlineStoreReader(link)
    try:
        for case in range(40):
            name = f"t-random-{case}"
            history, items = _random_terminal(rng, name)
            commands, _ = writer.terminal_writes(items, T, low_watermark=0)  # nothing pruned
            await writer.execute(commands)
            for ts_ms in (T, T - 1, T + 1, T + MS_PER_DAY):
                assert await reader.terminal_counts(name, ts_ms) == history_counts(
                    history, ts_ms
                ), (case, ts_ms)
    finally:
        await link.close()


async def test_the_script_counts_the_transactions_asked_for_and_prunes_behind_the_watermark(
    store: PrivateRedis,
) -> None:
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "transactions", 0)
    client = redis.Redis.from_url(store.url)
    keys = terminal_keys("t-prune")
    try:
        old = [(f"old-{i}", T - 50 * MS_PER_DAY + i, "c-old", False) for i in range(5)]
        recent = [(f"new-{i}", T - 8 * MS_PER_DAY + i, "c-new", False) for i in range(3)]
        # a low watermark of 0: a partition not read yet holds every prune back
        commands, _ = writer.terminal_writes([TerminalItems("t-prune", old + recent)], T, 0)
        await writer.execute(commands)
        assert client.zcard(keys[1]) == 8
        probe = [("probe", T, "c-probe", True)]
        commands, _ = writer.terminal_writes([TerminalItems("t-prune", probe)], T, T)
        (reply,) = await writer.execute(commands)
        written = writer.terminal_written("t-prune", reply)
        assert [(c.txn_id, c.customer_id, c.counts) for c in written.counted] == [
            ("probe", "c-probe", (2, 0, 3, 0, 3, 0))  # T - 8 d itself is out of 1 d
        ]
        assert written.dropped == T - 50 * MS_PER_DAY + 4  # the newest time pruned
        assert client.zcard(keys[1]) == 4  # the three recent events and the probe
        assert client.hlen(keys[4]) == 4  # their customers, and only theirs
        assert all(client.ttl(key) > 0 for key in keys if client.exists(key))
    finally:
        await link.close()
        client.close()
