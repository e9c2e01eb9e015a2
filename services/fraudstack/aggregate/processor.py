"""Turn a batch of Kafka records into pipelined writes to the online store (two round trips).

Where each entity's state lives, and why:

* **Customers** are partition-local: ``transactions`` is keyed by customer id, so one instance
  owns all of a customer's events. It keeps the customer's history in memory (hydrated from
  Redis on first touch, dropped on every rebalance), computes the features of the customer's
  newest transaction with :mod:`fraudstack.features.online`, and writes them with the new event
  fields in one ``HSET``.
* **Terminals** are not: a terminal's transactions come from every customer, hence from every
  partition. Rather than re-keying them through a repartition topic (one more produce and
  consume per event), every instance updates terminal hashes *atomically in Redis* with a Lua
  script: add the event and label fields, raise ``_event_ts`` to the newest, prune what no
  window can reach any more, and count the terminal windows of the transactions just added.
* **The terminal windows of a customer's newest transaction** are stored in the customer's hash
  too (``_terminal``), so that ``GET /predict`` reads one hash in one round trip. The terminal
  script's counts are taken atomically with the add, so they hold every event and label the
  terminal had; an event or label that arrives later and reaches back into a counted window (a
  partition that lags, a labels topic behind the transactions) makes the script count the
  windows it reaches again, and those counts go to their customers too, whichever instance owns
  them. A small script on the customer's key keeps only the snapshot of the customer's newest
  transaction, and of it only the count taken at the highest terminal ``_seq``, so concurrent
  instances cannot put an older count back. One limit: a count is taken again only while the
  prune has left its 30-day window whole; once the terminal has dropped events its windows
  reach (a transaction a day or more older than its terminal's newest event, in steady state),
  it keeps the count it was given.

A batch is the terminals' scripts, then, with their counts, the customers' writes and snapshots.
Every write is idempotent (a field per transaction id; a snapshot replaces one of the same
transaction only with a newer count), so a batch replayed after a crash changes nothing; a
replayed transaction's terminal write is sent again, because the writes of one batch are not
one transaction and a crash may fall between them. An event more than the allowed lateness
behind its partition's newest event, an invalid record, and a fraud label reported after the
7-day feature delay go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import hashlib
import time
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
)
from fraudstack.adapters.redis_link import Command, RedisLink
from fraudstack.errors import InvalidEvent, StoreError
from fraudstack.events import Label, Transaction, parse_label, parse_transaction
from fraudstack.features.definitions import (
    LABEL_DELAY_MS,
    TERMINAL_DELAY_MS,
    TERMINAL_HORIZON_MS,
    TERMINAL_WINDOWS,
    label_counts,
)
from fraudstack.features.online import (
    CustomerHistory,
    customer_event_value,
    event_field,
    label_field,
    label_value,
    terminal_event_value,
)
from fraudstack.settings import Topics

# KEYS[1] the terminal hash. ARGV: updated_at_ms, horizon_ms, ttl_s, terminal delay (ms), label
# delay (ms), the terminal windows' lengths (ms, comma-separated), then field/value pairs. Event
# fields (e:) carry "<ts>:<customer>", label fields (f:) "<ts>:<reported_at>".
#
# Adds the fields, bumps the write counter _seq, prunes what no window can reach any more (at most
# once per day of event time), then counts the terminal windows (see terminal_counts in
# fraudstack.features.online, which this mirrors) of every event this call added, and of every
# stored event whose windows an item of this call can reach (late events and labels: at or after
# the item's time plus the delay, before it plus the delay plus the longest window) and whose
# windows the prune has left whole (_dropped: the newest time of a field it deleted).
# Returns {seq, then per transaction counted: txn_id, ts, customer, events and frauds per window}. Returns {seq, txn_id, customer, events, frauds per window, ...}.
_TERMINAL_SCRIPT = """
local key = KEYS[1]
local delay, label_delay = tonumber(ARGV[4]), tonumber(ARGV[5])
local windows, longest = {}, 0
for w in string.gmatch(ARGV[6], '%d+') do
  windows[#windows + 1] = tonumber(w)
  if tonumber(w) > longest then longest = tonumber(w) end
end
local stored = redis.call('HMGET', key, '_event_ts', '_pruned_at', '_dropped')
local newest = tonumber(stored[1] or '0')
local pruned = tonumber(stored[2] or '0')
local dropped = tonumber(stored[3] or '0')
local added = {}
local earliest, latest = math.huge, -math.huge
for i = 7, #ARGV, 2 do
  local ts = tonumber(string.match(ARGV[i + 1], '^%d+'))
  if ts < earliest then earliest = ts end
  if ts > latest then latest = ts end
  if string.sub(ARGV[i], 1, 2) == 'e:' then
    added[string.sub(ARGV[i], 3)] = true
    if ts > newest then newest = ts end
  end
end
redis.call('HSET', key, '_event_ts', newest, '_updated_at', ARGV[1], unpack(ARGV, 7))
local seq = redis.call('HINCRBY', key, '_seq', 1)
local cutoff = newest - tonumber(ARGV[2])
local prune = cutoff - pruned > 86400000
local fields = redis.call('HGETALL', key)
local events, frauds = {}, {}
for i = 1, #fields, 2 do
  local name = fields[i]
  local prefix = string.sub(name, 1, 2)
  if prefix == 'e:' or prefix == 'f:' then
    local ts, rest = string.match(fields[i + 1], '^(%d+):?(.*)$')
    ts = tonumber(ts)
    if prune and ts <= cutoff then
      redis.call('HDEL', key, name)
      if ts > dropped then dropped = ts end
    elseif prefix == 'e:' then
      events[#events + 1] = {ts, string.sub(name, 3), rest}
    elseif tonumber(rest) <= ts + label_delay then
      frauds[string.sub(name, 3)] = true
    end
  end
end
if prune then redis.call('HSET', key, '_pruned_at', cutoff, '_dropped', dropped) end
redis.call('EXPIRE', key, ARGV[3])
table.sort(events, function(a, b) return a[1] < b[1] end)
local times, fraud_times = {}, {}
for i, event in ipairs(events) do
  times[i] = event[1]
  if frauds[event[2]] then fraud_times[#fraud_times + 1] = event[1] end
end
local function upto(list, t)
  local lo, hi = 1, #list + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if list[mid] <= t then lo = mid + 1 else hi = mid end
  end
  return lo - 1
end
local reply = {seq}
for _, event in ipairs(events) do
  local t = event[1]
  local reached = t >= earliest + delay and t < latest + delay + longest
  if added[event[2]] or (reached and t - delay - longest >= dropped) then
    reply[#reply + 1] = event[2]
    reply[#reply + 1] = t
    reply[#reply + 1] = event[3]
    local end_events, end_frauds = upto(times, t - delay), upto(fraud_times, t - delay)
    for _, w in ipairs(windows) do
      reply[#reply + 1] = end_events - upto(times, t - delay - w)
      reply[#reply + 1] = end_frauds - upto(fraud_times, t - delay - w)
    end
  end
end
return reply
"""

# KEYS[1] a customer hash. ARGV: txn_id, ts_ms, seq, the encoded snapshot. Stores the snapshot of
# the terminal windows of transaction txn_id unless the customer has a newer transaction (by
# (ts, txn_id)), the stored snapshot is of a newer one, or it is of this one counted at the same
# or a later seq. A transaction not written to the customer yet is accepted: another instance's
# recount may come before the owner's write. Returns 1 if stored, else 0.
_SNAPSHOT_SCRIPT = """
local txn, ts, seq = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function before(other, other_ts)
  return ts < other_ts or (ts == other_ts and txn < other)
end
local last = redis.call('HGET', KEYS[1], '_last_txn')
if last then
  local id, last_ts = string.match(last, '^([^:]*):(%d+):')
  if before(id, tonumber(last_ts)) then return 0 end
end
local current = redis.call('HGET', KEYS[1], '_terminal')
if current then
  local id, current_ts, current_seq = string.match(current, '^([^:]*):(%d+):(%d+):')
  if id == txn then
    if tonumber(current_seq) >= seq then return 0 end
  elseif before(id, tonumber(current_ts)) then
    return 0
  end
end
redis.call('HSET', KEYS[1], '_terminal', ARGV[4])
return 1
"""
_SCRIPTS = (_TERMINAL_SCRIPT, _SNAPSHOT_SCRIPT)
_TERMINAL_WINDOW_LENGTHS = ",".join(str(window[2]) for window in TERMINAL_WINDOWS)
#: Length of one counted transaction in the terminal script's reply: id, time, customer, counts.
_COUNTED_STRIDE = 3 + 2 * len(TERMINAL_WINDOWS)


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
    ) -> None:
        self.link = link
        self.topics = topics or Topics()
        self.allowed_lateness_ms = allowed_lateness_ms
        self.customers: dict[str, CustomerState] = {}
        self.watermarks: dict[tuple[str, int], int] = {}
        self._terminal_script, self._snapshot_script = (
            hashlib.sha1(script.encode()).hexdigest() for script in _SCRIPTS
        )
        self._busy = False
        self._forget_after_batch = False

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
        await self._hydrate({arrival.txn.customer_id for arrival in arrivals})

        now_ms = int(time.time() * 1000)
        commands: list[Command] = []
        applied, replayed = self._write_customers(commands, arrivals, now_ms, result)
        # Terminals first: their replies are the terminal windows the customers' snapshots need.
        # A replayed transaction's terminal write is sent again: the batch that first carried it
        # may have died after its terminal writes and before its customer ones (idempotent).
        counted = await self._execute(self._write_terminals(applied + replayed, labels, now_ms))
        commands += self._write_snapshots(counted)
        await self._execute(commands)
        result.written_event_ts = [txn.ts for txn in applied]
        return result

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

    async def _hydrate(self, customer_ids: set[str]) -> None:
        missing = [customer for customer in customer_ids if customer not in self.customers]
        if not missing:
            return
        stored = await self.link.execute_many([("HGETALL", customer_key(c)) for c in missing])
        for customer, fields in zip(missing, stored, strict=True):
            record = customer_record(fields)
            if record is None:
                self.customers[customer] = CustomerState(CustomerHistory(), None)
            else:
                self.customers[customer] = CustomerState(record.history, record.last)

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
        self,
        transactions: list[Transaction],
        labels: list[Label],
        now_ms: int,
    ) -> list[Command]:
        commands: list[Command] = []
        per_terminal: dict[str, list[str]] = {}
        for txn in transactions:
            pairs = per_terminal.get(txn.terminal_id)
            if pairs is None:
                pairs = per_terminal[txn.terminal_id] = []
            pairs += (event_field(txn.txn_id), terminal_event_value(txn.ts, txn.customer_id))
        for label in labels:
            per_terminal.setdefault(label.terminal_id, []).extend(
                (label_field(label.txn_id), label_value(label.ts, label.reported_at))
            )
        horizon = TERMINAL_HORIZON_MS + self.allowed_lateness_ms
        for terminal, pairs in per_terminal.items():
            # Redis's Lua unpacks at most ~8,000 values at once: a busy terminal's share of a
            # large batch goes in several calls (each idempotent)
            for start in range(0, len(pairs), 2 * MAX_FIELDS_PER_SCRIPT_CALL):
                commands.append(
                    [
                        "EVALSHA",
                        self._terminal_script,
                        1,
                        terminal_key(terminal),
                        now_ms,
                        horizon,
                        TERMINAL_TTL_SECONDS,
                        TERMINAL_DELAY_MS,
                        LABEL_DELAY_MS,
                        _TERMINAL_WINDOW_LENGTHS,
                        *pairs[start : start + 2 * MAX_FIELDS_PER_SCRIPT_CALL],
                    ]
                )
        return commands

    def _write_snapshots(self, replies: list[list[Any]]) -> list[Command]:
        """The snapshot writes of the terminal windows the terminal scripts counted.

        A transaction of this batch is snapshotted only if it is its customer's newest; one the
        script counted again because a late event or label reached its windows may belong to a
        customer of another partition, so it is always sent: the snapshot script itself keeps
        only the newest transaction's snapshot, and of it only the latest count.
        """
        latest: dict[str, tuple[str, TerminalSnapshot]] = {}
        for reply in replies:
            seq = int(reply[0])
            for at in range(1, len(reply), _COUNTED_STRIDE):
                txn_id, ts_ms, customer = reply[at].decode(), int(reply[at + 1]), reply[at + 2]
                known = latest.get(txn_id)
                if customer and (known is None or known[1].seq < seq):
                    counts = tuple(map(int, reply[at + 3 : at + _COUNTED_STRIDE]))
                    snapshot = TerminalSnapshot(txn_id, ts_ms, seq, counts)
                    latest[txn_id] = (customer.decode(), snapshot)
        commands: list[Command] = []
        for txn_id, (customer, snapshot) in latest.items():
            state = self.customers.get(customer)
            if state is not None and txn_id in state.history:
                if state.last is None or state.last.txn_id != txn_id:
                    continue  # ours, and not the newest: nothing reads its snapshot
            commands.append(
                [
                    "EVALSHA",
                    self._snapshot_script,
                    1,
                    customer_key(customer),
                    txn_id,
                    snapshot.ts_ms,
                    snapshot.seq,
                    snapshot.encode(),
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
