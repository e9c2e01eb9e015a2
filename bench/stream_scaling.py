"""Streaming scaling benchmark: a uniform and a skewed stream through one and two aggregators.

Two streams (issue 23): the simulator's (5,000 customers, 10,000 terminals, 22 days, seed 5:
216,235 transactions and 1,034 chargebacks), and the same with 20 % of its transactions moved
to one terminal, one busy merchant (its chargebacks follow them). For each stream and each
number of instances (1, 2), against the local stack's Kafka (``fraudstack devstack up`` is done
for you, and undone at the end unless the stack was up already):

1. a fresh private Redis, fresh topics (4 partitions each) and a fresh consumer group; the whole
   stream is put in the topics first;
2. the instances start, each the production ``Aggregator`` in a process of its own
   (:mod:`stream_instance`), and form their group; once it is stable the records flow;
3. figures: records applied (replays included), unique events per second from the first batch
   of any instance to the last, rebalances during the run (the group's forming, before the
   first record, not counted), the longest event-loop stall, and the CPU seconds of the
   instances, Redis and Kafka meanwhile (the CPU per event does not depend on how busy the
   machine is, the rate does);
4. correctness: the online store against the offline computation of every feature of every
   customer and terminal (:func:`fraudstack.consistency.compare`).

The four runs are repeated (``--rounds``, every other round in reverse order); the ratios are of
each run's median round. Targets: the skewed stream's rate within 20 % of the uniform one's, two
instances at least as fast as one on both streams, no rebalance, the longest stall under 1 s.

Prints a Markdown table; writes ``bench/results/stream_scaling.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import group_cpu_seconds, machine_ticks
from fraudstack.consistency import compare
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.ingest.replay import produce_table
from fraudstack.settings import Topics
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from machine import machine
from servers import stop
from stream import local_stack

RESULTS = Path(__file__).resolve().parent / "results"
INSTANCE = Path(__file__).resolve().parent / "stream_instance.py"
CONFIG = SimulationConfig(customers=5_000, terminals=10_000, days=22, seed=5)
BUSY_SHARE = 0.2
INSTANCES = (1, 2)
GROUP_TIMEOUT_S = 60
RUN_TIMEOUT_S = 600
TARGETS = {
    "skewed_over_uniform": 0.8,
    "two_over_one": 1.0,
    "rebalances": 0,
    "longest_stall_ms": 1_000,
}


@dataclass(frozen=True)
class Stream:
    name: str
    transactions: pa.Table
    labels: pa.Table

    @property
    def events(self) -> int:
        return self.transactions.num_rows + self.labels.num_rows


def make_streams(config: SimulationConfig) -> list[Stream]:
    uniform = simulate(config)
    skewed = with_busy_terminal(uniform, BUSY_SHARE, config.seed)
    return [
        Stream("uniform", uniform, make_labels(uniform, seed=config.seed)),
        Stream(f"skewed (one terminal {BUSY_SHARE:.0%})", skewed, make_labels(skewed, config.seed)),
    ]


def with_busy_terminal(table: pa.Table, share: float, seed: int) -> pa.Table:
    """``share`` of the transactions, drawn at random, moved to the busiest terminal."""
    counts = pc.value_counts(table["terminal_id"])
    busy = counts.field("values")[pc.index(counts.field("counts"), pc.max(counts.field("counts")))]
    moved = np.random.default_rng(seed).choice(
        table.num_rows, round(share * table.num_rows), replace=False
    )
    terminals = np.asarray(table["terminal_id"].to_pylist(), dtype=object)
    terminals[moved] = busy.as_py()
    column = table.schema.get_field_index("terminal_id")
    return table.set_column(column, "terminal_id", pa.array(terminals, type=pa.string()))


async def _group(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state and how many members it has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.groups
    return described[2], len(described[5])


def wait_for_group(bootstrap: str, group: str, members: int) -> None:
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    while True:
        try:
            if asyncio.run(_group(bootstrap, group)) == ("Stable", members):
                return
        except KafkaError:  # no coordinator for a group nobody has joined yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the group {group} did not settle with {members} members")
        time.sleep(0.2)


async def follow(
    bootstrap: str, topics: Topics, group: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Show the group's committed offsets against the topics' ends; return once they meet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    bar = None
    try:
        described = await admin.describe_topics([topics.transactions, topics.labels])
        partitions = [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            for partition in topic["partitions"]
        ]
        ends = await consumer.end_offsets(partitions)
        bar = tqdm(total=sum(ends.values()), unit="rec", desc="aggregating")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            done = sum(max(meta.offset, 0) for tp, meta in committed.items() if tp in ends)
            bar.update(done - bar.n)
            if done >= bar.total:
                return
            if any(process.poll() is not None for process in processes):
                raise SystemExit("an aggregator instance exited; see its log")
            if time.monotonic() > deadline:
                raise SystemExit(f"the stream was not aggregated within {RUN_TIMEOUT_S} s")
            await asyncio.sleep(0.5)
    finally:
        if bar is not None:
            bar.close()
        await consumer.stop()
        await admin.close()


async def _delete_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics.all()))
    finally:
        await admin.close()


def own_session(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process in a session of its own, as a pod is a cgroup of its own.

    Unlike the servers of the other benchmarks (:func:`servers.start`): with Linux's session
    autogroups (on here) the CPU is shared between sessions first, so two instances in the
    benchmark's one session would split the one share one instance gets, and could never be
    faster than one while anything else runs on the machine. Each instance, and Redis, is its
    own group, as each is its own pod in the chart; Kafka is already (the local stack's).
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _cpu(groups: dict[str, int]) -> dict[str, float | None]:
    return {name: group_cpu_seconds(group) for name, group in groups.items()}


def measure(stream: Stream, instances: int, bootstrap: str, kafka_pid: int) -> dict[str, Any]:
    """One stream through ``instances`` aggregators; the row's figures."""
    prefix = f"bench-scaling-{uuid.uuid4().hex[:6]}."
    topics = Topics.with_prefix(prefix)
    group = f"{prefix}aggregate"
    with tempfile.TemporaryDirectory(prefix="bench-stream-scaling-") as scratch:
        folder = Path(scratch)
        private = PrivateRedis(folder, launch=lambda argv, log: own_session(argv, {}, log))
        private.start()
        assert private.process is not None
        redis, redis_url = private.process, private.url
        processes: list[subprocess.Popen[bytes]] = []
        try:
            asyncio.run(produce_table(bootstrap, stream.transactions, stream.labels, topics=topics))
            env = {
                "FRAUDSTACK_KAFKA_BOOTSTRAP": bootstrap,
                "FRAUDSTACK_REDIS_URL": redis_url,
                "FRAUDSTACK_TOPIC_PREFIX": prefix,
            }
            go = folder / "go"
            results = [folder / f"instance-{n}.json" for n in range(instances)]
            for n, result in enumerate(results):
                argv = [sys.executable, str(INSTANCE), "--group", group]
                argv += ["--go", str(go), "--result", str(result)]
                processes.append(own_session(argv, env, folder / f"instance-{n}.log"))
            wait_for_group(bootstrap, group, instances)
            groups = {f"instance {n}": process.pid for n, process in enumerate(processes)}
            groups |= {"redis": redis.pid, "kafka": os.getpgid(kafka_pid)}
            cpu_before, ticks_before = _cpu(groups), machine_ticks()
            go.touch()
            asyncio.run(follow(bootstrap, topics, group, processes))
            cpu_after, ticks_after = _cpu(groups), machine_ticks()
            # every instance reports before any leaves the group (leaving rebalances the rest)
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                stop(process)
            figures = [json.loads(result.read_text()) for result in results]
            print("comparing the online store with the offline features...", flush=True)
            report = asyncio.run(compare(redis_url, stream.transactions, stream.labels))
        except BaseException:
            for n in range(len(processes)):
                log = folder / f"instance-{n}.log"
                print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for process in processes:
                stop(process)
            stop(redis)
        asyncio.run(_delete_topics(bootstrap, topics))

    elapsed = max(f["last_batch_at"] for f in figures) - min(f["first_batch_at"] for f in figures)
    cpu_s = {
        name: None if before is None or cpu_after[name] is None else cpu_after[name] - before
        for name, before in cpu_before.items()
    }
    busy = None
    if ticks_before is not None and ticks_after is not None:
        busy = (ticks_after[0] - ticks_before[0]) / max(1, ticks_after[1] - ticks_before[1])
    return {
        "stream": stream.name,
        "instances": instances,
        "events": stream.events,
        "records_processed": sum(f["processed"] for f in figures),
        "elapsed_s": elapsed,
        "events_per_s": stream.events / elapsed,
        # a rebalance reaches every instance: the group's count is the most any instance saw
        "rebalances": max(_rebalances(f["rebalances"], f["rebalances_before_go"]) for f in figures),
        "forming_rebalances": max(f["rebalances_before_go"]["assigned"] for f in figures) - 1,
        "longest_stall_ms": 1000 * max(f["longest_stall_s"] for f in figures),
        "compared_values": report.compared_values,
        "wrong_values": len(report.mismatches),
        "missing": len(report.missing),
        "mismatch_examples": report.mismatches[:5] + report.missing[:5],
        "cpu_s": cpu_s,
        "machine_busy": busy,
        "load_average_1m": os.getloadavg()[0],
        "instances_detail": figures,
    }


def _rebalances(now: dict[str, int], at_go: dict[str, int]) -> int:
    return now["assigned"] - at_go["assigned"]


def cpu_us_per_event(row: dict[str, Any]) -> float:
    """CPU of the instances and Redis per event, in µs: what the work costs, however busy the
    machine was (the rate is what it got done in the CPU it was given)."""
    used = [seconds for name, seconds in row["cpu_s"].items() if name != "kafka"]
    return float("nan") if None in used else 1e6 * sum(used) / row["events"]


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
    """Each stream and instance count's median round: events/s and CPU µs per event."""
    keys = list(dict.fromkeys((row["stream"], row["instances"]) for row in rows))
    return {
        key: {
            "events_per_s": statistics.median(
                row["events_per_s"] for row in rows if (row["stream"], row["instances"]) == key
            ),
            "cpu_us_per_event": statistics.median(
                cpu_us_per_event(row) for row in rows if (row["stream"], row["instances"]) == key
            ),
        }
        for key in keys
    }


def ratios(middle: dict[tuple[str, int], dict[str, float]], measure: str) -> dict[str, float]:
    """Skewed over uniform per instance count, and two instances over one per stream."""
    streams = list(dict.fromkeys(stream for stream, _ in middle))
    uniform, skewed = streams[0], streams[-1]
    found = {
        f"skewed/uniform, {n} instance{'s' if n > 1 else ''}": middle[skewed, n][measure]
        / middle[uniform, n][measure]
        for n in INSTANCES
    }
    for name in streams:
        found[f"2/1 instances, {name}"] = middle[name, 2][measure] / middle[name, 1][measure]
    return found


def markdown(
    rows: list[dict[str, Any]],
    found: dict[str, dict[str, float]],
    info: dict[str, Any],
    config: SimulationConfig,
) -> str:
    lines = [
        "| stream | instances | round | records processed | unique events/s | rebalances | "
        "longest stall, ms | online = offline (values compared, wrong) | "
        "CPU s: instances / Redis / Kafka | CPU µs per event | machine busy | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda row: (row["stream"] != rows[0]["stream"], row["instances"])):
        cpu = row["cpu_s"]
        instances = sum(v for k, v in cpu.items() if k.startswith("instance") and v is not None)
        verdict = "yes" if row["wrong_values"] == 0 and row["missing"] == 0 else "**NO**"
        missing = f", {row['missing']} missing" if row["missing"] else ""
        busy = "?" if row["machine_busy"] is None else f"{row['machine_busy']:.0%}"
        lines.append(
            f"| {row['stream']} | {row['instances']} | {row['round']} "
            f"| {row['records_processed']:,} | {row['events_per_s']:,.0f} | {row['rebalances']} "
            f"| {row['longest_stall_ms']:,.0f} "
            f"| {verdict} ({row['compared_values']:,}, {row['wrong_values']}{missing}) "
            f"| {instances:.1f} / {_seconds(cpu['redis'])} / {_seconds(cpu['kafka'])} "
            f"| {cpu_us_per_event(row):.0f} | {busy} "
            f"| {row['load_average_1m']:.1f} |"
        )
    rebalances = max(row["rebalances"] for row in rows)
    stall = max(row["longest_stall_ms"] for row in rows)
    lines += [
        "",
        "| ratio (of the median rounds) | unique events/s | target "
        "| CPU per event (lower: cheaper) |",
        "|---|---:|---:|---:|",
    ]
    for name, value in found["events_per_s"].items():
        target = TARGETS["skewed_over_uniform"] if name.startswith("skewed") else 1.0
        lines.append(
            f"| {name} | {value:.2f}{_unmet(value >= target)} | ≥ {target:.2f} "
            f"| {found['cpu_us_per_event'][name]:.2f} |"
        )
    lines += [
        "",
        "| target | measured | target |",
        "|---|---:|---:|",
        f"| rebalances during a run, most | {rebalances}{_unmet(rebalances == 0)} | 0 |",
        f"| longest event-loop stall, ms | {stall:,.0f}"
        f"{_unmet(stall < TARGETS['longest_stall_ms'])} | < {TARGETS['longest_stall_ms']:,} |",
        "",
        f"Streams: {rows[0]['events']:,} events each ({config.customers:,} customers, "
        f"{config.terminals:,} terminals, {config.days} days, seed {config.seed}, with the "
        "chargebacks); the skewed one has 20 % of the transactions on the busiest terminal. "
        "Whole in Kafka (4 partitions a topic) before the instances start; each instance the "
        "production `Aggregator` in a process (and a session) of its own, its records held back "
        "until the group is stable, so a rebalance counted is one during the run (the group's "
        "forming is not). Unique events/s: the stream's events over the time from the first "
        "batch of any instance to the last. CPU: seconds of each process group from the first "
        "record to the last commit; machine busy: the share of both cores' time not idle "
        "meanwhile, whoever used it; load avg: the 1-minute load average after the round.",
        "",
        _load_note(rows, info)
        + f"Machine: {info['platform']}, {info['cpus']} CPUs, {info['memory_gib']} GiB, "
        f"Python {info['python']}; Kafka, Redis and the instances share the cores (with whatever "
        "else ran on the machine): compare ratios within one run, not absolute rates across runs.",
    ]
    return "\n".join(lines) + "\n"


def _load_note(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    load = max(row["load_average_1m"] for row in rows)
    if load <= info["cpus"]:
        return ""
    return (
        f"The machine was oversubscribed (load average up to {load:.1f} on {info['cpus']} "
        "CPUs, from work outside the benchmark): a round's rate is what it got done in the CPU "
        "it was given, and the rounds of one row differ as much as the rows; the CPU per event "
        "does not depend on the load. A stall is wall time, and grows with the load too.\n\n"
    )


def _unmet(met: bool) -> str:
    return "" if met else " (**not met**)"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def plot(
    rows: list[dict[str, Any]], middle: dict[tuple[str, int], dict[str, float]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(dict.fromkeys(stream for stream, _ in middle))
    positions = np.arange(len(streams))
    width = 0.38
    figure, (rates, stalls) = plt.subplots(1, 2, figsize=(11, 4.2))
    for offset, n in zip((-width / 2, width / 2), INSTANCES, strict=True):
        label = f"{n} instance{'s' if n > 1 else ''}"
        values = [middle[s, n]["events_per_s"] for s in streams]
        bars = rates.bar(positions + offset, values, width, label=f"{label} (median round)")
        rates.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        rounds = [(row["stream"], row["events_per_s"]) for row in rows if row["instances"] == n]
        rates.plot(
            [streams.index(s) + offset for s, _ in rounds],
            [rate for _, rate in rounds],
            "k.",
            label="each round" if n == INSTANCES[-1] else None,
        )
        stall = [
            max(r["longest_stall_ms"] for r in rows if (r["stream"], r["instances"]) == (s, n))
            for s in streams
        ]
        bars = stalls.bar(positions + offset, stall, width, label=label)
        stalls.bar_label(bars, labels=[f"{v:,.0f}" for v in stall], fontsize=8)
    stalls.axhline(TARGETS["longest_stall_ms"], color="grey", lw=0.8, ls="--", label="target")
    for axes, title in (
        (rates, "unique events/s"),
        (stalls, "longest event-loop stall (of any round), ms"),
    ):
        axes.set_xticks(positions, streams)
        axes.set_title(title)
        axes.legend(fontsize=8)
    figure.suptitle("Aggregation: uniform and skewed stream, one and two instances")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--days", type=int, default=CONFIG.days, help="a shorter stream, for a quick try"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the four runs (the median is kept)"
    )
    args = parser.parse_args()
    config = dataclasses.replace(CONFIG, days=args.days)
    print("simulating the streams...", flush=True)
    streams = make_streams(config)
    runs = [(stream, instances) for stream in streams for instances in INSTANCES]
    rows = []
    with local_stack() as stack:
        bootstrap = stack["kafka"]["address"]
        kafka_pid = stack["kafka"]["pids"][0]
        for round_number in range(1, args.rounds + 1):
            # every other round backwards: a drift in the machine's load favours no run
            for stream, instances in runs if round_number % 2 else runs[::-1]:
                print(f"round {round_number}: {stream.name}, {instances} instance(s)", flush=True)
                row = measure(stream, instances, bootstrap, kafka_pid) | {"round": round_number}
                print(
                    f"  {row['events_per_s']:,.0f} events/s, {row['records_processed']:,} "
                    f"records, {row['rebalances']} rebalances, stall "
                    f"{row['longest_stall_ms']:,.0f} ms, {row['wrong_values']} wrong, "
                    f"load {row['load_average_1m']:.1f}",
                    flush=True,
                )
                rows.append(row)
    info = machine()
    middle = medians(rows)
    found = {measure: ratios(middle, measure) for measure in ("events_per_s", "cpu_us_per_event")}
    text = markdown(rows, found, info, config)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_scaling.md").write_text("# Streaming: scaling and skew\n\n" + text)
    document = {"machine": info, "targets": TARGETS, "ratios": found, "rows": rows}
    (RESULTS / "stream_scaling.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(rows, middle, RESULTS / "stream_scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
