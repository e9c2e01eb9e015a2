"""Turn a batch of Kafka records into one pipelined write to the online store.

Where each entity's state lives, and why:

* **Customers** are partition-local: ``transactions`` is keyed by customer id, so one instance
  owns all of a customer's events. It keeps the customer's history in memory (hydrated from
  Redis on first touch, dropped on every rebalance), computes the features of the customer's
  newest transaction with :mod:`fraudstack.features.online`, and writes them with the new event
  fields in one ``HSET``.
* **Terminals** are not: a terminal's transactions come from every customer, hence from every
  partition. Rather than re-keying them through a repartition topic (one more produce and
  consume per event), every instance updates terminal hashes *atomically in Redis* with a small
  Lua script: add the event and label fields, raise ``_event_ts`` to the newest, prune what no
  window can reach any more. That is enough because terminal windows end 7 days before the
  transaction: they are finished at read time from the event fields, never precomputed.

Both writes are idempotent (a field per transaction id), so a batch replayed after a crash
changes nothing; a replayed transaction's terminal write is sent again, because the customer and
terminal writes of one batch are not one transaction and a crash may fall between them. An event
more than the allowed lateness behind its partition's newest event, an invalid record, and a
fraud label reported after the 7-day feature delay go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain

from fraudstack.adapters.kafka import SourceRecord
from fraudstack.adapters.online_store import (
    CUSTOMER_TTL_SECONDS,
    TERMINAL_TTL_SECONDS,
    LastTransaction,
    customer_key,
    customer_record,
    customer_summary_fields,
    terminal_key,
)
from fraudstack.adapters.redis_link import Command, RedisLink
from fraudstack.errors import InvalidEvent, StoreError
from fraudstack.events import Label, Transaction, parse_label, parse_transaction
from fraudstack.features.definitions import (
    TERMINAL_HORIZON_MS,
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

# KEYS[1] the terminal hash. ARGV: updated_at_ms, horizon_ms, ttl_s, then field/value pairs.
# Event fields (e:) carry "<ts>", label fields (f:) "<ts>:<reported_at>".
_TERMINAL_SCRIPT = """
local key = KEYS[1]
local stored = redis.call('HMGET', key, '_event_ts', '_pruned_at')
local newest = tonumber(stored[1] or '0')
local pruned = tonumber(stored[2] or '0')
for i = 4, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 2) == 'e:' then
    local ts = tonumber(ARGV[i + 1])
    if ts > newest then newest = ts end
  end
end
redis.call('HSET', key, '_event_ts', newest, '_updated_at', ARGV[1], unpack(ARGV, 4))
local cutoff = newest - tonumber(ARGV[2])
if cutoff - pruned > 86400000 then
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local prefix = string.sub(fields[i], 1, 2)
    if prefix == 'e:' or prefix == 'f:' then
      local ts = tonumber(string.match(fields[i + 1], '^%d+'))
      if ts <= cutoff then redis.call('HDEL', key, fields[i]) end
    end
  end
  redis.call('HSET', key, '_pruned_at', cutoff)
end
redis.call('EXPIRE', key, ARGV[3])
return newest
"""


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
        self._terminal_script = hashlib.sha1(_TERMINAL_SCRIPT.encode()).hexdigest()
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
        # a replayed transaction's terminal write is sent again: the batch that first carried it
        # may have died after its customer writes and before its terminal ones (idempotent)
        self._write_terminals(commands, applied + replayed, labels, now_ms)
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

    async def _execute(self, commands: list[Command]) -> None:
        """Run a batch; when Redis forgot the terminal script (it restarted), load it and run the
        batch again, which is idempotent."""
        try:
            await self.link.execute_many(commands)
            return
        except StoreError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
        await self.link.execute_many([("SCRIPT", "LOAD", _TERMINAL_SCRIPT)])
        await self.link.execute_many(commands)

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
        commands: list[Command],
        transactions: list[Transaction],
        labels: list[Label],
        now_ms: int,
    ) -> None:
        per_terminal: dict[str, list[str]] = {}
        for txn in transactions:
            pairs = per_terminal.get(txn.terminal_id)
            if pairs is None:
                pairs = per_terminal[txn.terminal_id] = []
            pairs += (event_field(txn.txn_id), terminal_event_value(txn.ts))
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
                        *pairs[start : start + 2 * MAX_FIELDS_PER_SCRIPT_CALL],
                    ]
                )


def count_by_kind(result: BatchResult) -> dict[tuple[str, str], int]:
    """The batch's outcome counts, keyed like the ``aggregate_events_total`` labels."""
    return {
        ("transaction", "applied"): result.applied,
        ("transaction", "duplicate"): result.duplicates,
        ("label", "applied"): result.labels,
        ("label", "ignored"): result.ignored,
    }
