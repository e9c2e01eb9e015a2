"""Reads of the online store, for the inference service, the snapshots and the consistency check.

What each read costs, in an entity's event count n (see :mod:`.layout`):

* :meth:`OnlineStoreReader.newest` (``GET /predict``): one ``HMGET`` of the customer hash, O(1).
* :meth:`OnlineStoreReader.for_transaction` (``POST /v1/score``): the customer hash (its raw
  history, bounded by the 30-day horizon) and six ``ZCOUNT`` on the terminal, O(log n), sent in
  one write: one round trip, each command on one key, so each on one Redis Cluster slot.

Both, when asked to (the inference service does), also read the store's generation marker in the
same round trip, and raise :class:`~fraudstack.errors.StoreNotReady` rather than answer from a
store that came back empty and is being rebuilt (see :mod:`.generation`).

Every failure is the link's :class:`~fraudstack.errors.StoreError` (``StoreUnavailable`` when
Redis cannot be reached), mapped at the link.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fraudstack.adapters.online_store.codecs import (
    CustomerRecord,
    LastTransaction,
    customer_record,
    unpack_customer_features,
)
from fraudstack.adapters.online_store.generation import READY_READ
from fraudstack.adapters.online_store.layout import (
    CUSTOMER_FEATURES_FIELD,
    CUSTOMER_PATTERN,
    EVENT_TS_FIELD,
    LAST_TXN_FIELD,
    TERMINAL_SNAPSHOT_FIELD,
    customer_id_of,
    customer_key,
    terminal_events_key,
    terminal_frauds_key,
)
from fraudstack.adapters.redis_link import (
    Command,
    RedisLink,
    bulk_string,
    command_head,
    encode_commands,
    hash_reply,
)
from fraudstack.errors import StoreNotReady
from fraudstack.features.online import terminal_window_bounds

_NEWEST_FIELDS = (LAST_TXN_FIELD, EVENT_TS_FIELD, TERMINAL_SNAPSHOT_FIELD, CUSTOMER_FEATURES_FIELD)
# the constant parts of "HMGET <key> <fields...>", encoded once (the request path's hottest read)
_NEWEST_HEAD = command_head(len(_NEWEST_FIELDS) + 2) + bulk_string("HMGET")
_NEWEST_TAIL = b"".join(map(bulk_string, _NEWEST_FIELDS))
_READY_READ = encode_commands([READY_READ])
NOT_READY = (
    "the online store is being rebuilt (it came back empty; the aggregators are replaying the "
    "topics into it): its features would be wrong"
)
#: Commands of one terminal's window counts (an events and a frauds count per window).
_COUNT_COMMANDS = 2 * len(terminal_window_bounds(0))


@dataclass(frozen=True, slots=True)
class NewestRecord:
    """What the customer hash holds about its newest transaction."""

    last: LastTransaction
    event_ts_ms: int | None
    #: its customer features by name; None when missing or another transaction's (recompute
    #: them from the events)
    customer_features: dict[str, float] | None
    #: the stored terminal windows, raw (see :func:`~.codecs.snapshot_features`)
    terminal_snapshot: bytes | None


def terminal_count_commands(terminal_id: str, ts_ms: int) -> list[Command]:
    """The ``ZCOUNT`` commands of a transaction's terminal windows at ``ts_ms``, in the order of
    :func:`~fraudstack.features.online.terminal_counts`."""
    events, frauds = terminal_events_key(terminal_id), terminal_frauds_key(terminal_id)
    commands: list[Command] = []
    for after, through in terminal_window_bounds(ts_ms):
        lower, upper = f"({after}", str(through)
        commands.append(("ZCOUNT", events, lower, upper))
        commands.append(("ZCOUNT", frauds, lower, upper))
    return commands


class OnlineStoreReader:
    """Reads over one pipelined :class:`~fraudstack.adapters.redis_link.RedisLink`."""

    def __init__(self, link: RedisLink, require_ready: bool = False) -> None:
        self.link = link
        #: raise StoreNotReady from the requests' reads while the store is not ready
        self.require_ready = require_ready

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> OnlineStoreReader:
        """A reader with a link of its own (for batch jobs; close it with :meth:`close`). It
        reads a store that is not ready too: the consistency check compares one as it is."""
        return cls(RedisLink(url, timeout=timeout))

    async def close(self) -> None:
        await self.link.close()

    async def newest(self, customer_id: str) -> NewestRecord | None:
        """The customer's newest transaction as stored, in ONE ``HMGET``; None if unknown."""
        payload = _NEWEST_HEAD + bulk_string(customer_key(customer_id)) + _NEWEST_TAIL
        if self.require_ready:
            values, ready = await self.link.execute(payload + _READY_READ, 2)
            if ready is None:
                raise StoreNotReady(NOT_READY)
        else:
            (values,) = await self.link.execute(payload)
        raw_last, raw_event_ts, raw_snapshot, raw_features = values
        if raw_last is None:
            return None
        last = LastTransaction.decode(raw_last)
        return NewestRecord(
            last,
            int(raw_event_ts) if raw_event_ts is not None else None,
            unpack_customer_features(raw_features, last.txn_id),
            raw_snapshot,
        )

    async def customer(self, customer_id: str) -> CustomerRecord | None:
        """The customer's whole hash (its events and newest transaction); None if unknown."""
        (flat,) = await self.link.execute(encode_commands([("HGETALL", customer_key(customer_id))]))
        return customer_record(hash_reply(flat))

    async def customers(self, customer_ids: Sequence[str]) -> list[CustomerRecord | None]:
        """Several customers in one round trip."""
        if not customer_ids:
            return []
        replies = await self.link.execute_many([("HGETALL", customer_key(c)) for c in customer_ids])
        return [customer_record(hash_reply(flat)) for flat in replies]

    async def terminal_counts(self, terminal_id: str, ts_ms: int) -> tuple[int, ...]:
        """The terminal windows of a transaction at ``ts_ms`` as whole numbers, O(log n)."""
        return tuple(await self.link.execute_many(terminal_count_commands(terminal_id, ts_ms)))

    async def terminal_counts_many(
        self, wanted: Sequence[tuple[str, int]]
    ) -> list[tuple[int, ...]]:
        """:meth:`terminal_counts` of several (terminal, ts) in one round trip."""
        if not wanted:
            return []
        commands = [c for terminal, ts in wanted for c in terminal_count_commands(terminal, ts)]
        replies = await self.link.execute_many(commands)
        width = _COUNT_COMMANDS
        return [tuple(replies[i : i + width]) for i in range(0, len(replies), width)]

    async def for_transaction(
        self, customer_id: str, terminal_id: str, ts_ms: int
    ) -> tuple[CustomerRecord | None, tuple[int, ...]]:
        """A transaction's customer (None if unknown) and its terminal windows' counts at
        ``ts_ms``, in ONE round trip."""
        commands: list[Command] = [("HGETALL", customer_key(customer_id))]
        commands += terminal_count_commands(terminal_id, ts_ms)
        if self.require_ready:
            commands.append(READY_READ)
        replies: list[Any] = await self.link.execute_many(commands)
        if self.require_ready and replies.pop() is None:
            raise StoreNotReady(NOT_READY)
        return customer_record(hash_reply(replies[0])), tuple(replies[1:])

    async def customer_ids(self, batch: int = 1_000) -> AsyncIterator[list[str]]:
        """Every customer in the store, in batches (``SCAN``: no long call on a big store)."""
        cursor = b"0"
        while True:
            (reply,) = await self.link.execute_many(
                [("SCAN", cursor, "MATCH", CUSTOMER_PATTERN, "COUNT", batch)]
            )
            cursor, keys = reply[0], reply[1]
            if keys:
                yield [customer_id_of(key) for key in keys]
            if cursor in (b"0", "0"):
                return

    async def ping(self) -> bool:
        return await self.link.ping()
