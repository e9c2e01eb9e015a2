"""Online store benchmark: how a read and a write cost grows with one terminal's volume.

For one terminal holding 10^2 ... 10^6 events in its windows, against a private
``redis-server`` (no persistence; started like the other benchmarks' with
:func:`servers.start_redis`):

1. fill: the terminal's events (1 % of them chargebacks) streamed in event time through the
   aggregator's :class:`~fraudstack.aggregate.processor.Processor` (no Kafka: the records are
   built here), spread over the 30 days its windows reach;
2. write: 5,000 more events on that terminal through the same processor, in batches of 1,000,
   each from another customer; events per second (the aggregator's rate with that terminal);
3. read: ``POST /v1/score``'s lookup (:meth:`FeatureLookup.transaction`, the service's own
   code and pipelined connection) of a transaction on that terminal, one request at a time,
   after a warm-up: median and p99 latency, and Redis's CPU per request (its threads' run time
   from ``/proc/<pid>/task/*/schedstat``, in ns).

Target (issue 20): at 10^6 events the lookup stays within 2x of its cost at 10^2.

With ``--skew``, also a skewed stream against a uniform one (one terminal taking 20 % of the
transactions, the rest spread over 10,000 terminals) through one and two aggregator processes
(each a :class:`Processor` in its own process on its half of the partitions, the records
built beforehand), events per second from the first batch to the last.

Prints Markdown tables; writes ``bench/results/online_store.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fraudstack.adapters.online_store.generation import ready_commands
from fraudstack.adapters.online_store.layout import terminal_events_key
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.processor import Processor
from fraudstack.events import Transaction
from fraudstack.features.definitions import MS_PER_DAY
from fraudstack.serve.lookup import FeatureLookup
from fraudstack.settings import Topics
from machine import machine
from servers import start_redis, stop

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)
#: The probe transaction's time; the terminal's events sit in the 30 days its windows reach.
PROBE_TS = 1_700_000_000_000
WRITE_EVENTS = 5_000
WRITE_BATCH = 1_000
FILL_BATCH = 2_000
LOOKUPS = 5_000
WARMUP = 500
PARTITIONS = 4
ALLOWED_LATENESS_MS = 3_600_000
TERMINAL = "bench-terminal"
PROBE_CUSTOMER = "probe-customer"


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record as the processor sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _transaction(topics: Topics, txn_id: str, ts: int, customer: str, terminal: str) -> Record:
    event = {
        "txn_id": txn_id,
        "ts": ts,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": 12.5,
    }
    partition = zlib.crc32(customer.encode()) % PARTITIONS
    return Record(topics.transactions, partition, 0, customer.encode(), orjson.dumps(event))


def _label(topics: Topics, txn_id: str, ts: int, terminal: str) -> Record:
    label = {
        "txn_id": txn_id,
        "ts": ts,
        "customer_id": "whoever",
        "terminal_id": terminal,
        "is_fraud": True,
        "reported_at": ts + MS_PER_DAY,
    }
    return Record(topics.labels, 0, 0, b"whoever", orjson.dumps(label))


def _cpu_ns(pid: int) -> int:
    """CPU time a process's threads have run so far, in ns (Linux's schedstat)."""
    return sum(
        int(stat.read_text().split()[0]) for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")
    )


async def _flush(link: RedisLink) -> None:
    await link.execute_many([("FLUSHALL",)])


async def _fill(processor: Processor, topics: Topics, size: int) -> float:
    """Stream ``size`` events onto the terminal, spread over its windows; events/s."""
    rng = random.Random(size)
    first = PROBE_TS - 37 * MS_PER_DAY + 1_000
    span = 30 * MS_PER_DAY - 2_000
    times = sorted(first + rng.randrange(span) for _ in range(size))
    # the probe's customer: the same few events at every size, so only the terminal grows
    records = [
        _transaction(topics, f"p{n}", first - 10_000 + n, PROBE_CUSTOMER, "elsewhere")
        for n in range(10)
    ]
    for n, ts in enumerate(times):
        records.append(_transaction(topics, f"f{n}", ts, f"c{n % 10_000}", TERMINAL))
        if n % 100 == 0:  # a chargeback for 1 %, reported a day later: in order, not late
            records.append(_label(topics, f"f{n}", ts, TERMINAL))
    started = time.perf_counter()
    for start in range(0, len(records), FILL_BATCH):
        await processor.process(records[start : start + FILL_BATCH])
        done = min(start + FILL_BATCH, len(records))
        if size >= 100_000 and done % 100_000 < FILL_BATCH:
            print(f"    filled {done:,} of {len(records):,}", flush=True)
    return size / (time.perf_counter() - started)


async def _write_rate(processor: Processor, topics: Topics) -> float:
    """Events/s of :data:`WRITE_EVENTS` more events on the terminal, each another customer's."""
    base = PROBE_TS - 7 * MS_PER_DAY - WRITE_EVENTS
    records = [
        _transaction(topics, f"w{n}", base + n, f"w{n}", TERMINAL) for n in range(WRITE_EVENTS)
    ]
    started = time.perf_counter()
    for start in range(0, len(records), WRITE_BATCH):
        await processor.process(records[start : start + WRITE_BATCH])
    return WRITE_EVENTS / (time.perf_counter() - started)


async def _lookups(lookup: FeatureLookup, redis_pid: int, size: int) -> dict[str, float]:
    """POST /v1/score's lookup, one request at a time: latency and Redis CPU per request."""
    probe = Transaction(
        txn_id="probe", ts=PROBE_TS, customer_id=PROBE_CUSTOMER, terminal_id=TERMINAL, amount=20.0
    )
    for _ in range(WARMUP):
        scored = await lookup.transaction(probe)
    in_window = scored.features["terminal_nb_tx_30d"]
    assert in_window == size, (in_window, size)  # the windows hold the terminal's events
    latencies = []
    cpu_before = _cpu_ns(redis_pid)
    for _ in range(LOOKUPS):
        started = time.perf_counter_ns()
        await lookup.transaction(probe)
        latencies.append(time.perf_counter_ns() - started)
    redis_ns = _cpu_ns(redis_pid) - cpu_before
    latencies.sort()
    return {
        "lookup_median_us": statistics.median(latencies) / 1_000,
        "lookup_p99_us": latencies[int(0.99 * len(latencies))] / 1_000,
        "redis_cpu_us_per_request": redis_ns / LOOKUPS / 1_000,
        "events_in_30d_window": in_window,
    }


async def bench_sizes(url: str, redis_pid: int, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    topics = Topics()
    rows = []
    link = RedisLink(url, timeout=60.0)
    try:
        for size in sizes:
            await _flush(link)
            print(f"  terminal with {size:,} events", flush=True)
            processor = Processor(link, ALLOWED_LATENESS_MS, topics)
            processor.assign(PARTITIONS)
            fill_rate = await _fill(processor, topics, size)
            await link.execute_many(ready_commands())  # filled whole, as the service expects
            # read while the terminal holds exactly its N events, then write more
            read = await _lookups(FeatureLookup(link), redis_pid, size)
            key = terminal_events_key(TERMINAL)
            (memory,) = await link.execute_many([("MEMORY", "USAGE", key)])
            write_rate = await _write_rate(processor, topics)
            rows.append(
                {
                    "events": size,
                    # the machine is shared: how busy it was, next to each figure
                    "load_average_1m": os.getloadavg()[0],
                    **read,
                    "aggregator_events_per_s": write_rate,
                    "fill_events_per_s": fill_rate,
                    "events_zset_bytes": memory,
                }
            )
            print(f"    {rows[-1]}", flush=True)
    finally:
        await link.close()
    return rows


SKEW_EVENTS = int(os.environ.get("BENCH_SKEW_EVENTS", "200000"))
SKEW_CUSTOMERS = 5_000
SKEW_TERMINALS = 10_000
SKEW_DAYS = 22
SKEW_BATCH = 2_000


def _stream(skewed: bool) -> list[Record]:
    """Transactions in event time over 10,000 terminals (with ``skewed``, one merchant's
    terminal takes 20 % of them), and chargebacks for 0.5 %, each at its report time."""
    rng = random.Random(23)
    topics = Topics()
    start = PROBE_TS - SKEW_DAYS * MS_PER_DAY
    times = sorted(start + rng.randrange(SKEW_DAYS * MS_PER_DAY) for _ in range(SKEW_EVENTS))
    timed: list[tuple[int, Record]] = []
    for n, ts in enumerate(times):
        terminal = f"t{rng.randrange(SKEW_TERMINALS)}"
        if skewed and rng.random() < 0.2:
            terminal = "merchant"
        customer = f"c{rng.randrange(SKEW_CUSTOMERS)}"
        timed.append((ts, _transaction(topics, f"s{n}", ts, customer, terminal)))
        if rng.random() < 0.005:
            timed.append((ts + MS_PER_DAY, _label(topics, f"s{n}", ts, terminal)))
    timed.sort(key=lambda pair: pair[0])
    return [record for _, record in timed]


def _aggregate(url: str, records: list[Record], results: Any) -> None:
    """One aggregator process: its records in batches; when it started and ended, its slowest
    batch (wall clock, to compare across processes)."""

    async def run() -> tuple[float, float, float]:
        link = RedisLink(url, timeout=60.0)
        processor = Processor(link, ALLOWED_LATENESS_MS, Topics())
        processor.assign(PARTITIONS)
        slowest = 0.0
        started = time.time()
        try:
            for start in range(0, len(records), SKEW_BATCH):
                batch_started = time.perf_counter()
                await processor.process(records[start : start + SKEW_BATCH])
                slowest = max(slowest, time.perf_counter() - batch_started)
        finally:
            await link.close()
        return started, time.time(), slowest

    results.put(asyncio.run(run()))


def bench_skew(url: str) -> list[dict[str, Any]]:
    rows = []
    context = multiprocessing.get_context("fork")  # the records are shared, not pickled
    topics = Topics()
    for skewed in (False, True):
        stream = _stream(skewed)
        transactions = sum(1 for record in stream if record.topic == topics.transactions)
        for processes in (1, 2):
            asyncio.run(_flush_url(url))
            # each process its share of the partitions, as a consumer group splits them; the
            # labels go to the first
            shares: list[list[Record]] = [[] for _ in range(processes)]
            for record in stream:
                owner = record.partition % processes if record.topic == topics.transactions else 0
                shares[owner].append(record)
            results = context.Queue()
            workers = [
                context.Process(target=_aggregate, args=(url, share, results)) for share in shares
            ]
            for worker in workers:
                worker.start()
            spans = [results.get() for _ in workers]
            for worker in workers:
                worker.join()
            elapsed = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
            row = {
                "load_average_1m": os.getloadavg()[0],
                "stream": "skewed (one terminal 20 %)" if skewed else "uniform",
                "processes": processes,
                "events": transactions,
                "events_per_s": transactions / elapsed,
                "slowest_batch_ms": 1_000 * max(slowest for _, _, slowest in spans),
            }
            print(f"  {row}", flush=True)
            rows.append(row)
    return rows


async def _flush_url(url: str) -> None:
    link = RedisLink(url, timeout=60.0)
    try:
        await _flush(link)
    finally:
        await link.close()


def _markdown(rows: list[dict[str, Any]], skew: list[dict[str, Any]], info: dict[str, Any]) -> str:
    base = rows[0]["lookup_median_us"]
    lines = [
        "# Online store benchmark",
        "",
        "One terminal holding N events in its windows, a private redis-server. Lookup: "
        "`POST /v1/score`'s `FeatureLookup.transaction` (customer hash + six `ZCOUNT`, one round "
        f"trip), one request at a time, {LOOKUPS:,} after {WARMUP} warm-up. Redis CPU: its "
        "threads' run time (schedstat) over those requests. Aggregator: the `Processor` writing "
        f"{WRITE_EVENTS:,} more events on that terminal (batches of {WRITE_BATCH:,}, each event "
        "another customer's), no Kafka.",
        "",
        "| events in the terminal's windows | lookup median, µs | lookup p99, µs | vs 10^2 | "
        "Redis CPU per request, µs | aggregator, events/s | events ZSET, MB | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['events']:,} | {row['lookup_median_us']:.1f} | {row['lookup_p99_us']:.1f} "
            f"| {row['lookup_median_us'] / base:.2f}x | {row['redis_cpu_us_per_request']:.1f} "
            f"| {row['aggregator_events_per_s']:,.0f} "
            f"| {row['events_zset_bytes'] / 2**20:.1f} | {row['load_average_1m']:.1f} |"
        )
    top = rows[-1]
    verdict = "met" if top["lookup_median_us"] <= 2 * base else "NOT met"
    lines += [
        "",
        f"Target: the lookup at {top['events']:,} events within 2x of its cost at "
        f"{rows[0]['events']:,}: {top['lookup_median_us'] / base:.2f}x, {verdict}.",
    ]
    if skew:
        lines += [
            "",
            "## Skewed against uniform stream",
            "",
            "| stream | aggregator processes | events | events/s | slowest batch, ms | load avg |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in skew:
            lines.append(
                f"| {row['stream']} | {row['processes']} | {row['events']:,} "
                f"| {row['events_per_s']:,.0f} | {row['slowest_batch_ms']:.1f} "
                f"| {row['load_average_1m']:.1f} |"
            )
    lines += [
        "",
        f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}; Redis and "
        "the benchmark share the machine, with whatever else ran on it: the load average (1 min) "
        "at each row says how busy it was.",
    ]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["events"] for row in rows]
    figure, (read, write) = plt.subplots(1, 2, figsize=(11, 4))
    read.plot(sizes, [r["lookup_median_us"] for r in rows], "o-", label="lookup median")
    read.plot(sizes, [r["lookup_p99_us"] for r in rows], "s--", label="lookup p99")
    read.plot(sizes, [r["redis_cpu_us_per_request"] for r in rows], "^-", label="Redis CPU")
    read.axhline(2 * rows[0]["lookup_median_us"], color="grey", lw=0.8, label="2x median at 10^2")
    read.set_xscale("log")
    read.set_ylim(bottom=0)
    read.set_xlabel("events on the terminal")
    read.set_ylabel("µs per POST /v1/score lookup")
    read.legend()
    write.plot(sizes, [r["aggregator_events_per_s"] for r in rows], "o-", label="aggregator")
    write.set_xscale("log")
    write.set_ylim(bottom=0)
    write.set_xlabel("events on the terminal")
    write.set_ylabel("events/s written")
    write.legend()
    figure.suptitle("Online store: cost against one terminal's volume")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sizes", type=lambda text: tuple(int(n) for n in text.split(",")), default=SIZES
    )
    parser.add_argument("--skew", action="store_true", help="also the skewed stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-online-store-") as folder:
        process, port = start_redis(Path(folder) / "redis.log")
        url = f"redis://127.0.0.1:{port}/0"
        try:
            print("terminal sizes:", flush=True)
            rows = asyncio.run(bench_sizes(url, process.pid, args.sizes))
            if args.skew:
                print("skewed and uniform streams:", flush=True)
            skew = bench_skew(url) if args.skew else []
        finally:
            stop(process)
    info = machine()
    RESULTS.mkdir(exist_ok=True)
    text = _markdown(rows, skew, info)
    print(text)
    (RESULTS / "online_store.md").write_text(text)
    document = {"machine": info, "sizes": rows, "skew": skew}
    (RESULTS / "online_store.json").write_text(json.dumps(document, indent=2) + "\n")
    _plot(rows, RESULTS / "online_store.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
