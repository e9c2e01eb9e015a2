"""Writes to the online store, for the aggregator and the bulk loader alike.

What each write costs, in an entity's event count n (see :mod:`.layout` for the layout):

* a customer: one script call (``customer_write.lua``): its new event fields, an ``HDEL`` of
  what fell out of its horizon, and its newest transaction's features; the customer's history,
  bounded by the horizon, is the aggregator's (it owns the customer's partition).
* a terminal: one script call per terminal and batch (``terminal_write.lua``, split into calls
  of at most :data:`MAX_ITEMS_PER_SCRIPT_CALL` items so that no call holds Redis for long): a
  ``ZADD`` per event and label, the prune by ``ZREMRANGEBYSCORE`` and six ``ZCOUNT`` per
  transaction whose terminal windows the customer's hash stores, all O(log n). The script counts
  those windows on the terminal exactly as the call leaves it, so no instance keeps a copy of a
  terminal and nothing is ever sent whole. A late event or label that reaches stored windows
  leaves a pending recount on the terminal, which each call goes on with a page at a time
  (:data:`~.layout.RECOUNT_PAGE` customers); :meth:`OnlineStoreWriter.recount_writes` are the
  calls that only do that.
* the terminal windows of a customer's newest transaction (``_terminal``): written by
  ``snapshot_write.lua`` on the customer's key, which keeps only the newest transaction's, and
  of it only the count taken at the highest terminal ``_seq``, so concurrent instances cannot
  put an older count back.

Every write is idempotent (members and fields by transaction id; a snapshot replaces one of the
same transaction only with a newer count), so a batch replayed after a crash changes nothing.

**The fence** against a stale writer (an instance that lost partitions in a rebalance and
finishes an old batch later). Two kinds of write, two guards:

* What one partition's owner writes — a customer's hash (its events, its expired events'
  deletion, its newest transaction's features) and the partition's published watermark — is
  *fenced by an ownership epoch*: every assignment of partitions claims a new epoch in Redis
  (``claim.lua``: a counter bumped on each assignment, recorded as each partition's owner
  epoch), every write carries the epoch its batch was read under, and the scripts refuse an
  older one: the customer script against the ``_epoch`` its hash keeps of its last writer, the
  watermarks script against the partition's owner epoch. Newer-wins on ``_last_txn`` alone is
  not enough: a stale writer's write of the *same* newest transaction with a history one late
  event short passes it, and so would its deletions and its watermark, which is ahead of what
  the new owner has replayed and would let a prune cut into windows the new owner still needs.
  The customer's fence lives in the customer's own hash because a script may touch one Redis
  Cluster slot only: a stale writer can still write a customer the new owner has not written
  yet, which is harmless (the new owner reads the same records after it, and its write, with the
  newer epoch, replaces it).
  A snapshot of the writer's own customer (one of its batch) is fenced the same way: it may be
  of a transaction newer than the customer's stored one, which the snapshot script accepts
  (another instance's recount may come before the owner's write).
* What every instance writes — terminals (transactions are keyed by customer, so a terminal is
  written by every partition's owner) and the snapshots of other partitions' customers that a
  recount sends — can be fenced by no one partition's epoch, and is *idempotent and monotone*
  instead: events and labels are facts by id, and one at or before the terminal's last prune cut-off
  is not added back; ``_event_ts``, ``_updated_at``, ``_seq``, ``_pruned_at`` and ``_dropped`` only
  move forward, so a prune with an old low watermark does nothing; a snapshot is replaced only by a
  newer transaction's or by a count taken at a higher ``_seq`` (a count is exact as of its seq, so
  an old count never replaces a newer one); a recount is left in the terminal, not in an instance,
  so whoever calls next goes on with it.

A fenced write's reply says so (:data:`CUSTOMER_FENCED`, :data:`SNAPSHOT_FENCED`, the
watermarks script's count); the aggregator counts it, drops its partition-local state and does
not commit the batch. What the epoch does not cover: it is claimed in the consumer's assignment
callback, so an instance stalled *inside* that callback, between the group's assignment and its
claim, would claim after the next owner; it is fenced again at its next rebalance (the group's
generation id as the epoch would close that gap, but aiokafka does not expose it publicly).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from fraudstack.adapters.online_store import scripts
from fraudstack.adapters.online_store.codecs import (
    CustomerRecord,
    LastTransaction,
    TerminalSnapshot,
    customer_event_value,
    customer_history_fields,
    customer_record,
    customer_summary_fields,
)
from fraudstack.adapters.online_store.layout import (
    CUSTOMER_TTL_SECONDS,
    DROPPED_FIELD,
    EVENT_TS_FIELD,
    PRUNED_AT_FIELD,
    RECOUNT_PAGE,
    TERMINAL_SNAPSHOT_FIELD,
    TERMINAL_TTL_SECONDS,
    UPDATED_AT_FIELD,
    customer_key,
    event_field,
    owners_key,
    terminal_customers_key,
    terminal_events_key,
    terminal_frauds_key,
    terminal_key,
    terminal_keys,
    terminal_labels_key,
    terminal_latest_key,
    terminal_latest_txn_key,
    watermarks_key,
)
from fraudstack.adapters.redis_link import Command, RedisLink, hash_reply
from fraudstack.features.definitions import TERMINAL_HORIZON_MS, TERMINAL_WINDOWS
from fraudstack.features.online import CustomerHistory, TerminalHistory

#: Events and labels one terminal script call adds at most: a busy terminal's share of a large
#: batch goes in several calls (each idempotent), so that none holds Redis for long.
MAX_ITEMS_PER_SCRIPT_CALL = 100
#: Counts per transaction: events and frauds of each terminal window.
_COUNTS = 2 * len(TERMINAL_WINDOWS)
#: Recount calls sent for one terminal in one round trip (each a page; the extra ones are cheap).
RECOUNT_CALLS_PER_ROUND = 8
#: Customer script replies (see ``customer_write.lua``).
CUSTOMER_FENCED = 0
CUSTOMER_SUMMARY_OLDER = 2
#: Snapshot script reply: the writer was fenced off (see ``snapshot_write.lua``).
SNAPSHOT_FENCED = 2
#: Commands per pipeline send of the bulk loader.
_BULK_CHUNK = 10_000


@dataclass(slots=True)
class TerminalItems:
    """What one terminal script call adds: events (txn_id, ts, customer, whether to count the
    transaction's windows) and fraud labels that count (txn_id, ts)."""

    terminal_id: str
    events: list[tuple[str, int, str, bool]] = field(default_factory=list)
    labels: list[tuple[str, int]] = field(default_factory=list)

    def split(self, max_items: int) -> list[TerminalItems]:
        """These items as calls of at most ``max_items`` items each, events first."""
        if len(self.events) + len(self.labels) <= max_items:
            return [self]
        parts: list[TerminalItems] = []
        for start in range(0, len(self.events), max_items):
            parts.append(TerminalItems(self.terminal_id, self.events[start : start + max_items]))
        for start in range(0, len(self.labels), max_items):
            parts.append(
                TerminalItems(self.terminal_id, labels=self.labels[start : start + max_items])
            )
        return parts


@dataclass(frozen=True, slots=True)
class Counted:
    """The terminal windows of one transaction as the script counted them, for its customer."""

    txn_id: str
    ts_ms: int
    customer_id: str
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TerminalWritten:
    """A terminal script call's answer: the terminal's write counter after it, the newest time
    any prune deleted, whether a recount is left for a later call, how many items were behind
    the last prune (not added), and the windows counted."""

    terminal_id: str
    seq: int
    dropped: int
    pending: bool
    skipped: int
    counted: list[Counted]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class OnlineStoreWriter:
    """Builds and sends the store's writes; errors are the link's (``StoreError`` and below)."""

    def __init__(
        self,
        link: RedisLink,
        transactions_topic: str,
        allowed_lateness_ms: int,
        recount_page: int = RECOUNT_PAGE,
    ) -> None:
        self.link = link
        self.watermarks_key = watermarks_key(transactions_topic)
        self.owners_key = owners_key(transactions_topic)
        self.recount_page = recount_page
        #: how far back a terminal keeps its events and labels behind the low watermark
        self.terminal_horizon_ms = TERMINAL_HORIZON_MS + allowed_lateness_ms

    async def execute(self, commands: list[Command]) -> list[Any]:
        return await scripts.execute(self.link, commands)

    async def read_state(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[int, int], dict[str, CustomerRecord | None]]:
        """The partitions' published watermarks and these customers' records, one round trip."""
        wanted = list(customer_ids)
        replies = await self.link.execute_many(
            [("HGETALL", self.watermarks_key), *(("HGETALL", customer_key(c)) for c in wanted)]
        )
        published = {int(name): int(value) for name, value in hash_reply(replies[0]).items()}
        records = {
            customer: customer_record(hash_reply(fields))
            for customer, fields in zip(wanted, replies[1:], strict=True)
        }
        return published, records

    async def claim(self, partitions: Iterable[int]) -> int:
        """A new ownership epoch for these partitions, newer than any before (see the module's
        docstring: the fence); writes carrying an older one of them are refused from now on."""
        (epoch,) = await self.execute(
            [scripts.CLAIM.call((self.owners_key,), *(str(p) for p in partitions))]
        )
        return int(epoch)

    def watermarks_write(self, watermarks: Mapping[int, tuple[int, int]]) -> list[Command]:
        """Publish each partition's newest event time read (once its batch is written), given
        as partition -> (ts, the epoch the batch was read under). The reply is the number of
        partitions refused (their owner epoch is newer: this writer is stale)."""
        triples: list[str | int] = []
        for partition, (ts_ms, epoch) in watermarks.items():
            triples += (str(partition), ts_ms, epoch)
        if not triples:
            return []
        keys = (self.watermarks_key, self.owners_key)
        return [scripts.WATERMARKS_WRITE.call(keys, *triples)]

    @staticmethod
    def customer_write(
        customer_id: str,
        new_events: Mapping[str, tuple[int, int]],
        history: CustomerHistory,
        last: LastTransaction,
        expired: Iterable[str],
        now_ms: int,
        epoch: int = 0,
    ) -> Command:
        """A customer's new events (txn_id -> (ts, cents)) and, unless the hash holds a newer
        transaction than ``last``, its features computed from ``history``; ``expired`` ids are
        deleted. ``epoch`` is the ownership epoch the batch was read under: a hash last written
        under a newer one refuses the whole write. The reply is 1, :data:`CUSTOMER_FENCED` or
        :data:`CUSTOMER_SUMMARY_OLDER` (see ``customer_write.lua``)."""
        events: list[str | int] = []
        for txn_id, (ts_ms, cents) in new_events.items():
            events += (event_field(txn_id), customer_event_value(ts_ms, cents))
        gone = [event_field(txn_id) for txn_id in expired]
        summary = customer_summary_fields(history, last, now_ms)
        return scripts.CUSTOMER_WRITE.call(
            (customer_key(customer_id),),
            CUSTOMER_TTL_SECONDS,
            last.txn_id,
            last.ts_ms,
            len(events) // 2,
            len(gone),
            epoch,
            *events,
            *gone,
            *_flat(summary.items()),
        )

    def terminal_writes(
        self, items: Iterable[TerminalItems], now_ms: int, low_watermark: int
    ) -> tuple[list[Command], list[TerminalItems]]:
        """The terminal script calls for these items, and what each call adds, in order."""
        commands: list[Command] = []
        planned: list[TerminalItems] = []
        for terminal in items:
            for part in terminal.split(MAX_ITEMS_PER_SCRIPT_CALL):
                args: list[str | int] = [
                    now_ms,
                    self.terminal_horizon_ms,
                    TERMINAL_TTL_SECONDS,
                    low_watermark,
                    self.recount_page,
                    len(part.events),
                ]
                for txn_id, ts_ms, customer, count in part.events:
                    args += (txn_id, ts_ms, customer, 1 if count else 0)
                for txn_id, ts_ms in part.labels:
                    args += (txn_id, ts_ms)
                commands.append(scripts.TERMINAL_WRITE.call(terminal_keys(part.terminal_id), *args))
                planned.append(part)
        return commands, planned

    def recount_writes(
        self, terminal_ids: Iterable[str], now_ms: int, low_watermark: int
    ) -> tuple[list[Command], list[TerminalItems]]:
        """Calls that only go on with these terminals' pending recounts (a page each, several
        per terminal per round trip); what each call adds (nothing), in order."""
        commands: list[Command] = []
        planned: list[TerminalItems] = []
        for terminal_id in terminal_ids:
            args = (
                now_ms,
                self.terminal_horizon_ms,
                TERMINAL_TTL_SECONDS,
                low_watermark,
                self.recount_page,
                0,
            )
            call = scripts.TERMINAL_WRITE.call(terminal_keys(terminal_id), *args)
            for _ in range(RECOUNT_CALLS_PER_ROUND):
                commands.append(call)
                planned.append(TerminalItems(terminal_id))
        return commands, planned

    @staticmethod
    def terminal_written(terminal_id: str, reply: list[Any]) -> TerminalWritten:
        """Parse a terminal script call's reply (see ``terminal_write.lua``)."""
        seq, dropped, pending, skipped = (int(value) for value in reply[:4])
        counted = []
        width = 3 + _COUNTS  # txn_id, ts, customer, then the counts
        for start in range(4, len(reply), width):
            row = reply[start : start + width]
            counted.append(
                Counted(_text(row[0]), int(row[1]), _text(row[2]), tuple(map(int, row[3:])))
            )
        return TerminalWritten(terminal_id, seq, dropped, pending == 1, skipped, counted)

    @staticmethod
    def snapshot_write(
        customer_id: str, snapshot: TerminalSnapshot, epoch: int | None = None
    ) -> Command:
        """Store a transaction's terminal windows in its customer's hash, unless a newer
        transaction's or a later count of it is there already; with ``epoch`` (the writer owns
        the customer's partition), also unless the hash was written under a newer epoch."""
        return scripts.SNAPSHOT_WRITE.call(
            (customer_key(customer_id),),
            snapshot.txn_id,
            snapshot.ts_ms,
            snapshot.seq,
            snapshot.encode(),
            CUSTOMER_TTL_SECONDS,
            -1 if epoch is None else epoch,
        )


# --- the bulk loader's whole-entity writes --------------------------------------------------


def customer_replacement(
    customer_id: str,
    history: CustomerHistory,
    last: LastTransaction,
    snapshot: TerminalSnapshot,
    now_ms: int,
) -> list[Command]:
    """Commands that replace a customer's hash with this history, newest transaction and
    terminal windows."""
    fields: dict[str, bytes | str | int] = {
        **customer_history_fields(history),
        **customer_summary_fields(history, last, now_ms),
        TERMINAL_SNAPSHOT_FIELD: snapshot.encode(),
    }
    key = customer_key(customer_id)
    return [
        ("DEL", key),
        ["HSET", key, *chain.from_iterable(fields.items())],
        ("EXPIRE", key, CUSTOMER_TTL_SECONDS),
    ]


def terminal_replacement(
    terminal_id: str, history: TerminalHistory, dropped: int, now_ms: int
) -> list[Command]:
    """Commands that replace a terminal's keys with this history, pruned through its horizon
    (``dropped``: the newest time the prune deleted), as the terminal script leaves them."""
    commands: list[Command] = [("DEL", *terminal_keys(terminal_id))]
    bookkeeping: dict[str, int] = {
        EVENT_TS_FIELD: history.ts[-1] if history.ts else 0,
        UPDATED_AT_FIELD: now_ms,
    }
    if history.ts:
        # saying how it was pruned: a later recount must know which windows lost events
        bookkeeping[PRUNED_AT_FIELD] = history.horizon_ms
        bookkeeping[DROPPED_FIELD] = dropped
    commands.append(["HSET", terminal_key(terminal_id), *_flat(bookkeeping.items())])
    events: list[tuple[int, str]] = list(zip(history.ts, history.txn_ids, strict=True))
    for start in range(0, len(events), _BULK_CHUNK):
        chunk = events[start : start + _BULK_CHUNK]
        commands.append(["ZADD", terminal_events_key(terminal_id), *_flat(chunk)])
        customers = [(txn, history.customers.get(txn, "")) for _, txn in chunk]
        commands.append(["HSET", terminal_customers_key(terminal_id), *_flat(customers)])
    # each customer's newest transaction here, as the terminal script keeps it
    latest: dict[str, tuple[int, str]] = {}
    for ts_ms, txn_id in events:
        customer = history.customers.get(txn_id)
        if customer:
            latest[customer] = max(latest.get(customer, (ts_ms, txn_id)), (ts_ms, txn_id))
    newest = [(ts_ms, customer) for customer, (ts_ms, _) in latest.items()]
    for start in range(0, len(newest), _BULK_CHUNK):
        commands.append(
            ["ZADD", terminal_latest_key(terminal_id), *_flat(newest[start : start + _BULK_CHUNK])]
        )
    newest_txn = [(customer, txn_id) for customer, (_, txn_id) in latest.items()]
    for start in range(0, len(newest_txn), _BULK_CHUNK):
        chunk_txn = newest_txn[start : start + _BULK_CHUNK]
        commands.append(["HSET", terminal_latest_txn_key(terminal_id), *_flat(chunk_txn)])
    labels = [(ts_ms, txn_id) for txn_id, (ts_ms, _) in history.labels.items()]
    frauds = [
        (ts_ms, txn_id)
        for ts_ms, txn_id, fraud in zip(history.ts, history.txn_ids, history.frauds, strict=True)
        if fraud
    ]
    for key, members in ((terminal_labels_key, labels), (terminal_frauds_key, frauds)):
        for start in range(0, len(members), _BULK_CHUNK):
            chunk = members[start : start + _BULK_CHUNK]
            commands.append(["ZADD", key(terminal_id), *_flat(chunk)])
    commands += [("EXPIRE", key, TERMINAL_TTL_SECONDS) for key in terminal_keys(terminal_id)]
    return commands


def _flat(
    pairs: Iterable[tuple[str | int | float, bytes | str | int | float]],
) -> list[bytes | str | int | float]:
    """``[(a, b), (c, d)]`` as ``[a, b, c, d]``: a command's arguments."""
    return list(chain.from_iterable(pairs))
