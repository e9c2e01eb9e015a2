"""The chart as a user installs it, on the real single-node cluster of ``devstack up --cluster``.

The images come from ``images/build.sh`` (what ``make images`` runs), pushed to the cluster's
registry; ``helm install`` takes the chart unchanged but for the registry, a Redis password
Secret made beforehand and the small-node requests of ``ci/single-node-values.yaml``. The
claim binds to the cluster's default StorageClass. Then, as a user would: simulated history
and chargebacks into the bundled Kafka, the snapshot pods write the offline store, a training
Job made from the CronJob publishes a model, the inference pods load it and turn Ready, and
transactions posted to the ingestion Service come back as the features ``GET /predict`` scores.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from fraudstack.adapters.offline_store import EVENTS, LABELS, OfflineStore
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.adapters.registry import ModelRegistry
from fraudstack.devstack.cluster import monitoring
from fraudstack.devstack.cluster.addons import STORAGE_CLASS
from fraudstack.devstack.cluster.registry import REGISTRY_ADDRESS
from fraudstack.errors import ModelIntegrityError
from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.scoring import load_scorer
from fraudstack.serve.lookup import FeatureLookup
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from support import dashboard
from support.cluster import Cluster
from support.kube import CHART, ROOT, Helm, vegeta_binary
from support.waiting import eventually

pytestmark = pytest.mark.cluster

NAMESPACE = "fraudstack"
RELEASE = "fraud"
REGISTRY = f"{REGISTRY_ADDRESS}/fraudstack"
SMALL_NODE = CHART / "ci" / "single-node-values.yaml"
REDIS_SECRET = "fraud-redis-auth"
REDIS_PASSWORD = "chart-test-redis-password"
API_KEY = "chart-test-api-key"
#: History for training: small, and deterministic (the simulation is seeded), so the test knows
#: how many transactions and labels the offline store must end up with.
HISTORY = SimulationConfig(customers=300, terminals=600, days=40, seed=3)
READY_TIMEOUT = 420.0


def name(component: str) -> str:
    return f"{RELEASE}-fraudstack-{component}"


@pytest.fixture(scope="session")
def chart_images(cluster: Cluster) -> float:
    """Every image the chart needs, built by images/build.sh and pushed to the cluster."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "images" / "build.sh")],
        env={**os.environ, "REGISTRY": REGISTRY},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"images/build.sh failed:\n{result.stderr[-4000:]}"
    print(f"\nimages built and pushed to {REGISTRY} in {seconds:.0f} s")
    return seconds


@pytest.fixture(scope="module")
def cluster_helm(
    cluster: Cluster, helm_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Helm:
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-cluster"), cluster.kubeconfig)


def pods(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    query = f"?labelSelector={selector}" if selector else ""
    listing = cluster.get(f"/api/v1/namespaces/{namespace}/pods{query}")
    return list((listing or {}).get("items", []))


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def component(pod: dict[str, Any]) -> str:
    return str(pod["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def waiting_reasons(pod: dict[str, Any]) -> set[str]:
    status = pod.get("status", {})
    statuses = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
    return {s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s.get("state", {})}


def waits_for_model(pod: dict[str, Any]) -> bool:
    """Not Ready, its init container running: ``serve --check --wait-for-model``."""
    statuses = pod.get("status", {}).get("initContainerStatuses", [])
    return any(s["name"] == "inference-wait" and "running" in s.get("state", {}) for s in statuses)


def describe_pods(cluster: Cluster, namespace: str) -> str:
    listing = cluster.run("get", "pods", "-n", namespace, "-o", "wide").stdout
    events = cluster.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp").stdout
    return f"{listing}\n{events[-6000:]}"


def service_url(cluster: Cluster, component_name: str) -> str:
    service = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/services/{name(component_name)}")
    assert service is not None, f"no Service {name(component_name)}"
    port = service["spec"]["ports"][0]["port"]
    return f"http://{service['spec']['clusterIP']}:{port}"


@dataclass
class Release:
    install_seconds: float
    data_root: Path  # the claim's volume, as the host sees it
    model_version: str = ""
    posted: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def release(cluster: Cluster, chart_images: float, cluster_helm: Helm) -> Iterator[Release]:
    """``helm install``, then every pod Ready but inference (no model yet): the time it took."""
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": REDIS_SECRET, "namespace": NAMESPACE},
            "stringData": {"redis-password": REDIS_PASSWORD},
        },
    )
    started = time.monotonic()
    cluster_helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        str(SMALL_NODE),
        "--set",
        f"image.registry={REGISTRY}",
        "--set",
        f"redis.auth.existingSecret={REDIS_SECRET}",
        "--set",
        f"ingest.auth.apiKey={API_KEY}",
        # the offline store gets what the snapshot pods read within seconds, not a minute
        "--set-string",
        "config.extraEnv.FRAUDSTACK_SNAPSHOT_FLUSH_SECONDS=5",
        # monitoring as with kube-prometheus-stack: its label on the ServiceMonitors and the
        # PrometheusRule, its Prometheus for the operator's gates
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.interval=10s",
        "--set",
        f"metrics.serviceMonitor.labels.release={monitoring.RELEASE_LABELS['release']}",
        "--set",
        f"operator.prometheusUrl={monitoring.PROMETHEUS_URL}",
        # the scenario's autoscaling fits a 2-CPU node and minutes, not the production values'
        # ten pods and five-minute scale-down window
        "--set",
        "inference.autoscaling.maxReplicas=4",
        "--set-json",
        "inference.autoscaling.behavior.scaleDown="
        + json.dumps(
            {
                "stabilizationWindowSeconds": 30,
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                "selectPolicy": "Min",
            }
        ),
    )

    def all_but_inference_ready() -> list[dict[str, Any]] | None:
        current = pods(cluster, NAMESPACE)
        serving = [p for p in current if component(p) != "inference"]
        # two inference pods (the HPA's minimum) exist, their init container waiting for a model
        inference = [p for p in current if component(p) == "inference" and waits_for_model(p)]
        if len(inference) >= 2 and serving and all(is_ready(p) for p in serving):
            return current
        return None

    try:
        ready = eventually(all_but_inference_ready, "every pod Ready", READY_TIMEOUT, interval=1)
    except AssertionError as exc:
        raise AssertionError(f"pods never Ready:\n{describe_pods(cluster, NAMESPACE)}") from exc
    seconds = time.monotonic() - started
    print(f"\nhelm install -> every pod Ready (inference waiting for a model): {seconds:.0f} s")
    assert {component(p) for p in ready} >= {
        "ingest",
        "aggregate",
        "snapshot",
        "inference",
        "operator",
        "redis",
        "kafka",
    }
    claim = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{name('data')}")
    assert claim is not None and claim["status"]["phase"] == "Bound"
    volume = cluster.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    assert volume is not None
    yield Release(seconds, Path(volume["spec"]["hostPath"]["path"]))
    cluster_helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
    cluster.run("delete", "namespace", NAMESPACE, "--wait=false")


def run_pod(cluster: Cluster, pod_name: str, image: str, args: list[str], timeout: float) -> str:
    """Run a one-off pod with the chart's settings (ConfigMap) and security context; its log."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": NAMESPACE},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "args": args,
                        "envFrom": [{"configMapRef": {"name": f"{RELEASE}-fraudstack-config"}}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
    )

    def finished() -> str | None:
        pod = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}")
        phase = (pod or {}).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = eventually(finished, f"pod {pod_name} to finish", timeout, interval=1)
    log = cluster.run("logs", "-n", NAMESPACE, pod_name).stdout
    assert phase == "Succeeded", f"{pod_name} {phase}:\n{log[-3000:]}"
    return log


def rows(store: OfflineStore, dataset: str) -> int:
    return sum(pq.read_metadata(path).num_rows for path in store.files(dataset))


@pytest.fixture(scope="module")
def trained(cluster: Cluster, release: Release) -> Release:
    """History into Kafka, the offline store filled, a training Job run, inference Ready."""
    transactions = simulate(HISTORY)
    labels = make_labels(transactions, seed=HISTORY.seed)
    image = f"{REGISTRY}/fraudstack-ingest:0.1.0"
    args = ["simulate", "--customers", str(HISTORY.customers), "--terminals"]
    args += [str(HISTORY.terminals), "--days", str(HISTORY.days), "--seed", str(HISTORY.seed)]
    log = run_pod(cluster, "simulate", image, [*args, "--to-kafka", "--no-progress"], 600)
    assert f"produced {transactions.num_rows} transactions and {labels.num_rows} labels" in log

    store = OfflineStore(str(release.data_root / "offline"))

    def filled() -> tuple[int, int] | None:
        counts = (rows(store, EVENTS), rows(store, LABELS))
        return counts if counts >= (transactions.num_rows, labels.num_rows) else None

    eventually(filled, "the snapshot pods to write the offline store", 300, interval=2)

    job = f"{RELEASE}-train-test"
    cluster.kubectl("create", "job", "-n", NAMESPACE, f"--from=cronjob/{name('train')}", job)

    def job_done() -> str | None:
        status = (cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job}") or {}).get(
            "status", {}
        )
        return "Complete" if status.get("succeeded") else "Failed" if status.get("failed") else None

    outcome = eventually(job_done, "the training Job", 900, interval=2)
    train_log = cluster.run("logs", "-n", NAMESPACE, f"job/{job}").stdout
    assert outcome == "Complete", f"training failed:\n{train_log[-4000:]}"
    registry = ModelRegistry(release.data_root / "models")  # config.modelRegistryUri
    versions = registry.versions()
    assert len(versions) == 1, versions
    assert (registry.path(versions[0]) / "metadata.json").is_file()
    release.model_version = versions[0]
    assert release.model_version in train_log

    def inference_ready() -> list[dict[str, Any]] | None:
        current = pods(cluster, NAMESPACE, "app.kubernetes.io/component=inference")
        return current if len(current) >= 2 and all(is_ready(p) for p in current) else None

    try:
        eventually(inference_ready, "inference pods Ready with the model", 180, interval=1)
    except AssertionError as exc:
        raise AssertionError(
            f"inference never Ready:\n{describe_pods(cluster, NAMESPACE)}"
        ) from exc
    return release


def test_helm_install_turns_every_pod_ready(cluster: Cluster, release: Release) -> None:
    assert release.install_seconds < READY_TIMEOUT
    # the claim, which names no class, got the cluster's default one and its volume
    claim = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{name('data')}")
    assert claim is not None and claim["spec"]["storageClassName"] == STORAGE_CLASS
    assert release.data_root.is_dir()


def test_a_training_job_from_the_cronjob_publishes_a_model_inference_loads(
    trained: Release,
) -> None:
    registry = ModelRegistry(trained.data_root / "models")
    metadata = registry.verify(trained.model_version)
    assert metadata.feature_names == list(FEATURE_NAMES)


def post_transactions(cluster: Cluster, trained: Release) -> list[dict[str, Any]]:
    """Five transactions of a new customer, the last one now, through the ingestion Service."""
    now = int(time.time() * 1000)
    customer = f"chart-customer-{now}"
    posted = [
        {
            "txn_id": f"{customer}-{i}",
            "ts": now - (4 - i) * 60_000 * 20,  # every 20 minutes; the last one now
            "customer_id": customer,
            "terminal_id": "chart-terminal-1",
            "amount": amount,
        }
        for i, amount in enumerate([12.5, 40.0, 7.25, 99.99, 20.0])
    ]
    response = httpx.post(
        f"{service_url(cluster, 'ingest')}/v1/transactions",
        json=posted,
        headers={"X-API-Key": API_KEY},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(posted)}
    return posted


def features_from_redis(cluster: Cluster, customer: str) -> dict[str, float]:
    url = f"redis://:{REDIS_PASSWORD}@{service_url(cluster, 'redis').removeprefix('http://')}/0"

    async def read() -> dict[str, float]:
        link = RedisLink(url, timeout=2.0, connect_timeout=2.0)
        try:
            _, scored = await FeatureLookup(link).newest(customer)
        finally:
            await link.close()
        return scored.features

    return asyncio.run(read())


def predict(base: str, customer: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{base}/predict/{customer}", timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


@pytest.fixture(scope="module")
def port_forward(cluster: Cluster, trained: Release) -> Iterator[str]:
    """``kubectl port-forward svc/<inference>`` as a user would; its local address."""
    process = subprocess.Popen(
        [
            cluster.info["kubectl"],
            f"--kubeconfig={cluster.kubeconfig}",
            "port-forward",
            "-n",
            NAMESPACE,
            f"svc/{name('inference')}",
            ":8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        assert match, f"port-forward said {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_predict_answers_with_the_features_of_the_posted_transactions(
    cluster: Cluster, trained: Release, port_forward: str
) -> None:
    posted = post_transactions(cluster, trained)
    customer = posted[0]["customer_id"]
    inference = service_url(cluster, "inference")
    answer = eventually(
        lambda: predict(inference, customer), "GET /predict through the Service", 60, interval=1
    )
    assert answer["model_version"] == trained.model_version
    assert answer["user_id"] == customer

    # what the aggregation pods stored, read from the host through the redis Service
    features = features_from_redis(cluster, customer)
    amounts = [t["amount"] for t in posted]
    assert features["amount"] == 20.0
    assert features["customer_nb_tx_1d"] == 5
    assert features["customer_avg_amount_1d"] == pytest.approx(sum(amounts) / 5)
    assert features["customer_nb_tx_10m"] == 1
    assert features["customer_amount_sum_10m"] == 20.0
    assert features["customer_nb_tx_1h"] == 3  # now, 20 and 40 minutes ago
    assert features["customer_amount_sum_1h"] == pytest.approx(7.25 + 99.99 + 20.0)
    assert features["terminal_nb_tx_1d"] == 0  # the terminal window ends 7 days ago

    # the served probability is the published model's score of exactly those features
    scorer = load_scorer(str(trained.data_root / "models"), trained.model_version)
    expected = scorer.score([features[name] for name in FEATURE_NAMES])
    assert answer["fraud_probability"] == pytest.approx(expected, abs=1e-6)

    forwarded = eventually(
        lambda: predict(port_forward, customer), "GET /predict through port-forward", 30
    )
    assert forwarded["fraud_probability"] == answer["fraud_probability"]
    assert forwarded["model_version"] == trained.model_version


def test_kubectl_logs_and_exec_on_a_chart_pod(cluster: Cluster, trained: Release) -> None:
    ingest = pods(cluster, NAMESPACE, "app.kubernetes.io/component=ingest")[0]["metadata"]["name"]
    logs = cluster.kubectl("logs", "-n", NAMESPACE, ingest)
    assert "/v1/transactions" in logs or "Uvicorn" in logs or "started" in logs.lower(), logs
    whoami = cluster.run("exec", "-n", NAMESPACE, ingest, "--", "id", "-u")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.strip() == "10001"


def test_the_operator_with_the_chart_rbac_reports_a_fraudmodel_ready(
    cluster: Cluster, trained: Release
) -> None:
    cluster.apply(
        {
            "apiVersion": "fraudstack.io/v1alpha1",
            "kind": "FraudModel",
            "metadata": {"name": "fraud", "namespace": NAMESPACE},
            "spec": {"stableVersion": trained.model_version},
        }
    )

    def ready() -> dict[str, Any] | None:
        model = cluster.get(
            f"/apis/fraudstack.io/v1alpha1/namespaces/{NAMESPACE}/fraudmodels/fraud"
        )
        status = (model or {}).get("status", {})
        conditions = status.get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return status
        return None

    try:
        status = eventually(ready, "the FraudModel Ready", 120, interval=1)
    except AssertionError as exc:
        operator = cluster.run(
            "logs", "-n", NAMESPACE, f"deployment/{name('operator')}", "--tail=60"
        ).stdout
        raise AssertionError(f"FraudModel never Ready; operator log:\n{operator}") from exc
    assert status["phase"] == "Serving"
    # it reached the API through the kubernetes Service, with the chart's service account
    operator_pod = pods(cluster, NAMESPACE, "app.kubernetes.io/component=operator")[0]
    assert operator_pod["spec"]["serviceAccountName"] == name("operator")


def test_deleting_an_inference_pod_the_service_keeps_answering(
    cluster: Cluster, trained: Release
) -> None:
    customer = post_transactions(cluster, trained)[0]["customer_id"]
    inference = service_url(cluster, "inference")
    eventually(lambda: predict(inference, customer), "a first answer", 60, interval=0.5)
    before = {
        p["metadata"]["name"]
        for p in pods(cluster, NAMESPACE, "app.kubernetes.io/component=inference")
    }
    victim = sorted(before)[0]
    cluster.kubectl("delete", "pod", "-n", NAMESPACE, victim, "--wait=false")

    answered = failed = 0
    failures: list[str] = []
    deadline = time.monotonic() + 240
    replaced = False
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{inference}/predict/{customer}", timeout=5).status_code
        except httpx.HTTPError as exc:
            status, reason = 0, repr(exc)
        else:
            reason = f"HTTP {status}"
        if status == 200:
            answered += 1
        else:
            failed += 1
            failures.append(reason)
        current = pods(cluster, NAMESPACE, "app.kubernetes.io/component=inference")
        names = {p["metadata"]["name"] for p in current}
        if victim not in names and len(current) >= 2 and all(is_ready(p) for p in current):
            replaced = True
            break
        time.sleep(0.2)
    print(f"\nduring the replacement: {answered} answers, {failed} failures {failures}")
    assert replaced, describe_pods(cluster, NAMESPACE)
    assert failed == 0, failures
    assert answered > 0


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster) -> str:
    """kube-prometheus-stack's Prometheus, which ``devstack up --cluster`` has the cluster's
    Prometheus Operator run; its Service's address (through kube-proxy)."""
    namespace, service = monitoring.NAMESPACE, monitoring.PROMETHEUS_NAME
    cluster.wait_pod_ready(namespace, f"{monitoring.PROMETHEUS_STATEFULSET}-0", timeout=240)
    found = cluster.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    assert found is not None
    return f"http://{found['spec']['clusterIP']}:9090"


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def test_prometheus_scrapes_every_component_through_its_servicemonitor(
    prometheus: str, trained: Release
) -> None:
    """No static scrape configuration: the targets exist only if the ServiceMonitors' labels,
    selectors and port names are right."""
    expected = {name(c) for c in ("inference", "ingest", "aggregate", "snapshot")}

    def all_up() -> dict[str, list[str]] | None:
        series = query(prometheus, f'up{{namespace="{NAMESPACE}"}}')
        by_service: dict[str, list[str]] = {}
        for item in series:
            by_service.setdefault(item["metric"].get("service", ""), []).append(item["value"][1])
        ok = set(by_service) >= expected and all(
            by_service[s] and set(by_service[s]) == {"1"} for s in expected
        )
        return by_service if ok else None

    try:
        targets = eventually(all_up, "every component's targets up", 180, interval=2)
    except AssertionError as exc:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        raise AssertionError(f"targets: {active['activeTargets']}") from exc
    # every inference pod is a target of its own, labelled with the pod by the relabeling
    inference = query(prometheus, f'up{{service="{name("inference")}"}}')
    assert len(targets[name("inference")]) >= 2
    assert all(item["metric"]["pod"].startswith(name("inference")) for item in inference)


def test_the_alerts_are_loaded_from_the_prometheusrule(prometheus: str, release: Release) -> None:
    def loaded() -> set[str] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        names = {rule["name"] for group in groups for rule in group["rules"]}
        wanted = {"FraudstackInferenceLatencyHigh", "FraudstackInferenceErrorRateHigh"}
        return names if names >= wanted else None

    names = eventually(loaded, "the PrometheusRule's alerts loaded", 120, interval=2)
    assert "FraudstackFeaturesStale" in names and "FraudstackAggregationLagHigh" in names


def test_the_hpa_reads_cpu_from_metrics_server(cluster: Cluster, trained: Release) -> None:
    def measured() -> dict[str, Any] | None:
        hpa = cluster.get(
            f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/"
            f"{name('inference')}"
        )
        status = (hpa or {}).get("status", {})
        metrics = status.get("currentMetrics") or []
        cpu = [m for m in metrics if m.get("resource", {}).get("name") == "cpu"]
        if cpu and cpu[0]["resource"]["current"].get("averageUtilization") is not None:
            return status
        return None

    try:
        status = eventually(measured, "the HPA to read the inference pods' CPU", 180, interval=2)
    except AssertionError as exc:
        described = cluster.run("describe", "hpa", "-n", NAMESPACE).stdout
        raise AssertionError(f"the HPA has no CPU metric:\n{described}") from exc
    active = {c["type"]: c["status"] for c in status["conditions"]}
    assert active["ScalingActive"] == "True", status["conditions"]
    assert status["currentReplicas"] >= 2
    # kubectl top reads the same API: a CPU figure in millicores for every inference pod
    top = cluster.kubectl("top", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component")
    table = [line.split() for line in top.splitlines()[1:]]
    inference = [row for row in table if row[0].startswith(name("inference"))]
    assert len(inference) >= 2 and all(re.fullmatch(r"\d+m", row[1]) for row in inference), top


def test_the_users_flow_canary_autoscaling_and_rollback(
    cluster: Cluster, trained: Release, prometheus: str, tmp_path: Path
) -> None:
    """bench/cluster_flow.py, as a user runs it against this release: the operator promotes a
    second version through its Prometheus gates under vegeta's load, the HPA scales out and in,
    the PodDisruptionBudget refuses a second eviction, a corrupt candidate is rolled back, and
    vegeta counts no failed request over the whole run; then the dashboard's queries."""
    started = time.monotonic()
    log = tmp_path / "cluster_flow.log"
    with log.open("w") as output:
        finished = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "cluster_flow.py"),
                f"--kubeconfig={cluster.kubeconfig}",
                f"--kubectl={cluster.info['kubectl']}",
                f"--vegeta={vegeta_binary()}",
                f"--namespace={NAMESPACE}",
                f"--release={RELEASE}",
                f"--prometheus={prometheus}",
                f"--api-key={API_KEY}",
                f"--results={tmp_path}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=2400,
            check=False,
        )
    said = log.read_text()
    print(f"\n{said[-6000:]}\nthe flow took {time.monotonic() - started:.0f} s")
    assert finished.returncode == 0, said[-8000:]
    result = json.loads((tmp_path / "cluster_flow.json").read_text())
    assert (tmp_path / "cluster_flow.png").stat().st_size > 10_000

    # the driver's own checks (cluster_flow_report.verdict): no failed request, sticky customers,
    # the phases in order, one eviction of two let through, the rollback with one Warning Event
    assert result["verdict"] == [], result["verdict"]
    assert result["vegeta"]["requests"] > 1_000

    # and what the cluster itself says about it
    v1, v2 = result["versions"]
    registry = ModelRegistry(trained.data_root / "models")
    assert v1 != v2 and {v1, v2} <= set(registry.versions())
    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.verify(f"corrupt-{v2}")  # the fault was real
    model = cluster.get(f"/apis/fraudstack.io/v1alpha1/namespaces/{NAMESPACE}/fraudmodels/fraud")
    assert model is not None and model["status"]["stableVersion"] == v2
    events = cluster.get(
        f"/api/v1/namespaces/{NAMESPACE}/events?fieldSelector=involvedObject.name=fraud"
    )
    rolled_back = [
        e
        for e in (events or {}).get("items", [])
        if e["reason"] == "RolledBack" and f"corrupt-{v2}" in e["message"]
    ]
    assert len(rolled_back) == 1 and rolled_back[0]["type"] == "Warning", rolled_back
    # the gates the operator judged came from the in-cluster Prometheus: latency of both versions
    figures = result["facts"]["promoted"]["lastGateCheck"]["figures"]
    assert figures["stableP99Seconds"] and figures["candidateP99Seconds"], figures
    assert {v1, v2} <= {v for row in result["timeline"] for v in row["versions"]}

    # every Grafana panel's query answers from the Prometheus the ServiceMonitors feed, now that
    # every kind of traffic has happened within the dashboard's range (what Grafana substitutes
    # with the namespace variable set and a 10 s scrape interval)
    values = {"namespace": NAMESPACE, "__interval": "10s", "__rate_interval": "40s"}
    values["__range"] = "30m"
    empty = [
        q.name
        for q in dashboard.queries(dashboard.load())
        if not query(prometheus, dashboard.substitute(q.expr, values))
    ]
    assert empty == [], empty


def test_a_wrong_image_tag_fails_helm_install_naming_the_pods(
    cluster: Cluster, chart_images: float, cluster_helm: Helm
) -> None:
    namespace = "fraudstack-badtag"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        result = cluster_helm.run(
            "install",
            "badtag",
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(SMALL_NODE),
            "-f",
            str(CHART / "ci" / "minimal-values.yaml"),
            "--set",
            f"image.registry={REGISTRY}",
            "--set",
            "image.tag=0.0.0-missing",
            # only fraudstack's own images: the bundled servers' tags are right
            "--set",
            "redis.enabled=false",
            "--set",
            "redis.host=redis.invalid",
            "--set",
            "redis.auth.password=unused",
            "--set",
            "kafka.enabled=false",
            "--set",
            "kafka.bootstrap=kafka.invalid:9092",
            "--wait",
            "--timeout",
            "60s",
            check=False,
            timeout=180,
        )
        assert result.returncode != 0
        assert "context deadline exceeded" in result.stderr or "timed out" in result.stderr, (
            result.stderr
        )
        stuck = {p["metadata"]["name"]: waiting_reasons(p) for p in pods(cluster, namespace)}
        print(f"\nhelm: {result.stderr.strip()}\npods: {stuck}")
        assert stuck, "no pods"
        for pod_name, reasons in stuck.items():
            assert reasons & {"ImagePullBackOff", "ErrImagePull"}, (pod_name, reasons)
        # what a user reads: kubectl shows the pods by name with the reason
        listing = cluster.run("get", "pods", "-n", namespace).stdout
        for pod_name in stuck:
            assert pod_name in listing
        assert "ImagePullBackOff" in listing or "ErrImagePull" in listing
    finally:
        cluster_helm.run("uninstall", "badtag", "--namespace", namespace, check=False)
        cluster.run("delete", "namespace", namespace, "--wait=false")


def test_an_external_redis_without_its_password_secret_is_refused_by_the_schema(
    cluster_helm: Helm,
) -> None:
    result = cluster_helm.run(
        "install",
        "nopassword",
        str(CHART),
        "--namespace",
        "default",
        "--dry-run=client",
        "--set",
        "redis.enabled=false",
        "--set",
        "redis.host=redis.example",
        check=False,
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "/redis/auth/existingSecret" in result.stderr
