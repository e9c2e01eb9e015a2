"""Every query of the chart's Grafana dashboard returns series from the real services.

No Grafana runs here, so the test does what Grafana does when it draws the dashboard: it takes
each panel target's PromQL from the JSON the chart ships, substitutes the template variables and
sends the query to Prometheus. The Prometheus is the local stack's real one; it scrapes real
``fraudstack`` processes (ingest API, aggregator, snapshot consumer, gunicorn inference with a
stable and a candidate model at 50 %) while payments stream in through the ingestion API and
are scored. Each target is registered under ``namespace`` and ``pod`` labels, the labels the
chart's ServiceMonitors give in a cluster, so the namespace variable selects this test's
services and nothing another test left in the same Prometheus.

A query that answers no series, or only NaN, fails the test, and so does a metric name no
running service exports even where an ``or`` would have hidden it. The main panels are drawn
from the same queries over the run; with ``FRAUDSTACK_DASHBOARD_PNG=<path>`` after a minute of
traffic, into that picture (bench/results/dashboard.png is one).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraudstack.adapters.scrape import register_target
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.process import free_port
from fraudstack.simulate import SimulationConfig, simulate
from support import dashboard
from support.aggregation import Run, stop
from support.ingest import running_ingest
from support.serving import CANDIDATE, RunningService, start_service
from support.waiting import eventually

#: The devstack's Prometheus scrapes every second (fraudstack.devstack.prometheus_server).
SCRAPE_SECONDS = 1.0
#: Grafana's $__interval for a panel showing the last 30 minutes about 180 points wide.
INTERVAL_SECONDS = 10.0
#: Roles whose metrics the dashboard reads: all of them must be scraped before it is checked.
ROLES = ("ingest", "aggregate", "snapshot", "inference")


def prometheus_regex_escape(value: str) -> str:
    """A variable's value inside ``=~"..."``, escaped as Grafana's Prometheus data source does."""
    return re.sub(r"([\\$^*+?.()|\[\]{}'])", r"\\\\\1", value)


def grafana_variables(namespace: str, interval: float) -> dict[str, str]:
    """The values Grafana substitutes, for one namespace chosen in the namespace variable."""
    # Grafana: $__rate_interval = max($__interval + scrape interval, 4 × scrape interval)
    rate_interval = max(interval + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)
    return {
        "namespace": prometheus_regex_escape(namespace),
        "__interval": f"{interval:g}s",
        "__rate_interval": f"{rate_interval:g}s",
        "__range": "30m",
    }


@dataclass
class Answer:
    query: dashboard.PanelQuery
    promql: str
    series: int = 0
    finite: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.series > 0 and self.finite > 0

    def __str__(self) -> str:
        problem = self.error or f"{self.series} series, {self.finite} with a number"
        return f"{self.query.name}: {problem}\n    {self.promql}"


def prometheus_query(address: str, promql: str, **params: str) -> list[dict[str, Any]]:
    """An instant query's (or with start/end/step, a range query's) result; raises on refusal."""
    path = "query_range" if "step" in params else "query"
    response = httpx.get(f"{address}/api/v1/{path}", params={"query": promql, **params}, timeout=10)
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def ask(address: str, board: Mapping[str, Any], values: Mapping[str, str]) -> list[Answer]:
    """Every panel query of ``board``, answered by the Prometheus at ``address`` now."""
    answers = []
    for query in dashboard.queries(board):
        answer = Answer(query, dashboard.substitute(query.expr, values))
        try:
            result = prometheus_query(address, answer.promql)
        except ValueError as exc:
            answer.error = str(exc)
        else:
            answer.series = len(result)
            answer.finite = sum(math.isfinite(float(item["value"][1])) for item in result)
        answers.append(answer)
    return answers


def failures(answers: list[Answer]) -> list[Answer]:
    return [answer for answer in answers if not answer.ok]


@dataclass
class Traffic:
    """Payments into the ingestion API and scoring requests for their customers, four times a
    second, in a thread, until stopped: the load a dashboard is looked at under."""

    ingest_url: str
    serve_url: str
    payments: list[dict[str, Any]]
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    started: float = 0.0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name="dashboard-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)

    def count(self, kind: str, status: int) -> None:
        tally = self.statuses.setdefault(kind, {})
        tally[status] = tally.get(status, 0) + 1

    def _run(self) -> None:
        sent: list[str] = []
        round_number = 0
        with httpx.Client(timeout=10) as client:
            while not self._stopping.is_set():
                now = int(time.time() * 1000)
                batch = [
                    {**payment, "txn_id": f"live-{round_number}-{index}", "ts": now}
                    for index, payment in enumerate(
                        self.payments[(round_number * 10) % len(self.payments) :][:10]
                    )
                ]
                try:
                    answer = client.post(f"{self.ingest_url}/v1/transactions", json=batch)
                    self.count("ingest", answer.status_code)
                    sent.extend(payment["customer_id"] for payment in batch)
                    # customers already streamed, and one nobody has seen (answered 404)
                    for customer in [*sent[-60::6], f"unknown-{round_number}"]:
                        scored = client.get(f"{self.serve_url}/predict/{customer}")
                        self.count("predict", scored.status_code)
                except httpx.HTTPError as exc:
                    self.problems.append(f"{type(exc).__name__}: {exc}")
                round_number += 1
                self._stopping.wait(0.25)


@dataclass
class LiveStack:
    namespace: str
    address: str
    traffic: Traffic


def register(prometheus: ServerInfo, namespace: str, role: str, port: int) -> Path:
    """Scrape ``port`` as the ServiceMonitor would label the pod in ``namespace``."""
    pod = f"fraudstack-{role}-0"
    return register_target(
        prometheus["targets_dir"],
        f"{namespace}-{role}",
        f"127.0.0.1:{port}",
        namespace=namespace,
        pod=pod,
    )


def start_snapshot(run: Run, folder: Path, port: int) -> subprocess.Popen[bytes]:
    """``fraudstack snapshot`` on the run's topics, flushing every second."""
    prefix = run.topics.transactions.removesuffix("transactions")
    env = {**os.environ, "FRAUDSTACK_TOPIC_PREFIX": prefix, "FRAUDSTACK_SCRAPE_TARGETS_DIR": ""}
    argv = [sys.executable, "-m", "fraudstack.cli", "snapshot", "--bootstrap", run.bootstrap]
    argv += ["--store", str(folder / "offline"), "--group", f"{prefix}snapshot"]
    argv += ["--flush-seconds", "1", "--metrics-port", str(port)]
    with open(folder / "snapshot.log", "ab") as log:
        return subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def scraped_roles(address: str, namespace: str) -> set[str]:
    result = prometheus_query(address, f'up{{namespace="{namespace}"}} == 1')
    return {item["metric"]["pod"].split("-")[1] for item in result}


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str,
    prometheus: ServerInfo,
    registry_root: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveStack]:
    """The four roles running on topics and a Redis of their own, scraped, under traffic."""
    folder = tmp_path_factory.mktemp("dashboard")
    namespace = f"dashboard-{uuid.uuid4().hex[:6]}"
    address = str(prometheus["address"])
    quiet = {"FRAUDSTACK_SCRAPE_TARGETS_DIR": ""}  # registered below, with namespace and pod
    payments = simulate(SimulationConfig(customers=100, terminals=200, days=2, seed=5))
    payments = payments.select(["customer_id", "terminal_id", "amount"])
    with ExitStack() as cleanup:
        run = Run.create(kafka_bootstrap, folder, f"{namespace}.")
        cleanup.callback(run.redis.stop)
        ports = {role: free_port() for role in ("aggregate", "snapshot")}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in quiet.items():
                patch.setenv(name, value)
            aggregator = run.start_aggregator("aggregate", ports["aggregate"])
        cleanup.callback(stop, aggregator)
        cleanup.callback(stop, start_snapshot(run, folder, ports["snapshot"]))
        prefix = f"{namespace}."
        ingest_url = cleanup.enter_context(
            running_ingest(kafka_bootstrap, prefix, folder / "ingest.log", **quiet)
        )
        service: RunningService = start_service(
            folder / "serve",
            run.redis.url,
            registry_root,
            FRAUDSTACK_SERVE_CANDIDATE_VERSION=CANDIDATE,
            FRAUDSTACK_SERVE_CANDIDATE_SHARE="50",
            **quiet,
        )
        cleanup.callback(service.stop)
        ports["ingest"] = int(ingest_url.rsplit(":", 1)[1])
        ports["inference"] = service.port
        for role, port in ports.items():
            cleanup.callback(register(prometheus, namespace, role, port).unlink)
        eventually(
            lambda: scraped_roles(address, namespace) == set(ROLES),
            f"Prometheus scraping {', '.join(ROLES)} in {namespace}",
            timeout=60,
            interval=0.5,
        )
        traffic = Traffic(ingest_url, service.url, payments.to_pylist())
        traffic.start()
        cleanup.callback(traffic.stop)
        yield LiveStack(namespace, address, traffic)


def test_every_panel_query_returns_series(live: LiveStack) -> None:
    board = dashboard.load()
    values = grafana_variables(live.namespace, INTERVAL_SECONDS)
    started = time.monotonic()
    # rate() needs two scrapes inside its window, and the first commits and writes take a while
    answers = ask(live.address, board, values)
    while failures(answers) and time.monotonic() - started < 90:
        time.sleep(1.0)
        answers = ask(live.address, board, values)
    print(f"\n{len(answers)} dashboard queries against {live.address} in {live.namespace}:")
    for answer in answers:
        print(f"  {'ok  ' if answer.ok else 'FAIL'} {answer.series:3d} series  {answer.query.name}")
    print(f"checked {time.monotonic() - started:.1f} s after the traffic began")
    wrong = failures(answers)
    assert not wrong, "queries without series:\n" + "\n".join(map(str, wrong))
    assert not live.traffic.problems, live.traffic.problems[:5]
    assert set(live.traffic.statuses["ingest"]) == {202}, live.traffic.statuses
    assert set(live.traffic.statuses["predict"]) <= {200, 404}, live.traffic.statuses


def test_every_metric_the_dashboard_names_has_series_of_the_services(live: LiveStack) -> None:
    """A misspelled metric inside ``a or 0 * b`` still lets the query answer; not this."""
    missing = [
        name
        for name in sorted(dashboard.metric_names(dashboard.load()))
        if not prometheus_query(
            live.address, f'count({{__name__="{name}", namespace="{live.namespace}"}})'
        )
    ]
    assert not missing, f"no series of {missing} in {live.namespace}"


def test_the_namespace_variable_offers_the_namespace(live: LiveStack) -> None:
    for metric, label in dashboard.variable_queries(dashboard.load()):
        # what Grafana's label_values(metric, label) asks Prometheus
        response = httpx.get(
            f"{live.address}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
        )
        assert live.namespace in response.json()["data"]


def test_a_misspelled_metric_makes_its_panel_fail(live: LiveStack) -> None:
    """The check above has teeth: one wrong name in the JSON and its panel answers nothing."""
    text = dashboard.DASHBOARD.read_text().replace(
        "inference_score_bucket", "inference_scores_bucket"
    )
    values = grafana_variables(live.namespace, INTERVAL_SECONDS)
    wrong = failures(ask(live.address, dashboard.load(text), values))
    assert {answer.query.title for answer in wrong} == {
        "Score distribution",
        "Score quantiles by model version",
    }


#: How long the traffic has run when the picture is drawn.
PICTURE_SECONDS = 60.0
#: The panels drawn in the picture, by title.
MAIN_PANELS = (
    "Requests per second by model version",
    "Latency p50 / p99 by model version",
    "Candidate share of answered requests",
    "Error rate by model version",
    "Feature age at scoring (p50 / p99)",
    "Event-to-feature delay (p50 / p99)",
    "Consumer lag (records)",
    "Snapshot freshness",
)


def test_main_panels_as_a_picture(live: LiveStack, tmp_path: Path) -> None:
    """Every main panel's query over the run has points, and they are drawn. With
    ``FRAUDSTACK_DASHBOARD_PNG`` set, after a minute of traffic into that file (a steady state
    rather than a start); otherwise at once, into a temporary file."""
    destination = os.environ.get("FRAUDSTACK_DASHBOARD_PNG")
    if destination:
        time.sleep(max(0.0, PICTURE_SECONDS - (time.time() - live.traffic.started)))
    path = Path(destination) if destination else tmp_path / "dashboard.png"
    # the range a person would look at: the whole run, one point per scrape
    values = grafana_variables(live.namespace, SCRAPE_SECONDS)
    end = time.time()
    queries = [q for q in dashboard.queries(dashboard.load()) if q.title in MAIN_PANELS]
    results = {
        query: prometheus_query(
            live.address,
            dashboard.substitute(query.expr, values),
            start=f"{live.traffic.started:.3f}",
            end=f"{end:.3f}",
            step=f"{SCRAPE_SECONDS:g}",
        )
        for query in queries
    }
    for title in MAIN_PANELS:
        points = [
            item["values"]
            for query, series in results.items()
            if query.title == title
            for item in series
        ]
        assert any(points), f"panel {title!r} has no points over the run"
    draw(path, results, live.traffic.started)
    assert path.stat().st_size > 10_000
    print(f"\nthe main panels over {end - live.traffic.started:.0f} s: {path}")


#: Grafana's unit ids of the drawn panels, as axis labels.
UNIT_NAMES = {"reqps": "requests/s", "s": "seconds", "percentunit": "share", "short": "records"}


def board_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard.panels(dashboard.load()) if panel["type"] == "timeseries"]


def legend(template: str, labels: Mapping[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def draw(
    path: Path, results: Mapping[dashboard.PanelQuery, list[dict[str, Any]]], start: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {panel["title"]: panel["fieldConfig"]["defaults"]["unit"] for panel in board_panels()}
    figure, axes = plt.subplots(4, 2, figsize=(13, 13), sharex=True)
    for axis, title in zip(axes.flat, MAIN_PANELS, strict=True):
        if units[title] == "s":  # sub-millisecond medians beside p99s a hundred times longer
            axis.set_yscale("log")
        axis.set_ylabel(UNIT_NAMES.get(units[title], ""))
        for query, series in results.items():
            if query.title != title:
                continue
            for item in series:
                points = [(float(t) - start, float(v)) for t, v in item["values"]]
                axis.plot(*zip(*points, strict=True), label=legend(query.legend, item["metric"]))
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    for axis in axes[-1]:
        axis.set_xlabel("seconds since the traffic began")
    figure.suptitle("fraudstack dashboard: its queries against the local stack's Prometheus")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
