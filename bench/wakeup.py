"""What a round trip that waits costs this machine: Redis PINGs one at a time against pipelined.

A request that comes alone to a worker of the inference service waits twice: for the request,
then for Redis's reply. Each wait puts the process to sleep and each reply wakes it, and what a
sleep and a wake-up cost depends on the machine more than on the program: little on bare metal,
much more in a virtual machine where an idle CPU is handed back to the host. This program
measures a round trip with the simplest client there is, a blocking socket to a private
``redis-server``:

* one at a time: send ``PING``, wait for ``+PONG`` (the client sleeps and is woken each time);
* pipelined: send 32 ``PING`` at once, read the 32 replies (one wait for 32 round trips).

The difference per round trip is the wait (the sleep and the wake-up of both ends) plus the
per-call work that 32 round trips share: the system calls and the client's loop. The first is
the part that grows where wake-ups are dear. What the inference benchmark shows next to it: its
servers spend more CPU per request at half their maximum throughput, where requests come alone,
than at the maximum, where each wake-up serves several. Prints Markdown and writes
``bench/results/wakeup.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from machine import machine  # noqa: E402
from servers import start_redis, stop  # noqa: E402

RESULTS = BENCH / "results"
PIPELINE_DEPTH = 32
PONG = b"+PONG\r\n"


def cpu_ns(pid: int) -> int:
    """CPU time a process's threads have run so far, in ns (Linux's schedstat)."""
    return sum(
        int(stat.read_text().split()[0]) for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")
    )


def round_trips(sock: socket.socket, server: int, count: int, depth: int) -> dict[str, float]:
    """CPU µs of the client and of Redis, and wall µs, per round trip of ``count`` PINGs sent
    ``depth`` at a time."""
    payload = b"PING\r\n" * depth
    expected = PONG * depth
    batches = count // depth
    server_before = cpu_ns(server)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        sock.sendall(payload)
        reply = b""
        while len(reply) < len(expected):
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("redis-server closed the connection")
            reply += chunk
        if reply != expected:
            raise SystemExit(f"redis-server answered {reply[:40]!r}, not PONG")
    done = batches * depth
    return {
        "cpu_us": round((time.process_time() - cpu) / done * 1e6, 2),
        "redis_cpu_us": round((cpu_ns(server) - server_before) / done / 1e3, 2),
        "wall_us": round((time.perf_counter() - wall) / done * 1e6, 2),
    }


def measure(port: int, server: int, count: int, repeats: int) -> list[dict[str, Any]]:
    """For one at a time and pipelined: the run of median client CPU, and every run."""
    rows = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(None)  # blocking: a timeout would poll before every call
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        round_trips(sock, server, 2_000, 1)  # warm-up
        for depth in (1, PIPELINE_DEPTH):
            runs = [round_trips(sock, server, count, depth) for _ in range(repeats)]
            median = sorted(runs, key=lambda run: run["cpu_us"])[len(runs) // 2]
            rows.append({"in_flight": depth, **median, "runs": runs})
    return rows


def markdown(document: dict[str, Any]) -> str:
    box = document["machine"]
    alone, pipelined = document["round_trips"]
    labels = (
        "one at a time (sleeps and is woken for each reply)",
        f"{PIPELINE_DEPTH} in flight (one wait for {PIPELINE_DEPTH} replies)",
    )
    lines = [
        "# What a round trip that waits costs this machine",
        "",
        f"Machine: {box['cpus']} CPUs ({box['processor']}), {box['memory_gib']} GiB, "
        f"{box['platform']}, {box['measured_at']}. A blocking socket to a private "
        f"`redis-server` on loopback, {document['count']:,} PINGs per run; the run of median "
        f"client CPU of {document['repeats']}.",
        "",
        "| client | CPU µs per round trip: client / Redis | wall µs per round trip |",
        "|---|---:|---:|",
        *(
            f"| {label} | {row['cpu_us']:.1f} / {row['redis_cpu_us']:.1f} | {row['wall_us']:.1f} |"
            for label, row in zip(labels, (alone, pipelined), strict=True)
        ),
        "",
        f"A round trip that waits costs the client {document['wait_cost_ratio']:.1f}× the CPU "
        "of a pipelined one here: the sleep and the wake-up, plus the system calls and the loop "
        f"that {PIPELINE_DEPTH} pipelined round trips share. A request that reaches a server "
        "alone pays such waits (for the request, and for the store's reply when there is one); "
        "in a busy stream several requests share each. The inference benchmark shows the "
        "consequence: its servers spend more CPU per request at half their maximum throughput "
        "than at the maximum.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="PINGs per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", default=str(RESULTS), help="where the results are written")
    args = parser.parse_args()
    if args.count < PIPELINE_DEPTH or args.repeats < 1:
        parser.error(f"--count must be at least {PIPELINE_DEPTH} and --repeats at least 1")

    with tempfile.TemporaryDirectory(prefix="fraudstack-bench-wakeup-") as work:
        redis_server, port = start_redis(Path(work) / "redis.log")
        try:
            rows = measure(port, redis_server.pid, args.count, args.repeats)
        finally:
            stop(redis_server)

    document = {
        "round_trips": rows,
        "wait_cost_ratio": round(rows[0]["cpu_us"] / rows[1]["cpu_us"], 2),
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
