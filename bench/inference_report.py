"""The targets, the Markdown table and the latency plot of the inference benchmark."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

TARGETS = {
    "max_vs_baseline": 5.0,
    "max_vs_ceiling": 0.75,
    "half_max_p99_ms": 10.0,
    "half_max_success": 1.0,
    "model_eval_us": 50.0,
}
NAMES = {
    "ours": "ours (fraudstack serve)",
    "baseline": "naive reference",
    "ceiling": "bare endpoint (ceiling)",
    "ceiling_strict": "bare endpoint, pre-encoded, direct route",
}


def _median_rps(entry: dict[str, Any]) -> float:
    # vegeta's throughput counts successful requests only
    return float(statistics.median(row["throughput"] for row in entry["rounds"]))


def _half_max_row(document: dict[str, Any]) -> dict[str, Any]:
    return next(row for row in document["ours"]["ladder"] if row["fraction_of_max"] == 0.5)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _placement(config: dict[str, Any]) -> str:
    servers, load = config.get("server_cpus"), config.get("load_cpus")
    if not servers and not load:
        return "vegeta on the same machine and the same cores"
    where = ", ".join(
        f"{who} on {'CPU' if len(cpus) == 1 else 'CPUs'} {','.join(map(str, cpus))}"
        for who, cpus in (("servers and Redis", servers), ("vegeta", load))
        if cpus
    )
    return f"vegeta on the same machine; {where}"


def _scheduling(machine: dict[str, Any]) -> list[str]:
    """Where the kernel groups sessions for scheduling, how the processes were started."""
    if not machine.get("sched_autogroup"):
        return []
    return [
        "",
        "Linux session autogroups are on here: the servers, Redis and vegeta are all started from "
        "the benchmark's own session, so the scheduler weighs them one process at a time, as when "
        "they are started from one shell (a server in a session of its own is weighed as one "
        "group against vegeta's; see `start` in `bench/inference.py`).",
    ]


def _usage(row: dict[str, Any]) -> str:
    """CPU µs per request of the server, vegeta and Redis in one run ("?" where /proc was not
    readable, or in older results)."""
    parts = [
        row.get("server_cpu_us_per_request"),
        row.get("vegeta_cpu_us_per_request"),
        row.get("redis_cpu_us_per_request"),
    ]
    return " / ".join("?" if part is None else f"{part:,.0f}" for part in parts)


def _busy(row: dict[str, Any]) -> str:
    busy = row.get("machine_busy")
    return "?" if busy is None else f"{busy:.0%}"


def _cpu(row: dict[str, Any]) -> str:
    """The two CPU columns of a table row."""
    return f"{_usage(row)} | {_busy(row)}"


def checks(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    ours = document["ours"]["max_rps"]
    half = _half_max_row(document)
    measured = {
        "max_vs_baseline": round(ours / document["baseline"]["max_rps"], 2),
        "max_vs_ceiling": round(ours / document["ceiling"]["max_rps"], 3),
        "half_max_p99_ms": half["p99_ms"],
        "half_max_success": half["success"],
        "model_eval_us": document["model_eval_us"]["ours"],
    }
    result = {}
    for name, target in TARGETS.items():
        value = measured[name]
        at_most = name in ("half_max_p99_ms", "model_eval_us")
        met = value <= target if at_most else value >= target
        result[name] = {"target": target, "measured": value, "met": met}
    result["max_vs_ceiling_strict"] = {
        "target": None,
        "measured": round(ours / document["ceiling_strict"]["max_rps"], 3),
        "met": None,
    }
    result["median_vs_ceiling"] = {
        "target": None,
        "measured": round(_median_rps(document["ours"]) / _median_rps(document["ceiling"]), 3),
        "met": None,
    }
    alike = half.get("ceiling_same_rate")  # the bare endpoint's run right after the kept one
    if alike is not None:
        result["half_max_p99_ms_of_ceiling"] = {
            "target": None,
            "measured": alike["p99_ms"],
            "met": None,
        }
    return result


def markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    config = document["config"]
    lines = [
        "# Inference benchmark",
        "",
        f"`{config['endpoint']}`, customers drawn at random from a store of "
        f"{config['customers']:,} customers ({config['transactions']:,} transactions, "
        f"{config['days']} days); {_count(config['workers'], 'gunicorn worker')} (uvicorn, uvloop, "
        f"httptools) for every design; {_placement(config)}; model "
        f"`{document['model']['version']}`.",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['processor']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, {machine['measured_at']}; shared with other work "
        f"(load average after the run: "
        f"{', '.join(f'{value:.1f}' for value in machine['load_average_after'])}), so compare "
        "designs within this run.",
        *_scheduling(machine),
        "",
        "## Maximum throughput (best of interleaved rounds; the last rounds precede the ladder)",
        "",
        "| design | max req/s | median req/s | rounds (req/s) | max vs ours | "
        "CPU µs/req: server / vegeta / Redis | machine busy |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    ours = document["ours"]["max_rps"]
    for design in ("ours", "baseline", "ceiling", "ceiling_strict"):
        entry = document[design]
        rounds = ", ".join(f"{row['throughput']:,.0f}" for row in entry["rounds"])
        best = max(entry["rounds"], key=lambda row: row["throughput"])
        lines.append(
            f"| {NAMES[design]} | {entry['max_rps']:,.0f} | {_median_rps(entry):,.0f} | "
            f"{rounds} | {entry['max_rps'] / ours:.2f}× | {_cpu(best)} |"
        )
    lines += [
        "",
        "## Fixed-rate ladder (each run set against the design's best round so far; of a "
        "rung's runs set against the maximum reported, the least disturbed is kept; "
        f"{_count(config.get('ladder_runs', 1), 'run')} per rung)",
        "",
        "| design | rate (req/s) | success | p50 ms | p95 ms | p99 ms | max ms | "
        "CPU µs/req: server / vegeta / Redis | machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for design in ("ours", "baseline", "ceiling"):
        for row in document[design]["ladder"]:
            lines.append(
                f"| {NAMES[design]} | {row['rate']:,} ({_share(row)}) | "
                f"{row['success']:.2%} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {row['max_ms']:.2f} | {_cpu(row)} |"
            )
    half = _half_max_row(document)
    if "runs" in half:
        maximum = document["ours"]["max_rps"]
        each = "; ".join(
            f"{run['rate']:,} req/s ({_share({**run, 'fraction_of_max': 0.5})}): "
            f"p99 {run['p99_ms']:.2f} ms, {run['success']:.2%} ok"
            + ("" if run["max_rps_basis"] == maximum else " (not kept: set against a lower round)")
            for run in half["runs"]
        )
        lines += ["", f"Every run of our half-maximum rung: {each}."]
    alike = document.get("ceiling_at_ours_half_max")
    if alike:
        each = "; ".join(
            f"{run['rate']:,} req/s: p99 {run['p99_ms']:.2f} ms, {run['success']:.2%} ok "
            f"(ours: {run['ours_p99_ms']:.2f} ms), {_usage(run)} µs/req, busy {_busy(run)}"
            for run in alike
        )
        lines += [
            "",
            "The bare endpoint at the same rate, right after each of those runs (what this machine "
            f"gives a server that returns a constant at that rate): {each}.",
        ]
    lines += [
        "",
        "CPU µs/req: CPU time per request of the server's processes, of the load generator and "
        "of Redis during the run; machine busy: the share of all cores' time not idle"
        + (
            "."
            if config.get("server_cpus") or config.get("load_cpus")
            else ". All of them share the same cores."
        ),
    ]
    evaluation = document["model_eval_us"]
    lines += [
        "",
        "## Single-row model evaluation (median µs)",
        "",
        "| evaluator | warm | cold |",
        "|---|---:|---:|",
        f"| ours ({evaluation['engine']}) | **{evaluation['ours']}** | {evaluation['ours_cold']} |",
        f"| onnxruntime, same ONNX graph | {evaluation['onnxruntime']} "
        f"| {evaluation['onnxruntime_cold']} |",
        f"| scikit-learn `predict_proba` | {evaluation['scikit_learn']} | |",
        "",
        "warm: calls back to back; cold: "
        f"{evaluation['cold_sweep_bytes'] // 2**20} MiB of memory written before each call, as "
        "the rest of a request does between two requests of a lone worker. Largest difference "
        f"between ours and scikit-learn: {evaluation['max_abs_diff']:.1e}. Ours and the naive "
        "service answered the same probabilities to "
        f"{document['probability_max_abs_diff_ours_vs_baseline']:.1e}.",
        "",
        "## Targets",
        "",
        "| target | wanted | measured | met |",
        "|---|---:|---:|:---:|",
    ]
    labels = {
        "max_vs_baseline": "max throughput / naive reference",
        "max_vs_ceiling": "max throughput / bare endpoint",
        "half_max_p99_ms": "p99 at half our max (ms)",
        "half_max_success": "success at half our max",
        "model_eval_us": "single-row evaluation (µs)",
        "max_vs_ceiling_strict": (
            "max throughput / pre-encoded bare endpoint, direct route (shown only)"
        ),
        "median_vs_ceiling": "median round / bare endpoint's median round (shown only)",
        "half_max_p99_ms_of_ceiling": (
            "p99 of the bare endpoint at that rate, right after (ms, shown only)"
        ),
    }
    for name, check in document["checks"].items():
        wanted = (
            ""
            if check["target"] is None
            else (
                f"≤ {check['target']}"
                if name in ("half_max_p99_ms", "model_eval_us")
                else f"≥ {check['target']}"
            )
        )
        met = "" if check["met"] is None else ("yes" if check["met"] else "**no**")
        lines.append(f"| {labels[name]} | {wanted} | {check['measured']} | {met} |")
    return "\n".join(lines) + "\n"


def _share(row: dict[str, Any]) -> str:
    """``50% of 3,967``: the rung's fraction and the maximum it was set against."""
    basis = row.get("max_rps_basis")
    share = f"{row['fraction_of_max']:.0%}"
    return f"{share} of {basis:,.0f}" if basis else share


def plot(document: dict[str, Any], path: Path) -> None:
    """p50 and p99 latency against the offered rate, one colour per design."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    colours = {"ours": "tab:green", "baseline": "tab:red", "ceiling": "tab:blue"}
    for design, colour in colours.items():
        # by rate: rungs set against different maxima need not come in the fractions' order
        ladder = sorted(document[design]["ladder"], key=lambda row: row["rate"])
        rates = [row["rate"] for row in ladder]
        axis.plot(
            rates,
            [row["p99_ms"] for row in ladder],
            "o-",
            color=colour,
            label=f"{NAMES[design]} p99",
        )
        axis.plot(
            rates,
            [row["p50_ms"] for row in ladder],
            "s--",
            color=colour,
            alpha=0.6,
            label=f"{NAMES[design]} p50",
        )
        axis.axvline(document[design]["max_rps"], color=colour, linestyle=":", alpha=0.5)
    axis.axhline(
        TARGETS["half_max_p99_ms"],
        color="grey",
        linestyle="-.",
        alpha=0.5,
        label="10 ms p99 target",
    )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate (requests/s); dotted lines: maximum throughput")
    axis.set_ylabel("latency (ms)")
    axis.set_title("GET /predict/{user_id}: latency against rate, same machine, same run")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
