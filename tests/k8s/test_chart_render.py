"""The chart lints, renders with every values file, and the rendered objects say what matters.

No cluster needed: these run `helm lint` and `helm template` only. What the API server thinks
of the same objects is in test_chart_install.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudstack.cli import build_parser
from fraudstack.devstack.kafka_server import KAFKA_VERSION
from support.kube import CHART, CI_VALUES, ROOT, Helm, Manifest

RELEASE = "fraudstack"
SERVICES = ("ingest", "aggregate", "snapshot", "inference")
VALUES_FILES = [None, *CI_VALUES]
VALUES_IDS = ["default", *(path.stem for path in CI_VALUES)]


def find(manifest: Manifest, kind: str, component: str | None = None) -> list[dict[str, Any]]:
    return [
        document
        for document in manifest
        if document["kind"] == kind
        and (
            component is None
            or document["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )
    ]


def one(manifest: Manifest, kind: str, component: str) -> dict[str, Any]:
    found = find(manifest, kind, component)
    assert len(found) == 1, f"expected one {kind} for {component}, found {len(found)}"
    return found[0]


def settings(manifest: Manifest) -> dict[str, str]:
    """The data of the chart's settings ConfigMap (FRAUDSTACK_* variables)."""
    (config_map,) = [
        d for d in find(manifest, "ConfigMap") if d["metadata"]["name"].endswith("-config")
    ]
    return dict(config_map["data"])


def pod_specs(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Every pod template the chart renders, by object name."""
    specs = {}
    for document in manifest:
        kind, spec = document["kind"], document.get("spec", {})
        if kind in ("Deployment", "StatefulSet"):
            specs[document["metadata"]["name"]] = spec["template"]["spec"]
        elif kind == "CronJob":
            specs[document["metadata"]["name"]] = spec["jobTemplate"]["spec"]["template"]["spec"]
    return specs


@pytest.fixture(scope="module")
def default(helm: Helm) -> Manifest:
    return helm.template()


@pytest.fixture(scope="module")
def monitored(helm: Helm) -> Manifest:
    return helm.template(CHART / "ci" / "with-monitoring-values.yaml")


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_helm_lint_is_clean(helm: Helm, values: Path | None) -> None:
    arguments = ["lint", str(CHART), "--strict"] + (["-f", str(values)] if values else [])
    result = helm.run(*arguments)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_template_renders(helm: Helm, values: Path | None) -> None:
    manifest = helm.template(*([values] if values else []))
    kinds = {document["kind"] for document in manifest}
    assert {"Deployment", "Service", "ConfigMap", "CronJob"} <= kinds
    for document in manifest:
        assert len(document["metadata"]["name"]) <= 63


def test_selectors_carry_no_version(default: Manifest) -> None:
    checked = 0
    for document in default:
        selector = document.get("spec", {}).get("selector")
        if selector is None:
            continue
        labels = selector.get("matchLabels", selector)  # Services select with a plain map
        assert "app.kubernetes.io/version" not in labels, document["metadata"]["name"]
        assert "helm.sh/chart" not in labels, document["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        checked += 1
    assert checked >= 10


def test_every_deployment_selector_matches_its_pods(default: Manifest) -> None:
    for document in find(default, "Deployment") + find(default, "StatefulSet"):
        selector = document["spec"]["selector"]["matchLabels"]
        pod_labels = document["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()


@pytest.mark.parametrize("component", SERVICES)
def test_services_probe_healthz_and_readyz(default: Manifest, component: str) -> None:
    container = one(default, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
    port_names = {port["name"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] in port_names


@pytest.mark.parametrize("component", SERVICES)
def test_services_run_a_real_command_on_the_port_they_expose(
    default: Manifest, component: str
) -> None:
    """The arguments parse with the real `fraudstack` command line (a bare `fraudstack ingest`
    only prints its usage), and a metrics port given to the command is the container's."""
    container = one(default, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["fraudstack"]
    arguments = container["args"]
    try:
        parsed = build_parser(arguments[0]).parse_args(arguments)
    except SystemExit as exc:
        raise AssertionError(f"fraudstack {' '.join(arguments)} does not parse") from exc
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    if "metrics" in ports:
        assert parsed.metrics_port == ports["metrics"]


def test_every_pod_is_locked_down(default: Manifest) -> None:
    specs = pod_specs(default)
    assert len(specs) >= 7
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


def test_fraudstack_pods_run_as_uid_10001_with_checksum(default: Manifest) -> None:
    for name, spec in pod_specs(default).items():
        if name.endswith(("-redis", "-kafka")):
            continue
        assert spec["securityContext"]["runAsUser"] == 10001, name
    for component in (*SERVICES, "operator"):
        annotations = one(default, "Deployment", component)["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert len(annotations["checksum/config"]) == 64


def test_changing_a_setting_rolls_the_pods(helm: Helm, default: Manifest) -> None:
    changed = helm.template(sets=["config.logLevel=DEBUG"])

    def checksum(manifest: Manifest) -> str:
        template = one(manifest, "Deployment", "inference")["spec"]["template"]
        return str(template["metadata"]["annotations"]["checksum/config"])

    assert checksum(changed) != checksum(default)


def test_redis_password_comes_from_a_secret(helm: Helm, default: Manifest) -> None:
    env = one(default, "Deployment", "inference")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    by_name = {variable["name"]: variable for variable in env}
    secret_ref = by_name["FRAUDSTACK_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret_ref["name"] == f"{RELEASE}-redis"
    assert by_name["FRAUDSTACK_REDIS_URL"]["value"].startswith(
        "redis://:$(FRAUDSTACK_REDIS_PASSWORD)@"
    )
    assert "FRAUDSTACK_REDIS_URL" not in settings(default)
    external = helm.template(CHART / "ci" / "external-deps-values.yaml")
    assert not find(external, "Secret")
    env = one(external, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]["env"]
    reference = {v["name"]: v for v in env}["FRAUDSTACK_REDIS_PASSWORD"]["valueFrom"]
    assert reference["secretKeyRef"] == {"name": "fraudstack-redis", "key": "password"}


def env_of(manifest: Manifest, component: str) -> dict[str, dict[str, Any]]:
    """The environment of a Deployment's container, by variable name."""
    container = one(manifest, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable for variable in container["env"]}


def test_ingest_api_key_comes_from_a_generated_secret(default: Manifest) -> None:
    secret = one(default, "Secret", "ingest")
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    assert len(key) == 32 and key.isalnum()
    reference = env_of(default, "ingest")["FRAUDSTACK_INGEST_API_KEY"]["valueFrom"]
    assert reference["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "api-key"}
    # Only the ingestion API checks the key: no other pod gets it.
    for component in ("aggregate", "snapshot", "inference", "operator"):
        assert "FRAUDSTACK_INGEST_API_KEY" not in env_of(default, component), component


def test_ingest_api_key_set_in_the_values_rolls_the_pods(helm: Helm) -> None:
    def render(key: str) -> tuple[str, str]:
        manifest = helm.template(sets=[f"ingest.auth.apiKey={key}"])
        secret = one(manifest, "Secret", "ingest")["data"]["api-key"]
        pod = one(manifest, "Deployment", "ingest")["spec"]["template"]
        return base64.b64decode(secret).decode(), pod["metadata"]["annotations"][
            "checksum/ingest-api-key"
        ]

    (first, first_checksum), (second, second_checksum) = render("k-one"), render("k-two")
    assert (first, second) == ("k-one", "k-two")
    assert first_checksum != second_checksum


def test_ingest_api_key_from_an_existing_secret_or_off(helm: Helm) -> None:
    external = helm.template(CHART / "ci" / "external-deps-values.yaml")
    assert not find(external, "Secret")
    reference = env_of(external, "ingest")["FRAUDSTACK_INGEST_API_KEY"]["valueFrom"]
    assert reference["secretKeyRef"] == {"name": "fraudstack-ingest", "key": "key"}
    off = helm.template(sets=["ingest.auth.enabled=false"])
    assert not find(off, "Secret", "ingest")
    assert "FRAUDSTACK_INGEST_API_KEY" not in env_of(off, "ingest")


def test_hpa_targets_the_inference_deployment(default: Manifest) -> None:
    hpa = one(default, "HorizontalPodAutoscaler", "inference")
    deployment = one(default, "Deployment", "inference")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert set(hpa["spec"]["behavior"]) == {"scaleUp", "scaleDown"}
    # The HPA owns the replica count; the Deployment must not fight it.
    assert "replicas" not in deployment["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"]  # CPU utilisation needs a request


def test_pdb_covers_the_inference_pods(default: Manifest) -> None:
    pdb = one(default, "PodDisruptionBudget", "inference")
    pods = one(default, "Deployment", "inference")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()


def test_service_monitor_selects_the_inference_metrics_port(monitored: Manifest) -> None:
    monitor = one(monitored, "ServiceMonitor", "inference")
    service = one(monitored, "Service", "inference")
    deployment = one(monitored, "Deployment", "inference")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # No other Service matches, so only inference pods are scraped under this monitor.
    matching = [
        s
        for s in find(monitored, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert matching == [service]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    service_port = {port["name"]: port for port in service["spec"]["ports"]}[endpoint["port"]]
    container_ports = {
        port["name"]: port["containerPort"]
        for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert container_ports[service_port["targetPort"]] == 8080
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["fraudstack"]


def test_monitoring_is_off_by_default(default: Manifest) -> None:
    assert not find(default, "ServiceMonitor")
    assert not find(default, "PrometheusRule")


def test_prometheus_rule_carries_the_alerts_file(monitored: Manifest) -> None:
    rule = find(monitored, "PrometheusRule")[0]
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())

    def expressions(groups: list[dict[str, Any]]) -> dict[str, str]:
        return {r["alert"]: r["expr"] for group in groups for r in group["rules"]}

    assert expressions(rule["spec"]["groups"]) == expressions(source["groups"])
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert alert["labels"]["team"] == "payments-ml"
            assert alert["labels"]["severity"] in ("warning", "critical")


def test_inference_uses_the_slim_serve_image_and_multiprocess_metrics(default: Manifest) -> None:
    spec = one(default, "Deployment", "inference")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"].startswith("fraudstack-serve:")
    assert container["args"] == ["serve"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] == mount["prometheus-multiproc"]
    volume = {v["name"]: v for v in spec["volumes"]}["prometheus-multiproc"]
    assert "emptyDir" in volume
    # Inference only reads the model registry.
    assert {m["name"]: m for m in container["volumeMounts"]}["data"]["readOnly"] is True


def test_data_volume_is_a_claim_by_default(default: Manifest, helm: Helm) -> None:
    claim = find(default, "PersistentVolumeClaim")[0]
    for component in ("inference", "snapshot"):
        volumes = one(default, "Deployment", component)["spec"]["template"]["spec"]["volumes"]
        data = {volume["name"]: volume for volume in volumes}["data"]
        assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    minimal = helm.template(CHART / "ci" / "minimal-values.yaml")
    assert not find(minimal, "PersistentVolumeClaim")


def test_external_dependencies_replace_the_in_chart_ones(helm: Helm) -> None:
    manifest = helm.template(CHART / "ci" / "external-deps-values.yaml")
    assert not find(manifest, "StatefulSet")
    assert (
        settings(manifest)["FRAUDSTACK_KAFKA_BOOTSTRAP"]
        == "kafka-bootstrap.data.svc.cluster.local:9092"
    )
    image = one(manifest, "Deployment", "aggregate")["spec"]["template"]["spec"]["containers"][0]
    assert image["image"] == "registry.example.com/fraudstack/fraudstack-aggregate:0.1.0"


def images(manifest: Manifest) -> dict[str, str]:
    """The image of every container the chart renders, by container name."""
    return {
        container["name"]: container["image"]
        for spec in pod_specs(manifest).values()
        for container in spec["containers"] + spec.get("initContainers", [])
    }


def test_one_registry_for_every_image_including_redis_and_kafka(
    helm: Helm, default: Manifest
) -> None:
    # `make images` builds all of these; by default they are named as it tags them
    assert images(default) == {
        "ingest": "fraudstack-ingest:0.1.0",
        "aggregate": "fraudstack-aggregate:0.1.0",
        "snapshot": "fraudstack-snapshot:0.1.0",
        "inference": "fraudstack-serve:0.1.0",
        "inference-wait": "fraudstack-serve:0.1.0",  # waits for a published model
        "train": "fraudstack-train:0.1.0",
        "operator": "fraudstack-operator:0.1.0",
        "redis": "fraudstack-redis:7.0.15",
        "kafka": f"fraudstack-kafka:{KAFKA_VERSION}",
    }
    private = helm.template(sets=["image.registry=registry.example.com:5000/fraud/"])
    assert all(
        image.startswith("registry.example.com:5000/fraud/fraudstack-")
        for image in images(private).values()
    ), images(private)
    # one image may still come from elsewhere
    mixed = helm.template(
        sets=[
            "image.registry=registry.example.com:5000/fraud",
            "redis.image.registry=mirror.example.com/library",
            "redis.image.repository=redis",
            "redis.image.tag=7.4.2",
        ]
    )
    assert images(mixed)["redis"] == "mirror.example.com/library/redis:7.4.2"
    assert (
        images(mixed)["kafka"]
        == f"registry.example.com:5000/fraud/fraudstack-kafka:{KAFKA_VERSION}"
    )


def test_bundled_kafka_is_a_kraft_node_clients_reach_by_its_service(default: Manifest) -> None:
    spec = one(default, "StatefulSet", "kafka")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    service = one(default, "Service", "kafka")
    assert service["spec"]["clusterIP"] == "None"
    # clients are sent back to the name the headless Service gives the pod
    assert env["KAFKA_ADVERTISED_HOST"] == f"{service['metadata']['name']}.fraudstack.svc"
    assert settings(default)["FRAUDSTACK_KAFKA_BOOTSTRAP"] == f"{service['metadata']['name']}:9092"
    assert env["KAFKA_PARTITIONS"] == "4"
    # ready once the broker lists itself in a metadata answer, not when the port opens
    # (a path inside the Kafka image: images/kafka/Containerfile installs the script there)
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe == ["/usr/local/bin/kafka-ready"]
    containerfile = (ROOT / "images" / "kafka" / "Containerfile").read_text()
    assert any(
        line.startswith("COPY ")
        and "kafka-ready" in line.split()
        and line.endswith(" /usr/local/bin/")
        for line in containerfile.splitlines()
    )
    # the image's own user; it writes only to its data volume and /tmp
    assert spec["securityContext"]["runAsUser"] == 1001
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {
        "/var/lib/kafka/data",
        "/tmp",
    }
    assert (
        one(default, "StatefulSet", "redis")["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"
        ]
        == 999
    )


def test_node_ports_match_kind_config(helm: Helm) -> None:
    manifest = helm.template(sets=["nodePorts.enabled=true"])
    kind = yaml.safe_load((CHART.parents[1] / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for m in kind["nodes"][0]["extraPortMappings"]}
    for component, port in (("inference", 30080), ("ingest", 30000)):
        service = one(manifest, "Service", component)
        assert service["spec"]["type"] == "NodePort"
        assert service["spec"]["ports"][0]["nodePort"] == port
        assert port in mapped


def test_long_release_names_are_cut_to_63(helm: Helm) -> None:
    manifest = helm.template(release="a" * 53)
    for document in manifest:
        assert len(document["metadata"]["name"]) <= 63, document["metadata"]["name"]
        assert not document["metadata"]["name"].endswith("-")


def test_operator_rbac_is_least_privilege(default: Manifest) -> None:
    cluster_rules = find(default, "ClusterRole")[0]["rules"]
    assert cluster_rules == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        }
    ]
    for rule in find(default, "Role")[0]["rules"] + cluster_rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    # Every rule says why it is there.
    source = (CHART / "templates" / "operator-rbac.yaml").read_text().splitlines()
    rule_lines = [i for i, line in enumerate(source) if line.strip().startswith("- apiGroups:")]
    assert len(rule_lines) == 6
    for index in rule_lines:
        assert source[index - 1].strip().startswith("#"), f"rule at line {index + 1} has no why"


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("replicaCountt=2", "additional properties 'replicaCountt' not allowed"),
        ("inference.autoscaling.minReplica=1", "additional properties 'minReplica' not allowed"),
        ("redis.auth.passwd=x", "additional properties 'passwd' not allowed"),
        ("inference.replicaCount=-1", "/inference/replicaCount"),
        ("aggregate.replicaCount=-3", "/aggregate/replicaCount"),
        ("config.logLevel=LOUD", "/config/logLevel"),
        ("ingest.auth.apikey=x", "additional properties 'apikey' not allowed"),
        ("networkPolicy.enable=false", "additional properties 'enable' not allowed"),
        ("networkPolicy.apiAllowedFrom[0].podSelectr.a=b", "additional properties 'podSelectr'"),
        # the bundled broker is Apache Kafka now; an old values file fails loudly
        ("redpanda.enabled=false", "additional properties 'redpanda' not allowed"),
        ("kafka.image.tag=", "/kafka/image/tag"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, assignment: str, message: str) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--set", assignment, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_negative_replicas_message_is_clear(helm: Helm) -> None:
    result = helm.run(
        "template", RELEASE, str(CHART), "--set", "ingest.replicaCount=-1", check=False
    )
    assert "at '/ingest/replicaCount': minimum: got -1, want 0" in result.stderr


def test_more_aggregators_than_partitions_is_refused(helm: Helm) -> None:
    result = helm.run(
        "template", RELEASE, str(CHART), "--set", "aggregate.replicaCount=6", check=False
    )
    assert result.returncode != 0
    assert "aggregate.replicaCount (6) exceeds kafka.partitions (4)" in result.stderr
    helm.run(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "aggregate.replicaCount=6",
        "--set",
        "kafka.partitions=6",
    )


def test_every_value_is_documented_where_it_is_declared() -> None:
    """Each key has a comment right above it. A comment starting with `# --` documents a value
    (its children, e.g. a securityContext or resources map, are that value); a plain comment
    documents a group, whose keys need comments of their own."""
    undocumented = []
    # (indent, documents a whole value?) of the keys that enclose the current line
    enclosing: list[tuple[int, bool]] = []
    previous = ""
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#") or stripped.startswith("- "):
            previous = stripped if stripped.startswith("#") else previous
            continue
        indent = len(line) - len(line.lstrip())
        while enclosing and enclosing[-1][0] >= indent:
            enclosing.pop()
        inside_a_value = any(is_value for _, is_value in enclosing)
        if not inside_a_value and not previous.startswith("#"):
            undocumented.append(f"{number}: {stripped}")
        enclosing.append((indent, previous.startswith("# --")))
        previous = stripped
    assert not undocumented


def test_an_external_redis_cluster_gets_a_cluster_url(helm: Helm) -> None:
    manifest = helm.template(
        CHART / "ci" / "external-deps-values.yaml", sets=["redis.cluster=true"]
    )
    url = env_of(manifest, "aggregate")["FRAUDSTACK_REDIS_URL"]["value"]
    assert url.startswith("redis+cluster://:$(FRAUDSTACK_REDIS_PASSWORD)@")
    assert env_of(manifest, "inference")["FRAUDSTACK_REDIS_URL"]["value"] == url
    result = helm.run("template", RELEASE, str(CHART), "--set", "redis.cluster=true", check=False)
    assert result.returncode != 0 and "external Redis Cluster" in result.stderr
