"""Turn a batch of Kafka records into writes to the online store (three round trips).

This module holds the stream's logic; what is stored where, and what each write costs, is the
store's (:mod:`fraudstack.adapters.online_store`).

* **Customers** are partition-local: ``transactions`` is keyed by customer id, so one instance
  owns all of a customer's events. It keeps the customer's history in memory (hydrated from
  Redis on first touch, dropped on every rebalance), computes the features of the customer's
  newest transaction with :mod:`fraudstack.features.online`, and writes them with the new
  events.
* **Terminals** are not: a terminal's transactions come from every customer, hence from every
  partition. Rather than re-keying them through a repartition topic (one more produce and
  consume per event), every instance updates terminals *atomically in Redis* with the store's
  terminal script, which also counts, on the terminal as it leaves it, the terminal windows of
  the batch's transactions that are their customer's newest, and of the stored transactions a
  late event or label reaches (whoever owns their customers).
* **Those counts go to the customers' hashes** (``GET /predict`` reads one hash), through the
  store's snapshot script, which keeps only the newest transaction's count taken at the highest
  terminal write counter, so concurrent instances cannot put an older count back.
* **Fenced writes** (the store's writer says which write is fenced how, and why): every
  assignment claims a new ownership epoch in Redis (:meth:`Processor.claim`); a batch's
  customer writes and published watermarks carry the epoch its partitions were read under, and
  the store refuses them once another instance has claimed the partition since, so an instance
  that lost a partition in a rebalance and finishes an old batch cannot overwrite what the new
  owner wrote. Terminal writes and snapshots, written by every instance, are monotone instead.
  A refusal is counted (``BatchResult.refused``, by write) and the instance drops its
  partition-local state after the batch; the service does not commit a fenced batch.
* **Terminals are pruned behind the low watermark** (see :meth:`Processor.assign`), so a
  partition that lags still finds the events its transactions' windows need. When a late item
  reaches windows the prune has already cut into (a labels topic far behind the transactions),
  they cannot be counted again whole: the snapshot is marked stale and the reader counts on the
  terminal, as it does for a customer without a snapshot.
* **A recount is paged**: a late event or label leaves the stored windows it changes to count
  again on the terminal; each terminal call counts a page of them, and the batch goes on with
  recount-only calls until none is left, so the batch ends with every window counted (as
  before) while no single call holds Redis for long.

A batch is: read the watermarks and the customers not in memory; the terminals' scripts (and
their pending recounts); then, with their counts, the customers' writes, the snapshots and the
watermarks. Every write is idempotent, so a batch replayed after a crash changes nothing; a
replayed transaction's terminal write is sent again, because the writes of one batch are not one
transaction and a crash may fall between them. An event more than the allowed lateness behind
its partition's newest event, an invalid record, a transaction whose record key is not its
customer id (the partitioning the customers' state relies on), and a fraud label reported after
the 7-day feature delay go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from fraudstack.adapters.kafka import SourceRecord
from fraudstack.adapters.online_store.codecs import LastTransaction, TerminalSnapshot
from fraudstack.adapters.online_store.writer import (
    CUSTOMER_FENCED,
    CUSTOMER_SUMMARY_OLDER,
    SNAPSHOT_FENCED,
    OnlineStoreWriter,
    TerminalItems,
    TerminalWritten,
)
from fraudstack.adapters.redis_link import Command, RedisLink
from fraudstack.aggregate.results import BatchResult, count_by_kind  # noqa: F401 (re-exported)
from fraudstack.errors import InvalidEvent
from fraudstack.events import Label, Transaction, parse_label, parse_transaction
from fraudstack.features.definitions import TERMINAL_HORIZON_MS, label_counts
from fraudstack.features.online import CustomerHistory
from fraudstack.settings import Topics

#: The low watermark when no partition has published one: nothing holds the prune back.
_NO_WATERMARK = 2**62


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


class Processor:
    """Applies batches of records to the online store; holds the partition-local state."""

    def __init__(
        self, link: RedisLink, allowed_lateness_ms: int, topics: Topics | None = None
    ) -> None:
        self.topics = topics or Topics()
        self.store = OnlineStoreWriter(link, self.topics.transactions, allowed_lateness_ms)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.customers: dict[str, CustomerState] = {}
        self.watermarks: dict[tuple[str, int], int] = {}
        #: this instance's ownership epoch of each transactions partition it owns (0: none
        #: claimed, as in a test or the bulk loader: only a hash no epoch wrote accepts it)
        self.epochs: dict[int, int] = {}
        #: partitions of the transactions topic, when known (see :meth:`assign`)
        self.partition_count: int | None = None
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

    async def claim(self, partitions: Iterable[int]) -> int:
        """Claim the transactions partitions just assigned: a new ownership epoch in Redis,
        which fences off every instance that owned them before (see the store's writer). Call it
        from the assignment callback, before any batch of the assignment."""
        owned = sorted(set(partitions))
        epoch = await self.store.claim(owned)
        self.epochs = dict.fromkeys(owned, epoch)
        return epoch

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
        if not arrivals and not labels:
            return result  # a batch of rejects: nothing to write
        # the epochs the batch is read under: a claim during the batch does not make it fresh
        epochs = dict(self.epochs)
        low_watermark = await self._hydrate({arrival.txn.customer_id for arrival in arrivals})

        now_ms = int(time.time() * 1000)
        commands: list[Command] = []
        applied, replayed = self._write_customers(commands, arrivals, now_ms, result, epochs)
        # Terminals first: their replies are the terminal windows the customers' snapshots need.
        # A replayed transaction's terminal write is sent again: the batch that first carried it
        # may have died after its terminal writes and before its customer ones (idempotent).
        newest = {
            last.txn_id
            for last in (self.customers[txn.customer_id].last for txn in applied + replayed)
            if last is not None
        }
        terminal_commands, planned = self.store.terminal_writes(
            self._terminal_items(applied + replayed, labels, newest), now_ms, low_watermark
        )
        written = await self._write_terminals(terminal_commands, planned, now_ms, low_watermark)
        skipped = sum(call.skipped for call in written)
        fresh = {txn.txn_id for txn in applied}
        customer_writes = len(commands)
        snapshot_start = len(commands)
        partitions = {arrival.txn.customer_id: arrival.record.partition for arrival in arrivals}
        commands += self._write_snapshots(written, fresh, partitions, epochs)
        snapshot_end = len(commands)
        watermark_writes = self.store.watermarks_write(self._our_watermarks(epochs))
        commands += watermark_writes
        replies = await self.store.execute(commands)
        refused = {
            "customer": sum(1 for r in replies[:customer_writes] if r == CUSTOMER_FENCED),
            "customer_summary": sum(
                1 for r in replies[:customer_writes] if r == CUSTOMER_SUMMARY_OLDER
            ),
            "snapshot": sum(
                1 for r in replies[snapshot_start:snapshot_end] if r == SNAPSHOT_FENCED
            ),
            "watermark": int(replies[-1]) if watermark_writes else 0,
            "terminal_item": skipped,
        }
        result.refused = {write: count for write, count in refused.items() if count}
        if result.fenced:
            # another instance claimed our partitions since the batch was read (or wrote newer
            # transactions of our customers): what this instance remembers is stale
            self._forget_after_batch = True
        result.written_event_ts = [txn.ts for txn in applied]
        return result

    async def _write_terminals(
        self, commands: list[Command], planned: list[TerminalItems], now_ms: int, low: int
    ) -> list[TerminalWritten]:
        """Send the terminal calls, then recount-only calls while a terminal has a recount
        pending (each call a page): the batch ends with every stored window counted again."""
        written: list[TerminalWritten] = []
        while commands:
            replies = await self.store.execute(commands)
            calls = [
                OnlineStoreWriter.terminal_written(part.terminal_id, reply)
                for part, reply in zip(planned, replies, strict=True)
            ]
            written += calls
            # a terminal's last call of the round says whether its recount is done
            last = {call.terminal_id: call.pending for call in calls}
            pending = [terminal for terminal, left in last.items() if left]
            commands, planned = self.store.recount_writes(pending, now_ms, low)
        return written

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

    async def _hydrate(self, customer_ids: set[str]) -> int:
        """Load the customers not in memory yet and read the partitions' watermarks as published
        after the batches before this one; return the low watermark (see :meth:`assign`)."""
        missing = [customer for customer in customer_ids if customer not in self.customers]
        published, records = await self.store.read_state(missing)
        if self.partition_count is not None:
            known = [published.get(partition, 0) for partition in range(self.partition_count)]
        else:
            known = list(published.values())
        for customer, record in records.items():
            if record is None:
                self.customers[customer] = CustomerState(CustomerHistory(), None)
            else:
                self.customers[customer] = CustomerState(record.history, record.last)
        return min(known) if known else _NO_WATERMARK

    def _our_watermarks(self, epochs: dict[int, int]) -> dict[int, tuple[int, int]]:
        """Each partition's newest event time, once its batch is written (the next batch's
        transactions are at most the allowed lateness older, so a prune behind it is safe),
        with the epoch the batch was read under."""
        return {
            partition: (watermark, epochs.get(partition, 0))
            for (topic, partition), watermark in self.watermarks.items()
            if topic == self.topics.transactions
        }

    def _write_customers(
        self,
        commands: list[Command],
        arrivals: list[Arrival],
        now_ms: int,
        result: BatchResult,
        epochs: dict[int, int],
    ) -> tuple[list[Transaction], list[Transaction]]:
        """Queue the customers' writes, each under the epoch of its partition; return the
        transactions applied and the replayed ones (already in the customer's history)."""
        partitions = {arrival.txn.customer_id: arrival.record.partition for arrival in arrivals}
        applied: list[Transaction] = []
        replayed: list[Transaction] = []
        new_events: dict[str, dict[str, tuple[int, int]]] = {}
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
            events = new_events.get(txn.customer_id)
            if events is None:
                events = new_events[txn.customer_id] = {}
                newest[txn.customer_id] = txn
            else:
                known = newest[txn.customer_id]
                if (txn.ts, txn.txn_id) > (known.ts, known.txn_id):
                    newest[txn.customer_id] = txn
            events[txn.txn_id] = (txn.ts, cents)

        for customer, events in new_events.items():
            state = self.customers[customer]
            txn = newest[customer]
            if state.last is None or (txn.ts, txn.txn_id) > (state.last.ts_ms, state.last.txn_id):
                state.last = LastTransaction(txn.txn_id, txn.ts, txn.amount_cents, txn.terminal_id)
            last = state.last
            expired = state.history.prune(last.ts_ms, self.allowed_lateness_ms)
            # an event of this batch already pruned is not written (it was refused above, or
            # fell out of the horizon the batch's newest transaction moved)
            for txn_id in expired:
                events.pop(txn_id, None)
            epoch = epochs.get(partitions[customer], 0)
            commands.append(
                self.store.customer_write(
                    customer, events, state.history, last, expired, now_ms, epoch
                )
            )
        return applied, replayed

    @staticmethod
    def _terminal_items(
        transactions: list[Transaction], labels: list[Label], newest: set[str]
    ) -> list[TerminalItems]:
        """Each terminal's events and labels of the batch; the windows of the transactions in
        ``newest`` (their customer's newest) are counted."""
        items: dict[str, TerminalItems] = {}
        for txn in transactions:
            terminal = items.get(txn.terminal_id)
            if terminal is None:
                terminal = items[txn.terminal_id] = TerminalItems(txn.terminal_id)
            terminal.events.append((txn.txn_id, txn.ts, txn.customer_id, txn.txn_id in newest))
        for label in labels:
            terminal = items.get(label.terminal_id)
            if terminal is None:
                terminal = items[label.terminal_id] = TerminalItems(label.terminal_id)
            terminal.labels.append((label.txn_id, label.ts))
        return list(items.values())

    def _write_snapshots(
        self,
        written: list[TerminalWritten],
        fresh: set[str],
        partitions: dict[str, int],
        epochs: dict[int, int],
    ) -> list[Command]:
        """The snapshot writes of the terminal windows just counted.

        A snapshot of a customer of this batch goes under the epoch of the customer's partition
        (the fence: it may be of a transaction the new owner has not written yet); others,
        counted again for whoever owns the customer, are monotone only.

        Windows the prune has cut into are stored only for transactions in ``fresh`` (new in
        this batch: the best count there is); others get a stale snapshot (the reader counts on
        the terminal). A transaction of this batch is snapshotted only if it is its customer's
        newest; one counted again because a late event or label reached its windows may belong
        to a customer of another partition, so it is always sent: the snapshot script itself
        keeps only the newest transaction's snapshot, and of it only the latest count.
        """
        latest: dict[str, tuple[str, TerminalSnapshot]] = {}
        for call in written:
            for item in call.counted:
                if item.ts_ms - TERMINAL_HORIZON_MS >= call.dropped or item.txn_id in fresh:
                    counts = item.counts
                else:
                    # the prune has cut into its windows: a count now could be short
                    counts = ()
                known = latest.get(item.txn_id)
                if known is None or known[1].seq < call.seq:
                    snapshot = TerminalSnapshot(item.txn_id, item.ts_ms, call.seq, counts)
                    latest[item.txn_id] = (item.customer_id, snapshot)
        commands: list[Command] = []
        for txn_id, (customer, snapshot) in latest.items():
            state = self.customers.get(customer)
            ours = state is not None and txn_id in state.history
            if ours and (state.last is None or state.last.txn_id != txn_id):  # type: ignore[union-attr]
                continue  # ours, and not the newest: nothing reads its snapshot
            partition = partitions.get(customer)
            epoch = epochs.get(partition, 0) if ours and partition is not None else None
            commands.append(self.store.snapshot_write(customer, snapshot, epoch))
        return commands
