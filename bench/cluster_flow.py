"""The user's whole flow on a cluster where the chart is installed: canary, autoscaling, rollback.

Run it against any cluster where ``helm install`` put fraudstack with its ServiceMonitors beside a
Prometheus (kube-prometheus-stack's, or ``fraudstack devstack up --cluster``'s add-on); it needs
``kubectl`` and ``vegeta`` on the PATH (or ``--kubectl``/``--vegeta``) and the Services reachable
from where it runs. ``--inference`` must spread requests over the pods as the Service does: a
ClusterIP from a node (the default), a NodePort or an ingress; not ``kubectl port-forward``, which
holds one pod (the one the eviction may take). vegeta keeps its connections, as payment clients
do, so pods the HPA adds get the new connections' share of the load::

    python bench/cluster_flow.py --kubeconfig ~/.kube/config --namespace fraudstack \\
        --release fraud --prometheus http://127.0.0.1:9090 --api-key "$INGEST_API_KEY"

What it does, printing a line per event and the FraudModel, pods and HPA every ten seconds:

1. waits until Prometheus lists the inference, ingestion and aggregation targets ``up``;
2. streams a simulated day (its clock compressed into the last 45 minutes: see
   :func:`stream_a_day`) through the ingestion Service;
3. trains two model versions with Jobs made from the chart's training CronJob, and waits until
   the inference Service answers for the streamed customers (their features are in Redis);
4. applies a FraudModel (stable v1, candidate v2, steps 10 % then 50 %, then promotion to 100 %)
   while vegeta attacks ``GET /predict/{customer}`` at a constant rate; the operator reads its
   gates from Prometheus and promotes v2, which is then made the stable version;
5. attacks at a rate the pods' CPU requests cannot take: the HPA scales the inference Deployment
   out; an eviction of one pod passes and a second one at once is refused by the
   PodDisruptionBudget; after the load drops, the HPA scales back in;
6. rolls out a candidate whose artifact fails its hash check (a copy of v2 with one byte
   changed, written by a pod made from the CronJob's): the operator rolls it back by itself,
   with the reason in the FraudModel's status and a Kubernetes Event;
7. checks that the PrometheusRule's alerts are loaded, and writes vegeta's report over the whole
   run: every request answered, and each customer answered by one version at a time (sticky:
   once moved to the candidate, never back). The exit code is 1 when a check failed
   (:func:`cluster_flow_report.verdict`).

What it leaves: the FraudModel (``--fraudmodel``, created or taken over) serving v2, the two new
versions and ``corrupt-<v2>`` in the registry, and its Jobs (``<release>-flow-*``).

Results: ``cluster_flow.{md,json,png}`` in ``--results`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from cluster_flow_parts import Flow, Kube, Options, Watcher, say  # noqa: E402
from cluster_flow_report import markdown, plot, sticky, timeline, verdict  # noqa: E402
from cluster_flow_steps import (  # noqa: E402
    alerts_loaded,
    canary,
    decode,
    features_served,
    rollback,
    scale,
    stream_a_day,
    targets_up,
    train_versions,
    vegeta_report,
)
from machine import machine  # noqa: E402

RESULTS = BENCH / "results"


def service_address(kube: Kube, service: str) -> str:
    found = kube.get("service", service)
    return f"http://{found['spec']['clusterIP']}:{found['spec']['ports'][0]['port']}"


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    parser.add_argument("--vegeta", default=shutil.which("vegeta") or "vegeta")
    parser.add_argument("--namespace", default="fraudstack")
    parser.add_argument("--release", default="fraud", help="the Helm release's name")
    parser.add_argument("--prometheus", required=True, help="Prometheus's base URL")
    parser.add_argument("--ingest", help="ingestion base URL (default: its Service's ClusterIP)")
    parser.add_argument("--inference", help="inference base URL (default: its ClusterIP)")
    parser.add_argument("--api-key", default=os.environ.get("FRAUDSTACK_INGEST_API_KEY", ""))
    parser.add_argument("--fraudmodel", default="fraud", help="the FraudModel to roll out")
    parser.add_argument("--rate", type=int, default=40, help="requests/s during the rollouts")
    parser.add_argument(
        "--scale-rate",
        type=int,
        default=500,
        help="requests/s to scale out: more than the inference pods' CPU requests take at the "
        "HPA's target (500 for the single-node values: a request costs about 0.5 ms of CPU)",
    )
    parser.add_argument("--step-seconds", type=int, default=30, help="each rollout step's length")
    parser.add_argument("--scale-in-timeout", type=float, default=420.0)
    parser.add_argument(
        "--versions", default="", help="v1,v2 already in the registry (default: train two)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kube = Kube(args.kubectl, args.kubeconfig, args.namespace)
    options = Options(
        kube=kube,
        release=args.release,
        prometheus=args.prometheus.rstrip("/"),
        ingest=args.ingest,
        inference=args.inference,
        api_key=args.api_key,
        vegeta=args.vegeta,
        fraudmodel=args.fraudmodel,
        rate=args.rate,
        scale_rate=args.scale_rate,
        step_seconds=args.step_seconds,
        scale_in_timeout=args.scale_in_timeout,
        versions=[v for v in args.versions.split(",") if v],
        results=args.results,
    )
    options.ingest = options.ingest or service_address(kube, options.name("ingest"))
    options.inference = options.inference or service_address(kube, options.name("inference"))
    return options


def run(options: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cluster-flow-") as workdir:
        return run_in(options, Flow(Path(workdir)))


def run_in(options: Options, flow: Flow) -> dict[str, Any]:
    targets_up(options, flow)
    stream_a_day(options, flow)
    v1, v2 = train_versions(options, flow)
    features_served(options, flow)
    watcher = Watcher(options, flow)
    watcher.start()
    try:
        canary(options, flow, v1, v2)
        scale(options, flow)
        rollback(options, flow, v2)
        alerts_loaded(options, flow)
    finally:
        watcher.stopping.set()
        watcher.join()
    requests = decode(options, flow)
    flow.facts["sticky"] = sticky(requests, v1, v2)
    result: dict[str, Any] = {
        "machine": machine(),
        "options": {
            "rate": options.rate,
            "scale_rate": options.scale_rate,
            "step_seconds": options.step_seconds,
        },
        "versions": [v1, v2],
        "seconds": time.time() - flow.started,
        "vegeta": vegeta_report(options, flow),
        "timeline": timeline(requests, flow.samples),
        "events": flow.events,
        "phases": flow.phases,
        "facts": {k: v for k, v in flow.facts.items() if k not in ("targets_file", "customers")},
    }
    result["facts"]["customers"] = len(flow.facts["customers"])
    result["verdict"] = verdict(result)
    options.results.mkdir(parents=True, exist_ok=True)
    (options.results / "cluster_flow.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.results / "cluster_flow.md").write_text(markdown(result))
    plot(result, options.results / "cluster_flow.png")
    print(markdown(result), flush=True)
    say(f"results in {options.results}/cluster_flow.{{md,json,png}}")
    return result


def main() -> int:
    # a plain `kill` stops the attacks too (their `finally`), as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(parse_options())
    for problem in result["verdict"]:
        say(f"FAILED: {problem}")
    return 1 if result["verdict"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
