"""The online store's layout, codecs, scripts and reads, against a real redis-server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
import redis

from fraudstack.adapters.online_store import scripts
from fraudstack.adapters.online_store.codecs import (
    LastTransaction,
    customer_history,
    customer_history_fields,
    pack_customer_features,
    unpack_customer_features,
)
from fraudstack.adapters.online_store.layout import (
    CUSTOMER_FEATURES_FIELD,
    RETIRED_FEATURE_FIELDS,
    customer_id_of,
    customer_key,
    event_field,
    owners_key,
    terminal_keys,
    watermarks_key,
)
from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.adapters.online_store.writer import (
    CUSTOMER_FENCED,
    OnlineStoreWriter,
    TerminalItems,
)
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import ScriptNotLoaded, StoreRefused
from fraudstack.features.definitions import MS_PER_DAY, MS_PER_HOUR, TERMINAL_WINDOWS
from fraudstack.features.online import (
    CustomerHistory,
    TerminalHistory,
    customer_features,
    history_counts,
)

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
    # the summary fields are not events, the packed features not even text
    as_redis |= {b"_event_ts": b"123", b"_customer": b"\xff\xfe" + bytes(158) + b"7"}
    assert customer_history(as_redis) == history
    assert customer_history({}) == CustomerHistory()
    with pytest.raises(ValueError, match="malformed customer event"):
        customer_history({b"e:1": b"12"})


def test_packed_customer_features_are_exact_and_only_their_transactions() -> None:
    history = CustomerHistory()
    for i in range(40):
        history.add(str(i), T - i * 3_600_000, 1_000 + 37 * i)
    features = customer_features(history, "0", T, 1_000)
    packed = pack_customer_features(features, "0")
    assert unpack_customer_features(packed, "0") == features  # doubles, bit for bit
    assert unpack_customer_features(packed, "1") is None  # another transaction's
    assert unpack_customer_features(None, "0") is None
    shorter = packed[8:]  # a feature set with one feature fewer
    assert unpack_customer_features(shorter, "0") is None


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


# --- the fence: what a stale writer cannot change (see the writer's docstring) --------------


def _terminal_state(client: redis.Redis, terminal: str) -> dict[bytes, bytes]:
    return client.hgetall(terminal_keys(terminal)[0])


async def test_a_stale_terminal_writer_moves_nothing_back(store: PrivateRedis) -> None:
    """Terminals are written by every instance, so they are monotone rather than fenced: after
    a prune, an older call (an old low watermark, an old clock, events behind the prune) leaves
    the newest event time, the prune's cut-off and the newest time dropped where they were, and
    puts no pruned event back."""
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "transactions", 0)
    client = redis.Redis.from_url(store.url)
    name = "t-stale"
    keys = terminal_keys(name)
    try:
        old = [(f"old-{i}", T - 50 * MS_PER_DAY + i, f"c-{i}", False) for i in range(5)]
        recent = [("new", T, "c-new", False)]
        commands, _ = writer.terminal_writes([TerminalItems(name, old + recent)], T, 0)
        await writer.execute(commands)
        commands, _ = writer.terminal_writes(
            [TerminalItems(name, [("probe", T, "c", False)])], T, T
        )
        await writer.execute(commands)  # the prune, behind the low watermark T
        pruned = _terminal_state(client, name)
        assert client.zcard(keys[1]) == 2 and b"_pruned_at" in pruned

        # the stale writer: its old batch (events behind the prune, labels of them), an old
        # clock and an old low watermark
        # and a replay of what it wrote before the stall
        stale = TerminalItems(name, old + recent, labels=[("old-1", T - 50 * MS_PER_DAY + 1)])
        commands, _ = writer.terminal_writes([stale], T - MS_PER_DAY, T - 20 * MS_PER_DAY)
        (reply,) = await writer.execute(commands)
        written = writer.terminal_written(name, reply)
        after = _terminal_state(client, name)
    finally:
        await link.close()
        client.close()
    assert written.skipped == 6  # five events and a label, all behind the prune
    assert client.zcard(keys[1]) == 2 and client.zcard(keys[2]) == 0  # nothing put back
    assert client.zcard(keys[5]) == 2  # nor any customer's newest transaction
    for field in (b"_event_ts", b"_pruned_at", b"_dropped", b"_updated_at"):
        assert after[field] == pruned[field], field
    assert int(after[b"_seq"]) > int(pruned[b"_seq"])  # the counter only counts up


async def test_a_customer_write_drops_the_fields_of_the_layout_before_packed_features(
    store: PrivateRedis,
) -> None:
    """A hash an older release wrote keeps its events; its per-feature fields go with the next
    write, which stores the packed ones instead."""
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "layout-topic", 0)
    client = redis.Redis.from_url(store.url)
    key = customer_key("c-layout")
    old_layout = {name: "1.0" for name in RETIRED_FEATURE_FIELDS}
    client.hset(
        key, mapping={event_field("a"): f"{T}:100", "_last_txn": f"a:{T}:100:t", **old_layout}
    )
    history = CustomerHistory()
    history.add("a", T, 100)
    history.add("b", T + 1, 250)
    try:
        last = LastTransaction("b", T + 1, 250, "t")
        command = writer.customer_write("c-layout", {"b": (T + 1, 250)}, history, last, [], T)
        assert await writer.execute([command]) == [1]
        after = client.hgetall(key)
    finally:
        await link.close()
        client.close()
    assert not {name.encode() for name in RETIRED_FEATURE_FIELDS} & after.keys()
    assert customer_history(after) == history
    packed = unpack_customer_features(after[CUSTOMER_FEATURES_FIELD.encode()], "b")
    assert packed == customer_features(history, "b", T + 1, 250)


async def test_an_older_epoch_is_refused_by_the_customer_and_the_watermarks(
    store: PrivateRedis,
) -> None:
    """The partition-owned writes are fenced: once a newer epoch has claimed the partition (and,
    for a customer, written it), a write under the older one changes nothing; the owner's
    published watermark never moves back."""
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "fenced-topic", 0)
    client = redis.Redis.from_url(store.url)
    key = customer_key("c-epoch")
    try:
        stale_epoch = await writer.claim([0, 1])
        owner_epoch = await writer.claim([0])
        assert owner_epoch > stale_epoch

        def write(txn_id: str, ts_ms: int, epoch: int) -> list[str | int | float]:
            history = CustomerHistory()
            history.add(txn_id, ts_ms, 100)
            last = LastTransaction(txn_id, ts_ms, 100, "t")
            return writer.customer_write(
                "c-epoch", {txn_id: (ts_ms, 100)}, history, last, [], T, epoch
            )

        assert await writer.execute([write("a", T, owner_epoch)]) == [1]
        owned = client.hgetall(key)
        # newer, the same transaction, or deleting: all refused under the older epoch
        assert await writer.execute([write("b", T + 1, stale_epoch)]) == [CUSTOMER_FENCED]
        assert await writer.execute([write("a", T, stale_epoch)]) == [CUSTOMER_FENCED]
        assert client.hgetall(key) == owned

        assert await writer.execute(writer.watermarks_write({0: (T, owner_epoch)})) == [0]
        refused = writer.watermarks_write({0: (T + MS_PER_DAY, stale_epoch), 1: (T, stale_epoch)})
        assert await writer.execute(refused) == [1]  # partition 0 moved; 1 is still the stale one's
        assert await writer.execute(writer.watermarks_write({0: (T - 1, owner_epoch)})) == [0]
        published = client.hgetall(watermarks_key("fenced-topic"))
    finally:
        await link.close()
        client.close()
    assert published == {b"0": str(T).encode(), b"1": str(T).encode()}  # never back, never ahead


async def test_an_epoch_claimed_after_the_store_was_lost_is_newer_than_any_before(
    store: PrivateRedis,
) -> None:
    """The epoch counter goes with a store that comes back empty; counted from 1 again, a new
    owner would be older than a stalled writer's epoch of before the loss, and refused by what
    that writer put back. The counter never goes below the server's clock (ms), so it is not."""
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "lost-topic", 0)
    client = redis.Redis.from_url(store.url)
    try:
        before = [await writer.claim([0]) for _ in range(3)]
        assert before == sorted(set(before))  # strictly increasing
        # what a Redis back empty holds of it, a restart later (the counter runs ahead of the
        # clock only with more than one claim a millisecond)
        await asyncio.sleep(0.01)
        client.delete(owners_key("lost-topic"))
        after = await writer.claim([0])
    finally:
        await link.close()
        client.close()
    assert after > before[-1]


async def test_a_recount_goes_a_page_at_a_time_and_misses_no_customer(
    store: PrivateRedis,
) -> None:
    """A late label reaches 40 customers' newest transactions, many at the same millisecond
    (ties across a page's edge): with a page of 7, the recount goes on call after call until
    none is pending, counts each customer's newest transaction here exactly once per pass and
    with the history's counts, and never an older one."""
    link = RedisLink(store.url, timeout=10.0)
    writer = OnlineStoreWriter(link, "transactions", MS_PER_HOUR, recount_page=7)
    name = "t-paged"
    history = TerminalHistory()
    try:
        events = [("fraud", T, "c-fraud", False)]
        for n in range(40):
            customer = f"c-{n:02d}"
            ts = T + 8 * MS_PER_DAY + (n // 6) * 1_000  # six customers per millisecond
            events.append((f"old-{n}", ts - MS_PER_DAY, customer, False))
            events.append((f"new-{n}", ts, customer, False))
        for txn_id, ts, customer, _ in events:
            history.add(txn_id, ts, customer)
        commands, _ = writer.terminal_writes([TerminalItems(name, events)], T, 0)
        await writer.execute(commands)
        # the fraud's event, 8 days older than the rest, left them a pending recount, which the
        # label's call continues
        history.add_label("fraud", True, T + MS_PER_DAY, T)
        label = TerminalItems(name, labels=[("fraud", T)])
        commands, _ = writer.terminal_writes([label], T, 0)
        counted: list[tuple[str, str, tuple[int, ...]]] = []
        calls = 0
        while commands:
            replies = await writer.execute(commands[:1])  # one call at a time
            written = writer.terminal_written(name, replies[0])
            calls += 1
            # a page stops before its last millisecond, then takes all of that millisecond's
            assert len(written.counted) <= 6 + 6
            counted += [(c.txn_id, c.customer_id, c.counts) for c in written.counted]
            commands = writer.recount_writes([name], T, 0)[0] if written.pending else []
    finally:
        await link.close()
    assert calls >= 4
    assert sorted(txn for txn, _, _ in counted) == sorted(f"new-{n}" for n in range(40))
    for txn_id, _, counts in counted:
        ts = T + 8 * MS_PER_DAY + (int(txn_id[4:]) // 6) * 1_000
        assert counts == history_counts(history, ts), txn_id
        assert counts[3] == 1  # the late fraud, in the 7-day window (after the 1-day one)
