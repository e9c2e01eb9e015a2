"""Turn a batch of Kafka records into pipelined writes to the online store (three round trips).

Where each entity's state lives, and why:

* **Customers** are partition-local: ``transactions`` is keyed by customer id, so one instance
  owns all of a customer's events. It keeps the customer's history in memory (hydrated from
  Redis on first touch, dropped on every rebalance), computes the features of the customer's
  newest transaction with :mod:`fraudstack.features.online`, and writes them with the new event
  fields in one ``HSET``.
* **Terminals** are not: a terminal's transactions come from every customer, hence from every
  partition. Rather than re-keying them through a repartition topic (one more produce and
  consume per event), every instance updates terminal hashes *atomically in Redis* with a small
  Lua script: add the event and label fields, raise ``_event_ts`` to the newest, bump the write
  counter ``_seq``, prune what no window can reach any more.
* **The terminal windows of a customer's newest transaction** are stored in the customer's hash
  too (``_terminal``), so that ``GET /predict`` reads one hash in one round trip. To count them,
  an instance keeps a copy of the terminals it writes (a :class:`TerminalCopy`, least recently
  used dropped first). The script compares the copy's ``_seq`` with the terminal's: if nobody
  else wrote since, the copy plus this write is the terminal (the script only says how it
  pruned); if somebody did, the script sends the whole terminal. Either way the windows are
  counted, with :mod:`fraudstack.features.online`, on the terminal exactly as this write left
  it. An event or label that arrives late and reaches back into windows already counted (a
  partition that lags, a labels topic behind the transactions) makes the instance that writes it
  count those windows again, and send the counts to their customers, whoever owns them. A small
  script on the customer's key keeps only the snapshot of the customer's newest transaction, and
  of it only the count taken at the highest terminal ``_seq``, so concurrent instances cannot put
  an older count back.
* **Terminals are pruned behind the low watermark** (see :meth:`Processor.assign`), so a
  partition that lags still finds the events its transactions' windows need. When a late item
  reaches windows the prune has already cut into (a labels topic far behind the transactions),
  they cannot be counted again whole: the snapshot is marked stale and the reader counts from
  the terminal's events, as it does for a customer without a snapshot.

A batch is the terminals' scripts, then, with their counts, the customers' writes and snapshots.
Every write is idempotent (a field per transaction id; a snapshot replaces one of the same
transaction only with a newer count), so a batch replayed after a crash changes nothing; a
replayed transaction's terminal write is sent again, because the writes of one batch are not
one transaction and a crash may fall between them. An event more than the allowed lateness
behind its partition's newest event, an invalid record, a transaction whose record key is not its
customer id (the partitioning the customers' state relies on), and a fraud label reported after
the 7-day feature delay go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from fraudstack.adapters.kafka import SourceRecord
from fraudstack.adapters.online_store import (
    CUSTOMER_TTL_SECONDS,
    TERMINAL_TTL_SECONDS,
    LastTransaction,
    TerminalSnapshot,
    customer_key,
    customer_record,
    customer_summary_fields,
    terminal_key,
    watermarks_key,
)
from fraudstack.adapters.redis_link import Command, RedisLink, hash_reply
from fraudstack.errors import InvalidEvent, StoreError
from fraudstack.events import Label, Transaction, parse_label, parse_transaction
from fraudstack.features.definitions import (
    TERMINAL_DELAY_MS,
    TERMINAL_HORIZON_MS,
    label_counts,
)
from fraudstack.features.online import (
    CustomerHistory,
    TerminalHistory,
    customer_event_value,
    event_field,
    history_counts,
    label_field,
    label_value,
    terminal_event_value,
)
from fraudstack.settings import Topics

# KEYS[1] the terminal hash. ARGV: updated_at_ms, horizon_ms, ttl_s, the _seq the caller's copy
# of the terminal is at (-1 for none), the transactions' low watermark (ms), then field/value
# pairs. Event fields (e:) carry "<ts>:<customer>", label fields (f:) "<ts>:<reported_at>".
#
# Adds the fields, bumps the write counter _seq (a new hash's starts at updated_at_ms * 1000, above
# any count of a hash of the same key that expired) and prunes what no window can reach any more:
# what is older than the horizon behind the terminal's newest event and behind the low watermark,
# the newest event time every partition of the transactions has reached (at most once per day of
# event time; _dropped keeps the newest time of a field it deleted). Returns
# {seq, dropped, cutoff} when the caller's copy plus these fields, pruned through cutoff (-1: not
# pruned), is the terminal now (nobody else wrote since), else {seq, dropped, -1, every field and
# value}.
_TERMINAL_SCRIPT = """
local key = KEYS[1]
local stored = redis.call('HMGET', key, '_event_ts', '_pruned_at', '_seq', '_dropped')
local newest = tonumber(stored[1] or '0')
local pruned = tonumber(stored[2] or '0')
local copy_is_current = tonumber(stored[3] or '0') == tonumber(ARGV[4])
local dropped = tonumber(stored[4] or '0')
for i = 6, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 2) == 'e:' then
    local ts = tonumber(string.match(ARGV[i + 1], '^%d+'))
    if ts > newest then newest = ts end
  end
end
redis.call('HSET', key, '_event_ts', newest, '_updated_at', ARGV[1], unpack(ARGV, 6))
if not stored[3] then
  -- a new hash (or one that expired): its counter starts above any earlier one's
  redis.call('HSET', key, '_seq', ARGV[1] .. '000')
end
local seq = redis.call('HINCRBY', key, '_seq', 1)
local cutoff = math.min(newest, tonumber(ARGV[5])) - tonumber(ARGV[2])
if cutoff - pruned <= 86400000 then
  cutoff = -1
else
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local prefix = string.sub(fields[i], 1, 2)
    if prefix == 'e:' or prefix == 'f:' then
      local ts = tonumber(string.match(fields[i + 1], '^%d+'))
      if ts <= cutoff then
        redis.call('HDEL', key, fields[i])
        if ts > dropped then dropped = ts end
      end
    end
  end
  redis.call('HSET', key, '_pruned_at', cutoff, '_dropped', dropped)
end
redis.call('EXPIRE', key, ARGV[3])
if copy_is_current then return {seq, dropped, cutoff} end
local reply = redis.call('HGETALL', key)
table.insert(reply, 1, -1)
table.insert(reply, 1, dropped)
table.insert(reply, 1, seq)
return reply
"""

# KEYS[1] a customer hash. ARGV: txn_id, ts_ms, seq, the encoded snapshot, the key's TTL (s), set
# if the key had none (a recount may come before the owner's first write). Stores the snapshot of
# the terminal windows of transaction txn_id unless the customer has a newer transaction (by
# (ts, txn_id)), the stored snapshot is of a newer one, or it is of this one counted at the same
# or a later seq. A transaction not written to the customer yet is accepted: another instance's
# recount may come before the owner's write. Returns 1 if stored, else 0.
_SNAPSHOT_SCRIPT = """
local txn, ts, seq = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- (ts, txn_id) before (other_ts, other), txn ids compared byte by byte as Python compares them
-- (Lua's < on strings follows the server's locale)
local function before(other, other_ts)
  if ts ~= other_ts then return ts < other_ts end
  for i = 1, math.min(#txn, #other) do
    local mine, theirs = string.byte(txn, i), string.byte(other, i)
    if mine ~= theirs then return mine < theirs end
  end
  return #txn < #other
end
local last = redis.call('HGET', KEYS[1], '_last_txn')
if last then
  local id, last_ts = string.match(last, '^([^:]*):(%d+):')
  if before(id, tonumber(last_ts)) then return 0 end
end
local current = redis.call('HGET', KEYS[1], '_terminal')
if current then
  local id, current_ts, current_seq = string.match(current, '^([^:]*):(%d+):(%d+)')
  if not id then
    -- a layout this script does not know: replaced
  elseif id == txn then
    if tonumber(current_seq) >= seq then return 0 end
  elseif before(id, tonumber(current_ts)) then
    return 0
  end
end
redis.call('HSET', KEYS[1], '_terminal', ARGV[4])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
return 1
"""
_SCRIPTS = (_TERMINAL_SCRIPT, _SNAPSHOT_SCRIPT)
#: How far back from a transaction its terminal windows reach, and how far they stop short.
_REACH_MS = TERMINAL_HORIZON_MS
_DELAY_MS = TERMINAL_DELAY_MS


#: The low watermark when no partition has published one: nothing holds the prune back.
_NO_WATERMARK = 2**62

#: Fields one terminal script call writes at most (two values each; Lua's ``unpack`` limit).
MAX_FIELDS_PER_SCRIPT_CALL = 1_000


@dataclass(slots=True)
class CustomerState:
    history: CustomerHistory
    last: LastTransaction | None


@dataclass(slots=True)
class Arrival:
    """A valid transaction, the newest event time of its partition then, and its record."""

    txn: Transaction
    watermark: int
    record: SourceRecord


@dataclass(slots=True)
class TerminalCopy:
    """This instance's copy of a terminal's events and labels, as of the terminal's ``_seq``.

    The terminal script tells whether the copy is still current (nobody else wrote since);
    if it is not, the script sends the whole terminal. So the windows counted here are those of
    the terminal in Redis right after this instance's write, exactly.
    """

    history: TerminalHistory
    seq: int


@dataclass(slots=True)
class TerminalCall:
    """What one terminal script call adds: field/value pairs, and the events and labels."""

    terminal_id: str
    pairs: list[str] = field(default_factory=list)
    events: list[Transaction] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)

    def split(self, max_fields: int) -> list[TerminalCall]:
        """This call as calls of at most ``max_fields`` fields each, in order."""
        if len(self.pairs) <= 2 * max_fields:
            return [self]
        parts = []
        items: list[Transaction | Label] = [*self.events, *self.labels]
        for start in range(0, len(items), max_fields):
            part = TerminalCall(self.terminal_id, self.pairs[2 * start : 2 * (start + max_fields)])
            for item in items[start : start + max_fields]:
                if isinstance(item, Transaction):
                    part.events.append(item)
                else:
                    part.labels.append(item)
            parts.append(part)
        return parts


@dataclass(slots=True)
class Counted:
    """The terminal windows of one transaction, for its customer's hash."""

    customer: str
    snapshot: TerminalSnapshot


@dataclass(slots=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    labels: int = 0
    ignored: int = 0
    #: records to send to the dead-letter topic, with the reason
    dead_letters: list[tuple[SourceRecord, str]] = field(default_factory=list)
    written_event_ts: list[int] = field(default_factory=list)


class Processor:
    """Applies batches of records to the online store; holds the partition-local state."""

    def __init__(
        self,
        link: RedisLink,
        allowed_lateness_ms: int,
        topics: Topics | None = None,
        max_terminal_copies: int = 100_000,
    ) -> None:
        self.link = link
        self.topics = topics or Topics()
        self.allowed_lateness_ms = allowed_lateness_ms
        self.customers: dict[str, CustomerState] = {}
        self.watermarks: dict[tuple[str, int], int] = {}
        #: partitions of the transactions topic, when known (see :meth:`assign`)
        self.partition_count: int | None = None
        #: copies of the terminals last written, least recently used first (see TerminalCopy)
        self.terminals: dict[str, TerminalCopy] = {}
        self.max_terminal_copies = max_terminal_copies
        #: the link's connection the copies were read through (see _drop_copies_on_reconnect)
        self._connection = link.connections
        self._terminal_script, self._snapshot_script = (
            hashlib.sha1(script.encode()).hexdigest() for script in _SCRIPTS
        )
        self._busy = False
        self._forget_after_batch = False

    def assign(self, partition_count: int) -> None:
        """How many partitions the transactions topic has (all instances together).

        Terminals are pruned behind the *low watermark*, the oldest of every partition's newest
        event time (published in Redis by whichever instance reads it, once a batch of it is
        written), not only behind their own newest event: a partition that lags, as when a
        backlog is replayed, may still send a transaction whose terminal windows reach back that
        far. A partition no instance has published yet counts as 0, which holds every prune back
        until it is read. Without a count, only the published partitions count.
        """
        self.partition_count = partition_count

    def forget(self) -> None:
        """Drop the in-memory state: partitions moved, another instance may have written since.

        The consumer's rebalance callbacks run in its own task, possibly while a batch waits on
        Redis; the batch in flight then finishes with the state it started with (its writes are
        idempotent) and the state is dropped as it ends.
        """
        if self._busy:
            self._forget_after_batch = True
            return
        self.customers.clear()
        self.watermarks.clear()
        self.terminals.clear()

    async def process(self, records: Iterable[SourceRecord]) -> BatchResult:
        self._busy = True
        try:
            return await self._process(records)
        finally:
            self._busy = False
            if self._forget_after_batch:
                self._forget_after_batch = False
                self.forget()

    async def _process(self, records: Iterable[SourceRecord]) -> BatchResult:
        result = BatchResult()
        arrivals: list[Arrival] = []
        labels: list[Label] = []
        for record in records:
            self._route(record, arrivals, labels, result)
        low_watermark = await self._hydrate({arrival.txn.customer_id for arrival in arrivals})

        now_ms = int(time.time() * 1000)
        commands: list[Command] = []
        applied, replayed = self._write_customers(commands, arrivals, now_ms, result)
        # Terminals first: their replies are the terminal windows the customers' snapshots need.
        # A replayed transaction's terminal write is sent again: the batch that first carried it
        # may have died after its terminal writes and before its customer ones (idempotent).
        while True:
            self._drop_copies_on_reconnect()
            terminal_commands, planned = self._write_terminals(
                applied + replayed, labels, now_ms, low_watermark
            )
            replies = await self._execute(terminal_commands)
            if self.link.connections == self._connection:
                break
            # they went out on a new connection, with copies that may be newer than Redis now
            # is: sent again without them (the scripts are idempotent)
        newest = {
            last.txn_id
            for last in (self.customers[txn.customer_id].last for txn in applied + replayed)
            if last is not None
        }
        fresh = {txn.txn_id for txn in applied}
        commands += self._write_snapshots(self._count(planned, replies, newest, fresh))
        commands += self._publish_watermarks()
        await self._execute(commands)
        result.written_event_ts = [txn.ts for txn in applied]
        return result

    def _drop_copies_on_reconnect(self) -> None:
        """Drop the terminal copies when the link had to connect again since they were read.

        Redis may have restarted and lost its latest writes (an RDB snapshot, a replica promoted
        while it lagged): a terminal's ``_seq`` is then behind this instance's copy, and once
        other writes bring it back to the copy's number, the script would take a copy holding
        events Redis no longer has for the terminal. Without copies, each terminal's next
        script sends the whole terminal.
        """
        if self.link.connections != self._connection:
            self.terminals.clear()
            self._connection = self.link.connections

    def _route(
        self,
        record: SourceRecord,
        transactions: list[Arrival],
        labels: list[Label],
        result: BatchResult,
    ) -> None:
        raw = record.value or b""
        try:
            if record.topic == self.topics.labels:
                label = parse_label(raw)
                if not label.is_fraud:
                    result.ignored += 1  # no label means genuine; a retraction changes nothing
                elif not label_counts(label.is_fraud, label.ts, label.reported_at):
                    self._reject(record, "label reported after the 7-day feature delay", result)
                else:
                    labels.append(label)
                    result.labels += 1
                return
            txn = parse_transaction(raw)
        except InvalidEvent as exc:
            self._reject(record, f"invalid event: {exc}", result)
            return
        if record.key != txn.customer_id.encode():
            # on another customer's partition, its history could be kept by two instances
            self._reject(record, "record key is not the transaction's customer_id", result)
            return
        partition = (record.topic, record.partition)
        watermark = max(self.watermarks.get(partition, txn.ts), txn.ts)
        self.watermarks[partition] = watermark
        transactions.append(Arrival(txn, watermark, record))

    @staticmethod
    def _reject(record: SourceRecord, reason: str, result: BatchResult) -> None:
        result.dead_letters.append((record, reason))

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """Run a batch and return its replies; when Redis forgot the scripts (it restarted), load
        them and run the batch again, which is idempotent."""
        if not commands:
            return []  # a batch of rejects, or labels only: nothing to send
        try:
            return await self.link.execute_many(commands)
        except StoreError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
        await self.link.execute_many([("SCRIPT", "LOAD", script) for script in _SCRIPTS])
        return await self.link.execute_many(commands)

    async def _hydrate(self, customer_ids: set[str]) -> int:
        """Load the customers not in memory yet and read the partitions' watermarks as published
        after the batches before this one; return the low watermark (see :meth:`assign`)."""
        missing = [customer for customer in customer_ids if customer not in self.customers]
        key = watermarks_key(self.topics.transactions)
        replies = await self.link.execute_many(
            [("HGETALL", key), *(("HGETALL", customer_key(c)) for c in missing)]
        )
        published = {int(name): int(value) for name, value in hash_reply(replies[0]).items()}
        stored = replies[1:]
        if self.partition_count is not None:
            known = [published.get(partition, 0) for partition in range(self.partition_count)]
        else:
            known = list(published.values())
        for customer, fields in zip(missing, stored, strict=True):
            record = customer_record(fields)
            if record is None:
                self.customers[customer] = CustomerState(CustomerHistory(), None)
            else:
                self.customers[customer] = CustomerState(record.history, record.last)
        return min(known) if known else _NO_WATERMARK

    def _publish_watermarks(self) -> list[Command]:
        """Each partition's newest event time, once its batch is written: the next batch's
        transactions are at most the allowed lateness older, so a prune behind it is safe."""
        ours: list[str | int] = []
        for (topic, partition), watermark in self.watermarks.items():
            if topic == self.topics.transactions:
                ours += (str(partition), watermark)
        return [["HSET", watermarks_key(self.topics.transactions), *ours]] if ours else []

    def _write_customers(
        self, commands: list[Command], arrivals: list[Arrival], now_ms: int, result: BatchResult
    ) -> tuple[list[Transaction], list[Transaction]]:
        """Queue the customers' writes; return the transactions applied and the replayed ones
        (already in the customer's history)."""
        applied: list[Transaction] = []
        replayed: list[Transaction] = []
        new_fields: dict[str, dict[str, str | int | float]] = {}
        newest: dict[str, Transaction] = {}
        for arrival in arrivals:
            txn = arrival.txn
            state = self.customers[txn.customer_id]
            cents = txn.amount_cents
            # A replayed transaction is a duplicate however old it is; only new ones can be late.
            if txn.txn_id in state.history:
                result.duplicates += 1
                replayed.append(txn)
                continue
            if txn.ts < arrival.watermark - self.allowed_lateness_ms:
                late_by = (arrival.watermark - txn.ts) / 1000
                self._reject(
                    arrival.record, f"late by {late_by:.0f} s, beyond the allowed lateness", result
                )
                continue
            if not state.history.add(txn.txn_id, txn.ts, cents):
                self._reject(arrival.record, "older than the customer's retained history", result)
                continue
            result.applied += 1
            applied.append(txn)
            fields = new_fields.get(txn.customer_id)
            if fields is None:
                fields = new_fields[txn.customer_id] = {}
                newest[txn.customer_id] = txn
            else:
                known = newest[txn.customer_id]
                if (txn.ts, txn.txn_id) > (known.ts, known.txn_id):
                    newest[txn.customer_id] = txn
            fields[event_field(txn.txn_id)] = customer_event_value(txn.ts, cents)

        for customer, fields in new_fields.items():
            state = self.customers[customer]
            txn = newest[customer]
            if state.last is None or (txn.ts, txn.txn_id) > (state.last.ts_ms, state.last.txn_id):
                state.last = LastTransaction(txn.txn_id, txn.ts, txn.amount_cents, txn.terminal_id)
            last = state.last
            history = state.history
            expired = history.prune(last.ts_ms, self.allowed_lateness_ms)
            fields.update(customer_summary_fields(history, last, now_ms))
            key = customer_key(customer)
            commands.append(["HSET", key, *chain.from_iterable(fields.items())])
            if expired:
                commands.append(["HDEL", key, *(event_field(txn_id) for txn_id in expired)])
            commands.append(("EXPIRE", key, CUSTOMER_TTL_SECONDS))
        return applied, replayed

    def _write_terminals(
        self, transactions: list[Transaction], labels: list[Label], now_ms: int, low_watermark: int
    ) -> tuple[list[Command], list[TerminalCall]]:
        """The terminal script calls of a batch, and what each adds (to follow the replies)."""
        calls: dict[str, TerminalCall] = {}
        for txn in transactions:
            call = calls.get(txn.terminal_id)
            if call is None:
                call = calls[txn.terminal_id] = TerminalCall(txn.terminal_id)
            call.pairs += (event_field(txn.txn_id), terminal_event_value(txn.ts, txn.customer_id))
            call.events.append(txn)
        for label in labels:
            call = calls.get(label.terminal_id)
            if call is None:
                call = calls[label.terminal_id] = TerminalCall(label.terminal_id)
            call.pairs += (label_field(label.txn_id), label_value(label.ts, label.reported_at))
            call.labels.append(label)
        commands: list[Command] = []
        planned: list[TerminalCall] = []
        horizon = TERMINAL_HORIZON_MS + self.allowed_lateness_ms
        for call in calls.values():
            known = self.terminals.get(call.terminal_id)
            # Redis's Lua unpacks at most ~8,000 values at once: a busy terminal's share of a
            # large batch goes in several calls (each idempotent), the copy's _seq one further
            # along each time
            for number, part in enumerate(call.split(MAX_FIELDS_PER_SCRIPT_CALL)):
                commands.append(
                    [
                        "EVALSHA",
                        self._terminal_script,
                        1,
                        terminal_key(call.terminal_id),
                        now_ms,
                        horizon,
                        TERMINAL_TTL_SECONDS,
                        known.seq + number if known is not None else -1,
                        low_watermark,
                        *part.pairs,
                    ]
                )
                planned.append(part)
        return commands, planned

    def _count(
        self,
        planned: list[TerminalCall],
        replies: list[list[Any]],
        newest: set[str],
        fresh: set[str],
    ) -> list[Counted]:
        """Bring each terminal's copy up to date with its script's reply and count the windows
        of the batch's transactions in ``newest`` (their customer's newest) and of every stored
        transaction the batch's late events and labels reach. Windows the prune has cut into
        are counted only for transactions in ``fresh`` (new in this batch: the best count
        there is); others get a stale snapshot."""
        counted: list[Counted] = []
        for call, reply in zip(planned, replies, strict=True):
            seq, dropped, cutoff = int(reply[0]), int(reply[1]), int(reply[2])
            # popped and put back: the terminal used last goes last
            copy = self.terminals.pop(call.terminal_id, None)
            if len(reply) > 3:  # somebody else wrote since: the whole terminal
                flat = reply[3:]
                history = TerminalHistory.from_fields(dict(zip(flat[::2], flat[1::2], strict=True)))
                copy = TerminalCopy(history, seq)
            else:
                assert copy is not None  # the script answers short only to a copy's _seq
                history, copy.seq = copy.history, seq
                for txn in call.events:
                    history.add(txn.txn_id, txn.ts, txn.customer_id)
                for label in call.labels:
                    history.add_label(label.txn_id, True, label.reported_at, label.ts)
                if cutoff >= 0:
                    history.drop_through(cutoff)
            self.terminals[call.terminal_id] = copy
            # the batch's transactions that are their customer's newest
            wanted = {txn.txn_id: txn.ts for txn in call.events if txn.txn_id in newest}
            # a late item reaches the windows of the transactions 7 to 37 days after it
            times = history.ts
            # an item on time reaches nothing stored: nothing is 7 days newer
            reaching = times[-1] - _DELAY_MS if times else 0
            late = [txn.ts for txn in call.events if txn.ts <= reaching]
            late += [label.ts for label in call.labels if label.ts <= reaching]
            for ts_ms in late:
                first = bisect_left(times, ts_ms + _DELAY_MS)
                last = bisect_left(times, ts_ms + _REACH_MS)
                for index in range(first, last):
                    wanted.setdefault(history.txn_ids[index], times[index])
            for txn_id, ts_ms in wanted.items():
                customer = history.customers.get(txn_id)
                if not customer:
                    continue
                if ts_ms - _REACH_MS >= dropped or txn_id in fresh:
                    counts = history_counts(history, ts_ms)
                else:
                    # the prune has cut into its windows: a count now could be short, and the
                    # one stored misses this batch's late items; marked stale, the reader
                    # counts from the terminal's events instead
                    counts = ()
                counted.append(Counted(customer, TerminalSnapshot(txn_id, ts_ms, seq, counts)))
        while len(self.terminals) > self.max_terminal_copies:
            del self.terminals[next(iter(self.terminals))]  # the least recently used
        return counted

    def _write_snapshots(self, counted: list[Counted]) -> list[Command]:
        """The snapshot writes of the terminal windows just counted.

        A transaction of this batch is snapshotted only if it is its customer's newest; one
        counted again because a late event or label reached its windows may belong to a customer
        of another partition, so it is always sent: the snapshot script itself keeps only the
        newest transaction's snapshot, and of it only the latest count.
        """
        latest: dict[str, Counted] = {}
        for item in counted:
            known = latest.get(item.snapshot.txn_id)
            if known is None or known.snapshot.seq < item.snapshot.seq:
                latest[item.snapshot.txn_id] = item
        commands: list[Command] = []
        for txn_id, item in latest.items():
            state = self.customers.get(item.customer)
            ours = state is not None and txn_id in state.history
            if ours and (state.last is None or state.last.txn_id != txn_id):  # type: ignore[union-attr]
                continue  # ours, and not the newest: nothing reads its snapshot
            snapshot = item.snapshot
            commands.append(
                [
                    "EVALSHA",
                    self._snapshot_script,
                    1,
                    customer_key(item.customer),
                    txn_id,
                    snapshot.ts_ms,
                    snapshot.seq,
                    snapshot.encode(),
                    CUSTOMER_TTL_SECONDS,
                ]
            )
        return commands


def count_by_kind(result: BatchResult) -> dict[tuple[str, str], int]:
    """The batch's outcome counts, keyed like the ``aggregate_events_total`` labels."""
    return {
        ("transaction", "applied"): result.applied,
        ("transaction", "duplicate"): result.duplicates,
        ("label", "applied"): result.labels,
        ("label", "ignored"): result.ignored,
    }
