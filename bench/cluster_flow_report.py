"""The report of :mod:`cluster_flow`: vegeta's results read back, the verdict on the run, the
timeline as a table and a PNG. Pure: no cluster, no process."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

BIN_SECONDS = 10
ALERTS = ("FraudstackInferenceLatencyHigh", "FraudstackInferenceErrorRateHigh")


@dataclass
class Sample:
    at: float
    phase: str
    share: int
    step: int
    replicas: int
    ready: int
    desired: int


def epoch(stamp: str) -> float:
    """vegeta's RFC 3339 time with nanoseconds (which ``fromisoformat`` does not take)."""
    whole, _, rest = stamp.replace("Z", "+00:00").partition(".")
    digits = "".join(itertools.takewhile(str.isdigit, rest))
    zone = rest[len(digits) :] if rest else ""
    return datetime.fromisoformat(whole + zone).timestamp() + float(f"0.{digits or 0}")


def sticky(requests: list[dict[str, Any]], stable: str, candidate: str) -> dict[str, Any]:
    """Each customer answered by one version at a time during the canary: ``stable`` until the
    rollout moves the customer to ``candidate``, and never back."""
    seen: dict[str, list[str]] = defaultdict(list)
    for request in sorted(requests, key=lambda r: float(r["t"])):
        version = request["version"]
        if request["attack"] == "canary" and version in (stable, candidate):
            versions = seen[request["customer"]]
            if not versions or versions[-1] != version:
                versions.append(version)
    moved = sum(versions == [stable, candidate] for versions in seen.values())
    back = sorted(c for c, versions in seen.items() if candidate in versions[:-1])
    return {"customers": len(seen), "moved": moved, "back": back}


def verdict(result: dict[str, Any]) -> list[str]:
    """What the run shows that it should not: empty when the whole flow behaved."""
    facts, problems = result["facts"], []
    if result["vegeta"]["success"] != 1:
        problems.append(f"vegeta: success {result['vegeta']['success']:.6f}, not 1")
    if facts["sticky"]["back"] or not facts["sticky"]["moved"]:
        problems.append(f"customers not sticky to one version at a time: {facts['sticky']}")
    phases = [p["phase"] for p in result["phases"]]
    wanted = ["Progressing", "Promoted", "RolledBack"]
    if [p for p in phases if p in wanted] != wanted:
        problems.append(f"the FraudModel went through {phases}, not {wanted} in that order")
    pdb = facts["pdb"]
    if (pdb["first"]["status"], pdb["second"]["status"]) != (201, 429):
        problems.append(f"the PodDisruptionBudget did not let one eviction of two pass: {pdb}")
    rollback = facts["rollback"]
    warnings = [e for e in rollback["events"] if e["type"] == "Warning"]
    if rollback["reason"] != "ArtifactCorrupt" or len(warnings) != 1:
        problems.append(f"the corrupt candidate's rollback: {rollback}")
    if sorted(facts["alerts"]) != sorted(ALERTS):
        problems.append(f"alerts loaded: {facts['alerts']}, wanted {list(ALERTS)}")
    return problems


def timeline(requests: list[dict[str, Any]], samples: list[Sample]) -> list[dict[str, Any]]:
    bins: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for request in requests:
        bins[int(request["t"] // BIN_SECONDS)].append(request)
    rows = []
    for index in sorted(bins):
        batch = bins[index]
        latencies = sorted(r["ms"] for r in batch)
        p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
        end = (index + 1) * BIN_SECONDS
        sample = next((s for s in reversed(samples) if s.at <= end), None)
        rows.append(
            {
                "t": index * BIN_SECONDS,
                "rps": round(len(batch) / BIN_SECONDS, 1),
                "failed": sum(r["code"] != 200 for r in batch),
                "p99_ms": round(p99, 2),
                "versions": dict(Counter(r["version"] for r in batch if r["version"])),
                "phase": sample.phase if sample else "",
                "share": sample.share if sample else 0,
                "replicas": sample.replicas if sample else 0,
                "ready": sample.ready if sample else 0,
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    facts, vegeta = result["facts"], result["vegeta"]
    lines = [
        "# The user's flow on the cluster",
        "",
        f"Measured {result['machine']['measured_at']} on {result['machine']['cpus']} CPUs; "
        f"the whole run took {result['seconds']:.0f} s.",
        "",
        "| t (s) | requests/s | failed | p99 (ms) | phase | candidate share "
        "| replicas (Ready) | versions answering |",
        "|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for row in result["timeline"]:
        versions = ", ".join(f"{v[-6:]}: {n}" for v, n in sorted(row["versions"].items()))
        lines.append(
            f"| {row['t']} | {row['rps']} | {row['failed']} | {row['p99_ms']} | {row['phase']} | "
            f"{row['share']} % | {row['replicas']} ({row['ready']}) | {versions} |"
        )
    lines += [
        "",
        "## vegeta over the whole run",
        "",
        "```",
        vegeta["text"].rstrip(),
        "```",
        "",
        "## Verdict",
        "",
        *([f"- FAILED: {problem}" for problem in result["verdict"]] or ["- every check held"]),
        "",
        "## What happened",
        "",
    ]
    lines += [f"- {e['t']:>6.1f} s: {e['event'].splitlines()[0]}" for e in result["events"]]
    lines += [
        "",
        f"- Scale-out took {facts.get('scale_out_seconds')} s under "
        f"{result['options']['scale_rate']} requests/s; scale-in "
        f"{facts.get('scale_in_seconds')} s after the load dropped.",
        f"- Sticky customers: {facts['sticky']['customers']} seen during the canary, "
        f"{facts['sticky']['moved']} moved to the candidate, "
        f"{len(facts['sticky']['back'])} moved back.",
        f"- Rollback: {facts['rollback']['reason']}: {facts['rollback']['message']}",
        f"- Alerts loaded: {', '.join(facts['alerts'])}",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["timeline"]
    t = [row["t"] for row in rows]
    figure, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    axes[0].plot(t, [row["rps"] for row in rows], label="answered requests/s")
    axes[0].bar(t, [row["failed"] for row in rows], width=BIN_SECONDS, color="red", label="failed")
    axes[0].set_ylabel("requests/s")
    axes[1].plot(t, [row["p99_ms"] for row in rows], color="purple", label="p99 (vegeta)")
    axes[1].set_ylabel("p99 (ms)")
    axes[2].step(t, [row["replicas"] for row in rows], where="post", label="replicas")
    axes[2].step(t, [row["ready"] for row in rows], where="post", label="Ready")
    axes[2].set_ylabel("inference pods")
    versions = sorted({v for row in rows for v in row["versions"]})
    for version in versions:
        share = [
            100 * row["versions"].get(version, 0) / max(1, sum(row["versions"].values()))
            for row in rows
        ]
        axes[3].plot(t, share, label=f"answered by {version}")
    axes[3].step(
        t,
        [row["share"] for row in rows],
        where="post",
        linestyle="--",
        label="candidate share (status)",
    )
    axes[3].set_ylabel("% of requests")
    axes[3].set_xlabel("seconds into the run")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=7)
    for event in result["phases"]:
        for axis in axes:
            axis.axvline(event["t"], color="grey", linewidth=0.6)
        axes[0].annotate(event["phase"], (event["t"], 0), rotation=90, fontsize=7, va="bottom")
    figure.suptitle("fraudstack on the cluster: canary, autoscaling, rollback")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
