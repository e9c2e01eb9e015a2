"""The alert rules pass promtool, each alert has a firing and a quiet case, and the
PrometheusRule the chart renders carries exactly the rules promtool checked."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from support.kube import CHART, Helm, which_promtool

ALERTS = CHART / "files" / "alerts.yaml"
UNIT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [which_promtool(), *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def alert_names(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["alert"] for group in groups for rule in group["rules"]}


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = alert_names(yaml.safe_load(ALERTS.read_text())["groups"])
    assert alerts == {
        "FraudstackInferenceLatencyHigh",
        "FraudstackInferenceErrorRateHigh",
        "FraudstackFeaturesStale",
        "FraudstackAggregationLagHigh",
        "FraudstackAggregationRebalancing",
        "FraudstackAggregationLoopStalled",
        "FraudstackOnlineStoreRebuilding",
    }
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            # A quiet case is judged after `for:` has run out, so "pending" cannot pass for it.
            if check["eval_time"] != "15m":
                continue
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == alerts
    assert quiet == alerts


def test_rendered_prometheus_rule_passes_promtool(helm: Helm, tmp_path: Path) -> None:
    manifest = helm.template(CHART / "ci" / "with-monitoring-values.yaml")
    (rule,) = [document for document in manifest if document["kind"] == "PrometheusRule"]
    extracted = tmp_path / "rendered-rules.yaml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = promtool("check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr
    source = yaml.safe_load(ALERTS.read_text())["groups"]
    assert alert_names(rule["spec"]["groups"]) == alert_names(source)
    rendered = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    for group in source:
        for alert in group["rules"]:
            assert rendered[alert["alert"]]["expr"] == alert["expr"]
            assert rendered[alert["alert"]]["for"] == alert["for"]
            assert rendered[alert["alert"]]["annotations"] == alert["annotations"]
