"""The steps of :mod:`cluster_flow`, in the order it runs them, and vegeta's results read back."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections import Counter, defaultdict
from typing import Any

import httpx

from cluster_flow_parts import Flow, Kube, Options, attack, wait
from cluster_flow_report import ALERTS, epoch
from fraudstack.simulate import SimulationConfig, simulate

#: The day streamed before the rollout: enough customers that a 10 % step holds a few hundred.
DAY = SimulationConfig(customers=2_000, terminals=4_000, days=1, seed=11)
STREAM_MINUTES = 45


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
    targets = flow.workdir / "targets.txt"
    targets.write_text("".join(f"GET {options.inference}/predict/{c}\n" for c in customers))
    flow.facts.update(targets_file=str(targets), customers=customers)
    flow.event(f"streamed {len(events)} transactions of {len(customers)} customers")


def features_served(options: Options, flow: Flow) -> None:
    """The inference Service answers for the streamed customers (a fresh release's inference
    pods turn Ready once the first model is published)."""
    customers = flow.facts["customers"]
    sample = customers[:: max(1, len(customers) // 50)]
    statuses: Counter[int] = Counter()

    def answered() -> bool:
        statuses.clear()
        with httpx.Client(base_url=options.inference, timeout=5) as client:
            statuses.update(client.get(f"/predict/{c}").status_code for c in sample)
        return set(statuses) == {200}

    try:
        wait("the inference Service to answer for the streamed customers", answered, 300)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; GET /predict answered {dict(statuses)}") from None
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


def apply_fraudmodel(
    options: Options, stable: str, candidate: str | None, steps: list[int]
) -> None:
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
        apply_fraudmodel(options, stable, None, [])
        wait(f"{stable} serving", lambda: phase_is(options, "Serving"), 120)
        time.sleep(10)  # stable's latency and score series exist before the rollout
        apply_fraudmodel(options, stable, candidate, [10, 50])
        flow.event(f"kubectl apply FraudModel: {stable} -> {candidate}, steps 10 % and 50 %")
        status = wait("the rollout to promote", lambda: phase_is(options, "Promoted"), 600)
        flow.facts["promoted"] = status["rollout"]
        flow.event(f"promoted: {status['rollout']['message']}")
        time.sleep(10)  # the candidate answers everyone, still as the candidate
        apply_fraudmodel(options, candidate, None, [])
        wait(f"{candidate} as stable", lambda: phase_is(options, "Serving"), 120)
        flow.event(f"{candidate} made the stable version")
        time.sleep(10)


def evict(options: Options, pod: str) -> tuple[int, str]:
    """The Eviction API, as ``kubectl drain`` uses it: 201 (evicted) or 429 (the disruption
    budget refused), with what the API server said; any other answer is an error."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": options.kube.namespace},
    }
    path = f"/api/v1/namespaces/{options.kube.namespace}/pods/{pod}/eviction"
    code, said = options.kube.attempt(
        "create", "--raw", path, "-f", "-", stdin=json.dumps(eviction)
    )
    said = said.strip()
    if code == 0:
        return 201, said
    if "(TooManyRequests)" in said:
        return 429, said
    raise RuntimeError(f"evicting {pod}: {said}")


def scale(options: Options, flow: Flow) -> None:
    hpa = options.kube.get("hpa", options.name("inference"))["spec"]
    least = int(hpa.get("minReplicas", 1))

    def scaled_out() -> int | None:
        pods, ready = inference_pods(options)
        return pods if ready > least else None

    with attack(options, flow, "scale-out", options.scale_rate):
        started = time.time()
        replicas = wait("the HPA to scale out", scaled_out, 420)
        flow.facts["scale_out_seconds"] = round(time.time() - started)
        flow.event(f"the HPA scaled inference out to {replicas} pods")
        # a drain waits for the budget: every pod the HPA asked for Ready, one disruption allowed
        wait("a disruption allowed", lambda: settled(options) and disruptions_allowed(options), 300)
        flow.facts["pdb"] = drain_two(options, flow)
        wait("the evicted pod replaced", lambda: inference_pods(options)[1] >= replicas, 240)
    with attack(options, flow, "scale-in", options.rate):
        started = time.time()
        wait(
            "the HPA to scale back in",
            lambda: inference_pods(options) == (least, least),
            options.scale_in_timeout,
        )
        flow.facts["scale_in_seconds"] = round(time.time() - started)
        flow.event(f"the load dropped: the HPA scaled back in to {least} pods")


def inference_pods(options: Options) -> tuple[int, int]:
    """The inference Deployment's pods: (all of them, those Ready)."""
    status = options.kube.get("deployment", options.name("inference"))["status"]
    return int(status.get("replicas", 0)), int(status.get("readyReplicas", 0))


def settled(options: Options) -> bool:
    """Every pod the HPA asks for is there and Ready."""
    desired = options.kube.get("hpa", options.name("inference"))["status"]["desiredReplicas"]
    return inference_pods(options) == (desired, desired)


def disruptions_allowed(options: Options) -> int:
    budget = options.kube.get("pdb", options.name("inference"))
    return int(budget.get("status", {}).get("disruptionsAllowed", 0))


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
    # named to sort before every published version ("v..."): never the registry's latest, which
    # a new inference pod of a release without a FraudModel would load
    broken = f"corrupt-{version}"
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
        apply_fraudmodel(options, stable, broken, [10, 50])
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
    apply_fraudmodel(options, stable, None, [])


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
