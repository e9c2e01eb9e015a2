"""The Grafana dashboard ConfigMap: rendered where Grafana's sidecar finds it, valid JSON with
unique panel ids, every query filtered by the namespace variable and naming only metrics the
services define.

No servers: ``helm template`` and the services' own metric registries. Whether each query
really returns series from the running services is tests/k8s/test_dashboard_queries.py.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.registry import REGISTRY

from fraudstack.serve.metrics import ServeMetrics
from fraudstack.snapshot.metrics import SnapshotMetrics
from support import dashboard
from support.kube import CHART, Helm, Manifest

MONITORING = CHART / "ci" / "with-monitoring-values.yaml"


def dashboard_maps(manifest: Manifest) -> list[dict[str, Any]]:
    return [
        document
        for document in manifest
        if document["kind"] == "ConfigMap" and document["metadata"]["name"].endswith("-dashboard")
    ]


@pytest.fixture(scope="module")
def monitored(helm: Helm) -> Manifest:
    return helm.template(MONITORING)


def test_the_config_map_carries_the_sidecar_label_and_the_file(monitored: Manifest) -> None:
    (config_map,) = dashboard_maps(monitored)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "fraudstack"
    (key,) = config_map["data"]
    assert key.endswith(".json")  # the sidecar writes the key as the file Grafana loads
    # byte for byte the file in the chart, so an export from Grafana can replace it as is
    assert config_map["data"][key] == dashboard.DASHBOARD.read_text().rstrip("\n")
    assert json.loads(config_map["data"][key])["uid"] == "fraudstack-overview"


def test_label_namespace_and_switch_come_from_values(helm: Helm) -> None:
    moved = helm.template(
        MONITORING,
        sets=[
            "metrics.grafanaDashboard.label=grafana_dashboards",
            "metrics.grafanaDashboard.labelValue=fraud",
            "metrics.grafanaDashboard.namespace=monitoring",
            "metrics.grafanaDashboard.annotations.grafana_folder=Payments",
        ],
    )
    (config_map,) = dashboard_maps(moved)
    metadata = config_map["metadata"]
    assert metadata["labels"]["grafana_dashboards"] == "fraud"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["annotations"] == {"grafana_folder": "Payments"}
    assert not dashboard_maps(
        helm.template(MONITORING, sets=["metrics.grafanaDashboard.enabled=false"])
    )
    # like the ServiceMonitors and the PrometheusRule: nothing without monitoring
    assert not dashboard_maps(helm.template())


def test_a_label_value_that_is_no_label_is_refused(helm: Helm) -> None:
    result = helm.run(
        "template",
        "fraudstack",
        str(CHART),
        "-f",
        str(MONITORING),
        "--set",
        "metrics.grafanaDashboard.labelValue=not a label",
        check=False,
    )
    assert result.returncode != 0
    assert "labelValue" in result.stderr


def test_panels_have_unique_ids_and_every_target_a_query() -> None:
    board = dashboard.load()
    ids = [panel["id"] for panel in dashboard.panels(board)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    refs = [(query.panel_id, query.ref_id) for query in dashboard.queries(board)]
    assert len(refs) == len(set(refs))
    for panel in dashboard.panels(board):
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


def test_the_data_source_and_namespace_are_variables() -> None:
    variables = {v["name"]: v for v in dashboard.load()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    namespace = variables["namespace"]
    assert namespace["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    # "All" must match every namespace, and series without the label (a local Prometheus)
    assert namespace["includeAll"] and namespace["allValue"] == ".*"
    assert dashboard.variable_queries(dashboard.load()) == [
        ("inference_requests_total", "namespace")
    ]


def test_every_selector_is_filtered_by_the_namespace_variable() -> None:
    for query in dashboard.queries(dashboard.load()):
        found = dashboard.selectors(query.expr)
        assert found, f"{query.name}: no metric selector in {query.expr!r}"
        for metric, matchers in found:
            assert 'namespace=~"$namespace"' in matchers, f"{query.name}: {metric} unfiltered"


def defined_metrics() -> set[str]:
    """Every series name the services' collectors expose, as Prometheus stores them."""
    for module in ("fraudstack.aggregate.metrics", "fraudstack.ingest.app"):
        importlib.import_module(module)  # their metrics live in the default registry
    registries: list[CollectorRegistry] = [
        REGISTRY,
        ServeMetrics().registry,
        SnapshotMetrics().registry,
    ]
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_every_metric_the_dashboard_names_is_defined_by_a_service() -> None:
    defined = defined_metrics()
    unknown = dashboard.metric_names(dashboard.load()) - defined
    assert not unknown, f"the dashboard names metrics no service defines: {sorted(unknown)}"
