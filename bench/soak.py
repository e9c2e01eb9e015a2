"""Soak: the inference service held at 80 % of its measured maximum for minutes while the
aggregator writes 1,000 events/s into the same Redis.

Against the real local stack (``fraudstack devstack up`` is done for you, and undone at the end
unless the stack was up already):

1. a simulated population is loaded into the online store (its own Redis database) and a model
   trained and published as ``fraudstack train`` does;
2. ``fraudstack serve`` (gunicorn, two workers) and ``fraudstack aggregate`` run as processes;
   a producer sends transactions of the same customers at a steady 1,000 events/s for the whole
   run. Their event time runs a day a second from where the loaded history ends, so after half
   a minute every 30-day window holds what it holds in production's steady state (old events
   leave as new ones come): the memory the aggregator and Redis need is then flat, and growth
   after the first minute means a leak, not data;
3. vegeta finds the service's maximum (``GET /predict/<customer>``, 32 connections, 10 s), then
   holds 80 % of it for ``--minutes``;
4. every request's answer and latency (vegeta's own record), and every 5 s the resident memory
   of each process (the gunicorn master and workers, the aggregator, Redis, the Kafka broker,
   vegeta).

Reported per minute: the success ratio and the p99; per process, RSS per minute and its growth
over the last minutes (after the first, which holds the warm-up). Targets: 100 % success, and no
process growing by 5 % or more over the last minutes. Writes ``bench/results/soak.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fraudstack.adapters.kafka import ensure_topics, make_producer
from fraudstack.aggregate.bulk import load_table
from fraudstack.devstack import Devstack
from fraudstack.devstack.process import free_port
from fraudstack.settings import Topics
from fraudstack.simulate import SimulationConfig, simulate
from inference import vegeta_binary, wait_answering
from inference_model import prepare_model, say
from machine import machine
from servers import start, stop

RESULTS = Path(__file__).resolve().parent / "results"
DATABASE = 7  # the soak's own Redis database: the devstack's data is left alone
SAMPLE_SECONDS = 5.0
GROWTH_LIMIT = 0.05


def rss_kib(pid: int) -> int | None:
    """Resident memory of a live process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class MemorySampler(threading.Thread):
    """Samples the RSS of named processes (a name may stand for a process and its children)."""

    def __init__(self, processes: dict[str, int], with_children: set[str]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.with_children = with_children
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_SECONDS):
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.started_at, 1)}
            for name, pid in self.processes.items():
                pids = [pid, *children(pid)] if name in self.with_children else [pid]
                values = [rss_kib(p) for p in pids]
                sample[name] = sum(v for v in values if v is not None)
            self.samples.append(sample)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


#: Event time passes this much faster than the wall clock (a day a second).
SPEEDUP = 86_400


def produce_steadily(
    bootstrap: str,
    topic: str,
    customers: list[str],
    terminals: list[str],
    rate: int,
    stop: threading.Event,
    since_ms: int,
) -> dict[str, int]:
    """Send transactions at ``rate`` a second until ``stop``, their event time running
    :data:`SPEEDUP` times the wall clock from ``since_ms``; return how many were sent."""
    sent = {"events": 0}

    async def run() -> None:
        producer = make_producer(bootstrap)
        await producer.start()
        rng = random.Random(3)
        started = time.monotonic()
        try:
            while not stop.is_set():
                due = int((time.monotonic() - started) * rate)
                while sent["events"] < due:
                    number = sent["events"]
                    customer = rng.choice(customers)
                    event = {
                        "txn_id": f"soak-{number}",
                        "ts": since_ms + int((time.monotonic() - started) * SPEEDUP * 1000),
                        "customer_id": customer,
                        "terminal_id": rng.choice(terminals),
                        "amount": round(rng.uniform(1, 200), 2),
                    }
                    await producer.send(topic, json.dumps(event).encode(), key=customer.encode())
                    sent["events"] += 1
                await asyncio.sleep(0.01)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())
    return sent


def attack(vegeta: str, targets: Path, rate: float, seconds: float, workers: int) -> bytes:
    rate_flag = f"-rate={round(rate)}/s" if rate else "-rate=0"
    argv = [vegeta, "attack", f"-targets={targets}", f"-duration={seconds}s", "-timeout=5s"]
    argv += [rate_flag, f"-max-workers={workers}"]
    return subprocess.run(argv, capture_output=True, check=True).stdout


def per_minute(vegeta: str, results: bytes) -> list[dict[str, Any]]:
    """Success ratio and p99 of each minute of a vegeta run."""
    encoded = subprocess.run(
        [vegeta, "encode", "--to", "csv"], input=results, capture_output=True, check=True
    ).stdout.decode()
    rows = list(csv.reader(io.StringIO(encoded)))
    first = min(int(row[0]) for row in rows)
    minutes: dict[int, list[tuple[bool, float]]] = {}
    for row in rows:
        minute = (int(row[0]) - first) // 60_000_000_000
        minutes.setdefault(minute, []).append((row[1] == "200", int(row[2]) / 1e6))
    table = []
    for minute, answers in sorted(minutes.items()):
        latencies = sorted(latency for _, latency in answers)
        table.append(
            {
                "minute": minute + 1,
                "requests": len(answers),
                "success": sum(ok for ok, _ in answers) / len(answers),
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
            }
        )
    return table


def memory_by_minute(samples: list[dict[str, Any]], names: list[str]) -> dict[str, list[float]]:
    """Mean RSS (MiB) of each process in each minute of the run."""
    by_minute: dict[str, list[float]] = {}
    for name in names:
        minutes: dict[int, list[int]] = {}
        for sample in samples:
            minutes.setdefault(int(sample["t"] // 60), []).append(sample[name])
        by_minute[name] = [round(statistics.mean(v) / 1024, 1) for _, v in sorted(minutes.items())]
    return by_minute


def growth(series: list[float]) -> float:
    """Growth from the second minute (after the warm-up) to the last."""
    if len(series) < 3 or series[1] == 0:
        return 0.0
    return series[-1] / series[1] - 1


def markdown(document: dict[str, Any]) -> str:
    lines = [
        "# Soak: inference at 80 % of its maximum while the aggregator writes",
        "",
        f"Measured {document['machine']['measured_at']} on {document['machine']['cpus']} CPUs. "
        f"Maximum {document['max_rps']:,} req/s; held at {document['rate']:,} req/s for "
        f"{document['minutes']} minutes, with the aggregator consuming "
        f"{document['events_per_second']:,} events/s ({document['events_sent']:,} sent).",
        "",
        "| minute | requests | success | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in document["per_minute"]:
        lines.append(
            f"| {row['minute']} | {row['requests']:,} | {row['success']:.4%} | "
            f"{row['p50_ms']} | {row['p99_ms']} |"
        )
    names = list(document["rss_mib"])
    lines += [
        "",
        "Resident memory (MiB), the mean of each minute; growth from minute 2 to the last:",
        "",
        "| process | "
        + " | ".join(f"min {i + 1}" for i in range(document["minutes"]))
        + " | growth |",
        "|---|" + "---:|" * (document["minutes"] + 1),
    ]
    for name in names:
        series = document["rss_mib"][name]
        cells = " | ".join(str(value) for value in series)
        lines.append(f"| {name} | {cells} | {document['rss_growth'][name]:+.1%} |")
    lines += ["", "Checks:", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in document["checks"]]
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    minutes = [row["minute"] for row in document["per_minute"]]
    latency.plot(minutes, [row["p99_ms"] for row in document["per_minute"]], "o-", label="p99")
    latency.plot(minutes, [row["p50_ms"] for row in document["per_minute"]], "o-", label="p50")
    latency.set(
        xlabel="minute", ylabel="latency (ms)", title=f"GET /predict at {document['rate']:,} req/s"
    )
    latency.legend()
    for name, series in document["rss_mib"].items():
        memory.plot(range(1, len(series) + 1), series, "o-", label=name)
    memory.set(xlabel="minute", ylabel="RSS (MiB)", title="resident memory per process")
    memory.set_yscale("log")
    memory.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=5, help="length of the soak (default 5)")
    parser.add_argument("--fraction", type=float, default=0.8, help="share of the maximum")
    parser.add_argument("--events", type=int, default=1_000, help="aggregator events/s")
    parser.add_argument("--customers", type=int, default=5_000)
    args = parser.parse_args()
    if args.minutes < 3:
        parser.error("--minutes must be at least 3: the first minute is the warm-up")

    stack = Devstack()
    was_up = bool(stack.read_state())
    servers = stack.up(progress=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fraudstack-soak-") as folder:
            work = Path(folder)
            redis_url = f"{servers['redis']['address'].rsplit('/', 1)[0]}/{DATABASE}"
            config = SimulationConfig(
                customers=args.customers, terminals=2 * args.customers, days=35, seed=5
            )
            say(f"simulating {args.customers:,} customers over 35 days")
            table = simulate(config)
            load_table(redis_url, table)
            registry = str(work / "registry")
            version, *_ = prepare_model(table, registry, "logistic_regression", 50_000, 5)

            port = free_port()
            serve_env = {
                "FRAUDSTACK_REDIS_URL": redis_url,
                "FRAUDSTACK_MODEL_REGISTRY_URI": registry,
                "FRAUDSTACK_SERVE_MODEL_VERSION": version,
                "FRAUDSTACK_SERVE_WORKERS": "2",
                "FRAUDSTACK_SERVE_METRICS_DIR": str(work / "metrics"),
                "FRAUDSTACK_SERVE_BIND": f"127.0.0.1:{port}",
                "FRAUDSTACK_ROUTING_KEY": "",
            }
            serve = start(
                [sys.executable, "-m", "fraudstack.cli", "serve"], serve_env, work / "serve.log"
            )
            processes.append(serve)
            prefix = f"soak-{int(time.time())}."
            topics = Topics.with_prefix(prefix)
            asyncio.run(ensure_topics(servers["kafka"]["address"], topics))
            aggregate_env = {
                "FRAUDSTACK_REDIS_URL": redis_url,
                "FRAUDSTACK_TOPIC_PREFIX": prefix,
                "FRAUDSTACK_AGGREGATE_GROUP_ID": f"{prefix}aggregate",
            }
            aggregate = start(
                [sys.executable, "-m", "fraudstack.cli", "aggregate", "--metrics-port", "0"],
                aggregate_env,
                work / "aggregate.log",
            )
            processes.append(aggregate)
            customers = sorted({str(c) for c in table["customer_id"].to_pylist()})
            terminals = sorted({str(t) for t in table["terminal_id"].to_pylist()})
            wait_answering(
                f"http://127.0.0.1:{port}/predict/{customers[0]}", serve, work / "serve.log"
            )

            stopping = threading.Event()
            produced: dict[str, int] = {}
            producer = threading.Thread(
                target=lambda: produced.update(
                    produce_steadily(
                        servers["kafka"]["address"],
                        topics.transactions,
                        customers,
                        terminals,
                        args.events,
                        stopping,
                        int(pc.max(table["ts"]).as_py()) + 1,
                    )
                ),
                daemon=True,
            )
            producer.start()
            rng = random.Random(5)
            targets = work / "targets"
            targets.write_text(
                "".join(
                    f"GET http://127.0.0.1:{port}/predict/{rng.choice(customers)}\n"
                    for _ in range(100_000)
                )
            )
            vegeta = vegeta_binary()
            say("finding the maximum (10 s, 32 connections)")
            probe = attack(vegeta, targets, 0, 10, 32)
            report = json.loads(
                subprocess.run(
                    [vegeta, "report", "-type=json"], input=probe, capture_output=True, check=True
                ).stdout
            )
            max_rps = round(report["throughput"])
            rate = round(max_rps * args.fraction)
            say(f"maximum {max_rps:,} req/s; holding {rate:,} req/s for {args.minutes} minutes")
            named = {
                "gunicorn (master + workers)": serve.pid,
                "aggregator": aggregate.pid,
                "redis-server": int(servers["redis"]["pids"][0]),
                "kafka broker": int(servers["kafka"]["pids"][0]),
            }
            sampler = MemorySampler(named, {"gunicorn (master + workers)"})
            sampler.start()
            results = attack(vegeta, targets, rate, args.minutes * 60, 256)
            sampler.stop()
            stopping.set()
            producer.join(60)
            minutes = per_minute(vegeta, results)[: args.minutes]
            rss = {
                name: series[: args.minutes]
                for name, series in memory_by_minute(sampler.samples, list(named)).items()
            }
            rss_growth = {name: round(growth(series), 4) for name, series in rss.items()}
            success = sum(r["success"] * r["requests"] for r in minutes) / sum(
                r["requests"] for r in minutes
            )
            document: dict[str, Any] = {
                "machine": machine(),
                "max_rps": max_rps,
                "rate": rate,
                "minutes": args.minutes,
                "events_per_second": args.events,
                "events_sent": produced.get("events", 0),
                "per_minute": minutes,
                "rss_mib": rss,
                "rss_growth": rss_growth,
                "checks": [
                    (f"success {success:.4%} (target 100 %)", success == 1.0),
                    *(
                        (
                            f"{name}: RSS growth {g:+.1%} over the last minutes (< 5 %)",
                            g < GROWTH_LIMIT,
                        )
                        for name, g in rss_growth.items()
                    ),
                ],
            }
    finally:
        for process in processes:
            stop(process)
        if not was_up:
            stack.down()
    RESULTS.mkdir(exist_ok=True)
    text = markdown(document)
    (RESULTS / "soak.md").write_text(text)
    (RESULTS / "soak.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(document, RESULTS / "soak.png")
    print(text)
    return 0 if all(ok for _, ok in document["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
