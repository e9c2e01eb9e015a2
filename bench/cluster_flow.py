"""The user's whole flow on a cluster where the chart is installed: canary, autoscaling, rollback.

Run it against any cluster where ``helm install`` put fraudstack with its ServiceMonitors beside a
Prometheus (kube-prometheus-stack's, or ``fraudstack devstack up --cluster``'s add-on); it needs
``kubectl`` and ``vegeta`` on the PATH (or ``--kubectl``/``--vegeta``), and the Services'
addresses reachable from where it runs (their ClusterIPs from a node, or ``kubectl port-forward``
addresses given as options)::

    python bench/cluster_flow.py --kubeconfig ~/.kube/config --namespace fraudstack \\
        --release fraud --prometheus http://127.0.0.1:9090 --api-key "$INGEST_API_KEY"

What it does, printing a line per event and a timeline row every few seconds:

1. waits until Prometheus lists the inference, ingestion and aggregation targets ``up``;
2. streams a simulated day (its clock compressed into the last 45 minutes: see
   :func:`stream_a_day`) through the ingestion Service, and waits until the
   inference Service answers for its customers (the features landed in Redis);
3. trains two model versions with Jobs made from the chart's training CronJob;
4. applies a FraudModel (stable v1, candidate v2, steps 10 % then 50 %, then promotion to 100 %)
   while vegeta attacks ``GET /predict/{customer}`` at a constant rate; the operator reads its
   gates from Prometheus and promotes v2, which is then made the stable version;
5. attacks at a rate one pod cannot take: the HPA scales the inference Deployment out; an eviction
   of one pod passes and a second one at once is refused by the PodDisruptionBudget; after the
   load drops, the HPA scales back in;
6. rolls out a candidate whose artifact fails its hash check (a copy of v2 with one byte
   changed, written by a pod made from the CronJob's): the operator rolls it back by itself,
   with the reason in the FraudModel's status and a Kubernetes Event;
7. checks that the PrometheusRule's alerts are loaded, and writes vegeta's report over the whole
   run: every request answered, and each customer answered by one version at a time (sticky:
   once moved to the candidate, never back).

Results: ``cluster_flow.{md,json,png}`` in ``--results`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from fraudstack.simulate import SimulationConfig, simulate  # noqa: E402
from machine import machine  # noqa: E402

RESULTS = BENCH / "results"
BIN_SECONDS = 10
ALERTS = ("FraudstackInferenceLatencyHigh", "FraudstackInferenceErrorRateHigh")
#: The day streamed before the rollout: enough customers that a 10 % step holds a few hundred.
DAY = SimulationConfig(customers=2_000, terminals=4_000, days=1, seed=11)
STREAM_MINUTES = 45


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the cluster, through kubectl ---------------------------------------------------------------


@dataclass
class Kube:
    kubectl: str
    kubeconfig: str | None
    namespace: str

    def run(self, *arguments: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [self.kubectl, *([f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else [])]
        argv += ["-n", self.namespace, *arguments]
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(arguments)}: {result.stderr.strip()}")
        return result.stdout if result.returncode == 0 else result.stderr

    def get(self, kind: str, name: str = "") -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.run("get", kind, *([name] if name else []), "-o", "json")
        )
        return found

    def apply(self, manifest: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps(manifest))


def wait(what: str, probe: Any, timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- options ------------------------------------------------------------------------------------


@dataclass
class Options:
    kube: Kube
    release: str
    prometheus: str
    ingest: str
    inference: str
    api_key: str
    vegeta: str
    fraudmodel: str
    rate: int
    scale_rate: int
    step_seconds: int
    scale_in_timeout: float
    versions: list[str]
    results: Path

    def name(self, component: str) -> str:
        return f"{self.release}-fraudstack-{component}"


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
    release = args.release
    return Options(
        kube=kube,
        release=release,
        prometheus=args.prometheus.rstrip("/"),
        ingest=args.ingest or service_address(kube, f"{release}-fraudstack-ingest"),
        inference=args.inference or service_address(kube, f"{release}-fraudstack-inference"),
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


# -- what is observed ---------------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    phase: str
    share: int
    step: int
    replicas: int
    ready: int
    desired: int


@dataclass
class Flow:
    """Everything the run observed, for the report."""

    workdir: Path  # vegeta's targets and results, removed after the report
    started: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    attacks: list[Path] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def event(self, message: str) -> None:
        self.events.append({"t": round(time.time() - self.started, 1), "event": message})
        say(message)


class Watcher(threading.Thread):
    """Samples the FraudModel, the inference Deployment and its HPA every two seconds."""

    def __init__(self, options: Options, flow: Flow) -> None:
        super().__init__(daemon=True)
        self.options, self.flow = options, flow
        self.stopping = threading.Event()

    def run(self) -> None:
        kube, last_phase = self.options.kube, None
        while not self.stopping.wait(2.0):
            try:
                model = kube.get("fraudmodel", self.options.fraudmodel).get("status", {})
            except (RuntimeError, json.JSONDecodeError):
                model = {}
            try:
                deployment = kube.get("deployment", self.options.name("inference"))["status"]
                hpa = kube.get("hpa", self.options.name("inference")).get("status", {})
            except (RuntimeError, json.JSONDecodeError, KeyError):
                continue
            sample = Sample(
                at=time.time() - self.flow.started,
                phase=str(model.get("phase", "")),
                share=int(model.get("candidateShare") or 0),
                step=int(model.get("currentStep") or 0),
                replicas=int(deployment.get("replicas", 0)),
                ready=int(deployment.get("readyReplicas", 0)),
                desired=int(hpa.get("desiredReplicas", 0)),
            )
            self.flow.samples.append(sample)
            if len(self.flow.samples) % 5 == 1:
                say(
                    f"  {sample.at:6.0f} s  FraudModel {sample.phase or '-'} step {sample.step} "
                    f"share {sample.share} %  inference pods {sample.ready}/{sample.replicas} "
                    f"Ready, HPA wants {sample.desired}"
                )
            if sample.phase and sample.phase != last_phase:
                # what `kubectl get fraudmodels` prints at that moment, as the user sees it
                shown = kube.run("get", "fraudmodels", check=False).strip()
                self.flow.phases.append({"t": round(sample.at, 1), "phase": sample.phase})
                self.flow.event(f"FraudModel phase {sample.phase}:\n{shown}")
                last_phase = sample.phase


@contextmanager
def attack(options: Options, flow: Flow, label: str, rate: int) -> Iterator[None]:
    """vegeta at a constant ``rate`` against ``GET /predict/{customer}`` while the block runs."""
    results = flow.workdir / f"vegeta-{label}.bin"
    targets = flow.facts["targets_file"]
    argv = [options.vegeta, "attack", f"-targets={targets}", f"-rate={rate}/s", "-duration=0"]
    argv += ["-timeout=5s", f"-name={label}", f"-output={results}"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE)
    flow.event(f"vegeta: {label} at {rate} requests/s")
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # vegeta stops and writes what it has
        process.wait(timeout=30)
        flow.attacks.append(results)


# -- the steps ----------------------------------------------------------------------------------


def targets_up(options: Options, flow: Flow) -> None:
    wanted = {options.name(c) for c in ("inference", "ingest", "aggregate")}
    query = f'up{{namespace="{options.kube.namespace}"}}'

    def all_up() -> dict[str, int] | None:
        response = httpx.get(f"{options.prometheus}/api/v1/query", params={"query": query})
        up: dict[str, list[str]] = defaultdict(list)
        for series in response.json()["data"]["result"]:
            up[series["metric"].get("service", "")].append(series["value"][1])
        if all(up[s] and set(up[s]) == {"1"} for s in wanted):
            return {s: len(up[s]) for s in sorted(wanted)}
        return None

    found = wait("Prometheus to list every target up", all_up, 240)
    flow.facts["targets"] = found
    flow.event(f"Prometheus scrapes {found} targets, all up")


def stream_a_day(options: Options, flow: Flow) -> None:
    """The simulated day posted to the ingestion Service, in time order, its clock compressed
    into the last ``STREAM_MINUTES``: the aggregators send an event more than their allowed
    lateness (an hour by default) behind their partition's newest one to the dead-letter topic,
    so a day's events stamped with their real times of yesterday would be refused as late."""
    day = simulate(DAY).to_pylist()
    first, last = day[0]["ts"], day[-1]["ts"]
    now = int(time.time() * 1000)
    span = STREAM_MINUTES * 60_000
    run = int(time.time())
    events = [
        {
            "txn_id": f"flow-{run}-{t['txn_id']}",
            "ts": now - span + (t["ts"] - first) * span // max(1, last - first),
            "customer_id": t["customer_id"],
            "terminal_id": t["terminal_id"],
            "amount": t["amount"],
        }
        for t in day
    ]
    with httpx.Client(base_url=options.ingest, headers={"X-API-Key": options.api_key}) as client:
        for start in range(0, len(events), 1_000):
            response = client.post("/v1/transactions", json=events[start : start + 1_000])
            if response.status_code != 202:
                raise RuntimeError(f"ingestion answered {response.status_code}: {response.text}")
    customers = sorted({t["customer_id"] for t in day}, key=int)
    flow.event(f"streamed {len(events)} transactions of {len(customers)} customers")
    sample = customers[:: max(1, len(customers) // 50)]
    statuses: Counter[int] = Counter()

    def answered() -> bool:
        statuses.clear()
        with httpx.Client(base_url=options.inference, timeout=5) as client:
            statuses.update(client.get(f"/predict/{c}").status_code for c in sample)
        return set(statuses) == {200}

    try:
        wait("the inference Service to answer for the streamed customers", answered, 180)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; GET /predict answered {dict(statuses)}") from None
    targets = flow.workdir / "targets.txt"
    targets.write_text("".join(f"GET {options.inference}/predict/{c}\n" for c in customers))
    flow.facts.update(targets_file=str(targets), customers=len(customers))
    flow.event("the features are in Redis: GET /predict answers for them")


def train_versions(options: Options, flow: Flow) -> list[str]:
    """Two Jobs from the training CronJob, one after the other; the versions they published."""
    if len(options.versions) >= 2:
        return options.versions[:2]
    versions = []
    for n in (1, 2):
        job = f"{options.release}-flow-train-{int(time.time())}-{n}"
        options.kube.run("create", "job", f"--from=cronjob/{options.name('train')}", job)
        finished = wait(f"Job {job}", lambda job=job: job_outcome(options.kube, job), 900)
        log = options.kube.run("logs", f"job/{job}")
        if finished != "Complete":
            raise RuntimeError(f"training Job {job} failed:\n{log[-3000:]}")
        published = [line.split()[1] for line in log.splitlines() if line.startswith("published ")]
        versions.append(published[-1])
        flow.event(f"Job {job} published model {published[-1]}")
    return versions


def job_outcome(kube: Kube, job: str) -> str | None:
    status = kube.get("job", job).get("status", {})
    return "Complete" if status.get("succeeded") else "Failed" if status.get("failed") else None


def fraudmodel(options: Options, stable: str, candidate: str | None, steps: list[int]) -> None:
    spec: dict[str, Any] = {"stableVersion": stable}
    if candidate:
        spec["candidateVersion"] = candidate
    if steps:
        spec["rollout"] = {
            "steps": [{"share": s, "durationSeconds": options.step_seconds} for s in steps]
        }
        spec["gates"] = {
            # two versions on the same pods: a p99 three times stable's is a real regression,
            # less is the noise of a small shared node
            "maxLatencyP99Ratio": 3.0,
            "maxErrorRateDelta": 0.01,
            # a 10 % step's few hundred customers against the rest: sampling alone moves the
            # distance between the two score distributions by up to about 0.1
            "maxScoreDrift": 0.25,
            "minRequests": 20,
        }
    manifest = {
        "apiVersion": "fraudstack.io/v1alpha1",
        "kind": "FraudModel",
        "metadata": {"name": options.fraudmodel, "namespace": options.kube.namespace},
        "spec": spec,
    }
    # applied server-side, the fields left out (an old candidate, its rollout) are removed
    options.kube.run(
        "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(manifest)
    )


def phase_is(options: Options, wanted: str) -> dict[str, Any] | None:
    """The FraudModel's status once the operator has answered its current spec with ``wanted``."""
    found = options.kube.get("fraudmodel", options.fraudmodel)
    status: dict[str, Any] = found.get("status", {})
    current = status.get("observedGeneration") == found["metadata"]["generation"]
    return status if current and status.get("phase") == wanted else None


def canary(options: Options, flow: Flow, stable: str, candidate: str) -> None:
    with attack(options, flow, "canary", options.rate):
        fraudmodel(options, stable, None, [])
        wait(f"{stable} serving", lambda: phase_is(options, "Serving"), 120)
        time.sleep(10)  # both versions' metrics start before the candidate gets any traffic
        fraudmodel(options, stable, candidate, [10, 50])
        flow.event(f"kubectl apply FraudModel: {stable} -> {candidate}, steps 10 % and 50 %")
        status = wait("the rollout to promote", lambda: phase_is(options, "Promoted"), 600)
        flow.facts["promoted"] = status["rollout"]
        flow.event(f"promoted: {status['rollout']['message']}")
        time.sleep(10)  # the candidate answers everyone, still as the candidate
        fraudmodel(options, candidate, None, [])
        wait(f"{candidate} as stable", lambda: phase_is(options, "Serving"), 120)
        flow.event(f"{candidate} made the stable version")
        time.sleep(10)


def evict(options: Options, pod: str) -> tuple[int, str]:
    """The Eviction API, as ``kubectl drain`` uses it: (HTTP-like status, what the API said)."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": options.kube.namespace},
    }
    path = f"/api/v1/namespaces/{options.kube.namespace}/pods/{pod}/eviction"
    said = options.kube.run(
        "create", "--raw", path, "-f", "-", stdin=json.dumps(eviction), check=False
    )
    refused = "disruption budget" in said or "TooManyRequests" in said or "429" in said
    return (429 if refused else 201), said.strip().splitlines()[-1] if said.strip() else ""


def scale(options: Options, flow: Flow) -> None:
    hpa = options.kube.get("hpa", options.name("inference"))["spec"]
    least = int(hpa.get("minReplicas", 1))
    with attack(options, flow, "scale-out", options.scale_rate):
        started = time.time()
        replicas = wait(
            "the HPA to scale out",
            lambda: ready_replicas(options) if ready_replicas(options) > least else None,
            420,
        )
        flow.facts["scale_out_seconds"] = round(time.time() - started)
        flow.event(f"the HPA scaled inference out to {replicas} Ready pods")
        # a drain waits for the budget: every pod the HPA asked for Ready, one disruption allowed
        wait("a disruption allowed", lambda: settled(options) and disruptions_allowed(options), 300)
        flow.facts["pdb"] = drain_two(options, flow)
        wait("the evicted pod replaced", lambda: ready_replicas(options) >= replicas, 240)
    with attack(options, flow, "scale-in", options.rate):
        started = time.time()
        wait(
            "the HPA to scale back in",
            lambda: deployment_replicas(options) == least and ready_replicas(options) == least,
            options.scale_in_timeout,
        )
        flow.facts["scale_in_seconds"] = round(time.time() - started)
        flow.event(f"the load dropped: the HPA scaled back in to {least} pods")


def ready_replicas(options: Options) -> int:
    return int(
        options.kube.get("deployment", options.name("inference"))["status"].get("readyReplicas", 0)
    )


def settled(options: Options) -> bool:
    status = options.kube.get("deployment", options.name("inference"))["status"]
    desired = options.kube.get("hpa", options.name("inference"))["status"]["desiredReplicas"]
    return bool(status.get("readyReplicas", 0) == status.get("replicas", 0) == desired)


def disruptions_allowed(options: Options) -> int:
    budget = options.kube.get("pdb", options.name("inference"))
    return int(budget.get("status", {}).get("disruptionsAllowed", 0))


def deployment_replicas(options: Options) -> int:
    return int(
        options.kube.get("deployment", options.name("inference"))["status"].get("replicas", 0)
    )


def drain_two(options: Options, flow: Flow) -> dict[str, Any]:
    """Evict one inference pod, then at once another: the budget lets one go, not two."""
    selector = f"app.kubernetes.io/instance={options.release},app.kubernetes.io/component=inference"
    listed = json.loads(options.kube.run("get", "pods", "-l", selector, "-o", "json"))
    pods = sorted(
        p["metadata"]["name"] for p in listed["items"] if not p["metadata"].get("deletionTimestamp")
    )
    first, said_first = evict(options, pods[0])
    second, said_second = evict(options, pods[1])
    result: dict[str, Any] = {
        "selector": selector,
        "first": {"pod": pods[0], "status": first},
        "second": {"pod": pods[1], "status": second, "said": said_second},
    }
    flow.event(
        f"eviction of {pods[0]}: {'allowed' if first == 201 else said_first}; "
        f"of {pods[1]} right after: "
        f"{'refused by the PodDisruptionBudget' if second == 429 else 'allowed'}"
    )
    return result


def corrupt_copy(options: Options, flow: Flow, version: str) -> str:
    """A copy of ``version`` with one byte of its artifact changed, written into the registry by
    a pod made from the training CronJob's (its image, volumes and settings)."""
    broken = f"{version}-corrupt"
    script = (
        "import json, os, shutil\n"
        "from fraudstack.adapters.registry import ModelRegistry\n"
        "registry = ModelRegistry(os.environ['FRAUDSTACK_MODEL_REGISTRY_URI'])\n"
        f"source, target = registry.path({version!r}), registry.path({broken!r})\n"
        "if not target.exists():\n"
        "    staging = target.with_name('.staging-' + target.name)\n"
        "    shutil.rmtree(staging, ignore_errors=True)\n"
        "    shutil.copytree(source, staging)\n"
        "    name = sorted(json.loads((staging / 'metadata.json').read_text())['files'])[0]\n"
        "    data = bytearray((staging / name).read_bytes())\n"
        "    data[len(data) // 2] ^= 0xFF\n"
        "    (staging / name).write_bytes(bytes(data))\n"
        "    staging.rename(target)\n"
        "print('corrupted', target)\n"
    )
    cronjob = options.kube.get("cronjob", options.name("train"))
    template = cronjob["spec"]["jobTemplate"]["spec"]
    container = template["template"]["spec"]["containers"][0]
    container["command"], container["args"] = ["python", "-c", script], []
    job = f"{options.release}-flow-corrupt-{int(time.time())}"
    options.kube.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, "namespace": options.kube.namespace},
            "spec": {**template, "backoffLimit": 0},
        }
    )
    outcome = wait(f"Job {job}", lambda: job_outcome(options.kube, job), 300)
    if outcome != "Complete":
        raise RuntimeError(f"{job} failed:\n{options.kube.run('logs', f'job/{job}', check=False)}")
    flow.event(f"{broken}: a copy of {version} whose artifact fails its hash check")
    return broken


def rollback(options: Options, flow: Flow, stable: str) -> None:
    broken = corrupt_copy(options, flow, stable)
    with attack(options, flow, "rollback", options.rate):
        fraudmodel(options, stable, broken, [10, 50])
        flow.event(f"kubectl apply FraudModel: {stable} -> {broken}")
        status = wait("the operator to roll back", lambda: phase_is(options, "RolledBack"), 300)
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        events = options.kube.get("events", "")["items"]
        posted = [
            {"reason": e["reason"], "type": e["type"], "message": e["message"]}
            for e in events
            if e["involvedObject"].get("name") == options.fraudmodel
            and e["reason"] in ("RolledBack", degraded["reason"])
            and broken in e.get("message", "")
        ]
        flow.facts["rollback"] = {
            "candidate": broken,
            "reason": degraded["reason"],
            "message": status["rollout"]["message"],
            "served": status.get("stableVersion"),
            "events": posted,
        }
        flow.event(
            f"rolled back by the operator: {degraded['reason']}: {status['rollout']['message']}"
        )
        time.sleep(10)  # the stable keeps answering everyone
    fraudmodel(options, stable, None, [])


def alerts_loaded(options: Options, flow: Flow) -> None:
    groups = httpx.get(f"{options.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = sorted({rule["name"] for group in groups for rule in group["rules"]})
    flow.facts["alerts"] = [name for name in ALERTS if name in names]
    flow.event(f"alerts loaded from the PrometheusRule: {', '.join(flow.facts['alerts'])}")


# -- vegeta's results, the timeline and the report -----------------------------------------------


def vegeta_over_results(options: Options, flow: Flow, *command: str) -> str:
    """``vegeta <command>`` over the results of every attack of the run: its output."""
    argv = [options.vegeta, *command, *map(str, flow.attacks)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def decode(options: Options, flow: Flow) -> list[dict[str, Any]]:
    """Every request of every attack: when (seconds into the run), latency, code, version."""
    encoded = vegeta_over_results(options, flow, "encode", "-to=json")
    requests = []
    for line in encoded.splitlines():
        result = json.loads(line)
        version = customer = None
        if result["code"] == 200:
            body = json.loads(base64.b64decode(result["body"]))
            version, customer = body["model_version"], body["user_id"]
        requests.append(
            {
                "t": epoch(result["timestamp"]) - flow.started,
                "ms": result["latency"] / 1e6,
                "code": result["code"],
                "error": result["error"],
                "version": version,
                "customer": customer,
                "attack": result["attack"],
            }
        )
    return requests


def epoch(stamp: str) -> float:
    """vegeta's RFC 3339 time with nanoseconds (which ``fromisoformat`` does not take)."""
    whole, _, rest = stamp.replace("Z", "+00:00").partition(".")
    digits = "".join(itertools.takewhile(str.isdigit, rest))
    zone = rest[len(digits) :] if rest else ""
    return datetime.fromisoformat(whole + zone).timestamp() + float(f"0.{digits or 0}")


def sticky(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Each customer answered by one version at a time during the canary: the versions a
    customer meets come in the order the rollout brought them in (the one serving before the
    FraudModel was applied, then stable, then the candidate), never back to an earlier one."""
    canary = sorted((r for r in requests if r["version"] and r["attack"] == "canary"), key=_t)
    order = list(dict.fromkeys(r["version"] for r in canary))  # by first answer
    seen: dict[str, list[int]] = defaultdict(list)
    for request in canary:
        versions, rank = seen[request["customer"]], order.index(request["version"])
        if not versions or versions[-1] != rank:
            versions.append(rank)
    back = sorted(c for c, ranks in seen.items() if ranks != sorted(set(ranks)))
    moved = sum(len(ranks) > 1 for ranks in seen.values())
    return {"customers": len(seen), "versions": order, "moved": moved, "back": back}


def _t(request: dict[str, Any]) -> float:
    return float(request["t"])


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


def vegeta_report(options: Options, flow: Flow) -> dict[str, Any]:
    data = json.loads(vegeta_over_results(options, flow, "report", "-type=json"))
    text = vegeta_over_results(options, flow, "report")
    return {
        "requests": data["requests"],
        "success": data["success"],
        "status_codes": data.get("status_codes", {}),
        "errors": data.get("errors", []),
        "p50_ms": round(data["latencies"]["50th"] / 1e6, 2),
        "p99_ms": round(data["latencies"]["99th"] / 1e6, 2),
        "max_ms": round(data["latencies"]["max"] / 1e6, 2),
        "text": text,
    }


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


def run(options: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cluster-flow-") as workdir:
        return run_in(options, Flow(Path(workdir)))


def run_in(options: Options, flow: Flow) -> dict[str, Any]:
    targets_up(options, flow)
    stream_a_day(options, flow)
    v1, v2 = train_versions(options, flow)
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
    flow.facts["sticky"] = sticky(requests)
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
        "facts": {k: v for k, v in flow.facts.items() if k != "targets_file"},
    }
    options.results.mkdir(parents=True, exist_ok=True)
    (options.results / "cluster_flow.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.results / "cluster_flow.md").write_text(markdown(result))
    plot(result, options.results / "cluster_flow.png")
    print(markdown(result), flush=True)
    say(f"results in {options.results}/cluster_flow.{{md,json,png}}")
    return result


def main() -> int:
    result = run(parse_options())
    return 0 if result["vegeta"]["success"] == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
