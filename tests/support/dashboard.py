"""The chart's Grafana dashboard as Grafana reads it: its panels' queries, its template variables
substituted, and the metric names its selectors name.

No Grafana runs here; this is the part of Grafana the tests need. Pure (no servers), so the
render tests and the query tests share it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from support.kube import CHART

DASHBOARD = CHART / "files" / "grafana-dashboard.json"

#: ``$name``, ``${name}``, ``${name:format}`` and the old ``[[name]]``, as Grafana accepts them.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
#: A vector selector with a metric name: the name, then its label matchers.
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
#: ``label_values(metric, label)``, the namespace variable's query.
_LABEL_VALUES = re.compile(r"^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*(\w+)\s*\)$")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    panel_id: int
    title: str
    ref_id: str
    expr: str
    legend: str

    @property
    def name(self) -> str:
        return f"panel {self.panel_id} {self.title!r} target {self.ref_id}"


def load(text: str | None = None) -> dict[str, Any]:
    """The dashboard JSON (the file in the chart unless ``text`` is given)."""
    document = json.loads(text if text is not None else DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(
            panel["id"],
            panel["title"],
            target["refId"],
            target["expr"],
            target.get("legendFormat", ""),
        )
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every template variable replaced by its value, as Grafana sends it.

    A variable missing from ``values`` is an error: Grafana would send the ``$name`` as is and
    Prometheus refuse the query, so a misspelled variable must not pass unnoticed here either.
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"{expr!r} uses ${name}, which the test does not define")
        return values[name]

    return _VARIABLE.sub(value, expr)


def selectors(expr: str) -> list[tuple[str, str]]:
    """Each ``metric{matchers}`` of ``expr``, as (metric name, matchers)."""
    return [(name, matchers.strip()) for name, matchers in _SELECTOR.findall(expr)]


def metric_names(dashboard: Mapping[str, Any]) -> set[str]:
    """Every metric a panel query or a variable query names."""
    names = {name for query in queries(dashboard) for name, _ in selectors(query.expr)}
    names.update(metric for metric, _ in variable_queries(dashboard))
    return names


def variable_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``label_values(metric, label)`` queries of the query variables, as (metric, label)."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        assert match, f"variable {variable['name']}: {text!r} is not label_values(metric, label)"
        found.append((match.group(1), match.group(2)))
    return found
