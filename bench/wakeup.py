"""What a round trip that waits costs this machine: Redis PINGs one at a time against pipelined.

A request that comes alone to a worker of the inference service waits twice: for the request,
then for Redis's reply. Each wait puts the process to sleep and each reply wakes it, and what a
sleep and a wake-up cost depends on the machine far more than on the program: little on bare
metal, a lot in a virtual machine where an idle CPU is handed back to the host. This program
measures it with the simplest client there is, a blocking socket to a private ``redis-server``:

* one at a time: send ``PING``, wait for ``+PONG`` (the client sleeps and is woken each time);
* pipelined: send 32 ``PING`` at once, read the 32 replies (one wake-up for 32 round trips).

The CPU time per round trip of the client (median of repeats) is what each design of the
inference benchmark pays per wake-up on top of its own work; it is why a lone request costs a
server more CPU than one of a busy stream, and so how busy the machine already is at half of a
server's maximum throughput. Prints Markdown and writes ``bench/results/wakeup.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from fraudstack.devstack.process import free_port  # noqa: E402
from machine import machine  # noqa: E402

RESULTS = BENCH / "results"
TICK = os.sysconf("SC_CLK_TCK")
PONG = b"+PONG\r\n"


def server_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def round_trips(
    sock: socket.socket, server: int, count: int, depth: int
) -> tuple[float, float, float]:
    """CPU µs of the client and of the server, and wall µs, per round trip of ``count`` PINGs
    sent ``depth`` at a time."""
    payload = b"PING\r\n" * depth
    expected = len(PONG) * depth
    server_cpu = server_cpu_seconds(server)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count // depth):
        sock.sendall(payload)
        received = 0
        while received < expected:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("redis-server closed the connection")
            received += len(chunk)
    done = (count // depth) * depth
    return (
        (time.process_time() - cpu) / done * 1e6,
        (server_cpu_seconds(server) - server_cpu) / done * 1e6,
        (time.perf_counter() - wall) / done * 1e6,
    )


def measure(port: int, server: int, count: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        round_trips(sock, server, 2_000, 1)  # warm-up
        for depth in (1, 32):
            runs = [round_trips(sock, server, count, depth) for _ in range(repeats)]
            rows.append(
                {
                    "in_flight": depth,
                    "cpu_us_per_round_trip": round(statistics.median(r[0] for r in runs), 2),
                    "redis_cpu_us_per_round_trip": round(statistics.median(r[1] for r in runs), 2),
                    "wall_us_per_round_trip": round(statistics.median(r[2] for r in runs), 2),
                    "runs": [
                        {"cpu_us": round(c, 2), "redis_cpu_us": round(r, 2), "wall_us": round(w, 2)}
                        for c, r, w in runs
                    ],
                }
            )
    return rows


def markdown(document: dict[str, Any]) -> str:
    box = document["machine"]
    alone, pipelined = document["round_trips"]
    lines = [
        "# What a round trip that waits costs this machine",
        "",
        f"Machine: {box['cpus']} CPUs ({box['processor']}), {box['memory_gib']} GiB, "
        f"{box['platform']}, {box['measured_at']}. A blocking socket to a private "
        f"`redis-server` on loopback, {document['count']:,} PINGs per run, median of "
        f"{document['repeats']} runs.",
        "",
        "| client | CPU µs per round trip: client / Redis | wall µs per round trip |",
        "|---|---:|---:|",
        *(
            f"| {label} | {row['cpu_us_per_round_trip']:.1f} / "
            f"{row['redis_cpu_us_per_round_trip']:.1f} | {row['wall_us_per_round_trip']:.1f} |"
            for label, row in (
                ("one at a time (sleeps and is woken for each reply)", alone),
                ("32 in flight (one wake-up for 32 replies)", pipelined),
            )
        ),
        "",
        f"Waiting for each reply costs the client {document['wait_cost_ratio']:.1f}× the CPU of a "
        "pipelined round trip here, and Redis, woken for each command, pays its share too. A "
        "request that reaches a server alone pays such waits (for the request, and for the "
        "store's reply when there is one), and a request in a busy stream shares them with "
        "others: that is why the inference benchmark's servers spend more CPU per request at "
        "half their maximum throughput than at the maximum.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="PINGs per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", default=str(RESULTS), help="where the results are written")
    args = parser.parse_args()

    port = free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or redis_server.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.1)
        rows = measure(port, redis_server.pid, args.count, args.repeats)
    finally:
        redis_server.terminate()
        redis_server.wait(10)

    document = {
        "round_trips": rows,
        "wait_cost_ratio": round(
            rows[0]["cpu_us_per_round_trip"] / rows[1]["cpu_us_per_round_trip"], 2
        ),
        "count": args.count,
        "repeats": args.repeats,
        "machine": machine(),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "wakeup.json").write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(document)
    (results / "wakeup.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
