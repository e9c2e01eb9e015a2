"""The stream on a real Redis Cluster of three masters equals the offline computation, and the
inference service reads it back: the same code, only the URL differs (``redis+cluster://``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient

from fraudstack.adapters.offline_store import OfflineStore
from fraudstack.adapters.redis_clients import redis_client
from fraudstack.adapters.redis_cluster import ClusterLink
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.bulk import load_table
from fraudstack.aggregate.service import Aggregator
from fraudstack.aggregate.settings import AggregateSettings
from fraudstack.consistency import compare
from fraudstack.devstack.redis_server import PrivateRedisCluster
from fraudstack.features.definitions import (
    CUSTOMER_FEATURES,
    DEFAULT_ALLOWED_LATENESS_MS,
    FEATURE_NAMES,
    TRANSACTION_FEATURES,
)
from fraudstack.features.offline import compute_features
from fraudstack.ingest.replay import produce_table
from fraudstack.scoring import load_scorer
from fraudstack.serve.app import create_app
from fraudstack.serve.lookup import FeatureLookup
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from fraudstack.snapshot.online_features import snapshot_online_features
from support.serving import STABLE, serve_settings

from .conftest import Month

IDLE_S = 6.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    servers = PrivateRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def small_month() -> Month:
    """About 8,000 transactions: 120 customers, 240 terminals, 35 days, with chargebacks."""
    table = simulate(SimulationConfig(customers=120, terminals=240, days=35, seed=23))
    events = table.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    return Month(events, make_labels(table, seed=23))


@pytest.fixture
def cluster_settings(
    cluster: PrivateRedisCluster, kafka_bootstrap: str
) -> Iterator[AggregateSettings]:
    client = redis_client(cluster.url)
    client.flushall()
    yield AggregateSettings(
        redis_url=cluster.url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"test-{uuid.uuid4().hex[:8]}.",
        aggregate_group_id=f"aggregate-{uuid.uuid4().hex[:8]}",
        aggregate_metrics_port=0,
    )
    client.flushall()
    client.close()


def _newest_scorable(transactions: pa.Table) -> dict[str, dict[str, Any]]:
    """Each customer's newest transaction whose terminal windows the store still holds whole
    (see tests/serve/test_app.py: a terminal keeps 37 days plus the lateness behind its newest)."""
    newest: dict[str, dict[str, Any]] = {}
    terminal_newest: dict[str, int] = {}
    for row in transactions.select(["txn_id", "ts", "customer_id", "terminal_id"]).to_pylist():
        current = newest.get(row["customer_id"])
        if current is None or (row["ts"], row["txn_id"]) > (current["ts"], current["txn_id"]):
            newest[row["customer_id"]] = row
        terminal = row["terminal_id"]
        terminal_newest[terminal] = max(terminal_newest.get(terminal, 0), row["ts"])
    return {
        customer: row
        for customer, row in newest.items()
        if row["ts"] >= terminal_newest[row["terminal_id"]] - DEFAULT_ALLOWED_LATENESS_MS
    }


async def test_month_streamed_into_the_cluster_equals_offline_and_serves(
    cluster_settings: AggregateSettings,
    cluster: PrivateRedisCluster,
    small_month: Month,
    registry_root: str,
) -> None:
    settings = cluster_settings
    await produce_table(
        settings.kafka_bootstrap,
        small_month.transactions,
        small_month.labels,
        progress=False,
        topics=settings.topics,
    )
    processed = await Aggregator(settings).run(stop_after_idle_s=IDLE_S)
    assert processed == len(small_month.transactions) + len(small_month.labels)

    # the entities spread over every master
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            assert node.dbsize() > 100

    report = await compare(settings.redis_url, small_month.transactions, small_month.labels)
    assert report.ok, report.summary()
    customers = len(set(small_month.transactions["customer_id"].to_pylist()))
    per_customer = len(TRANSACTION_FEATURES + CUSTOMER_FEATURES) + len(FEATURE_NAMES)
    assert report.compared_values >= customers * per_customer

    # the serve lookup (GET /predict's read) finds each customer's newest transaction's features
    offline = compute_features(small_month.transactions, small_month.labels)
    position = {txn: index for index, txn in enumerate(offline["txn_id"].to_pylist())}
    newest = _newest_scorable(small_month.transactions)
    assert len(newest) >= 50
    link = RedisLink(settings.redis_url, timeout=5.0)
    assert isinstance(link, ClusterLink)
    try:
        lookup = FeatureLookup(link)
        for customer, row in newest.items():
            last, scored = await lookup.newest(customer)
            assert last.txn_id == row["txn_id"]
            expected = [offline[name][position[row["txn_id"]]].as_py() for name in FEATURE_NAMES]
            assert list(scored.features.values()) == pytest.approx(expected, rel=1e-9)
    finally:
        await link.close()

    # and the service itself, on the cluster URL, answers both endpoints
    scorer = load_scorer(registry_root, STABLE)
    app = create_app(serve_settings(settings.redis_url, registry_root))
    with TestClient(app, raise_server_exceptions=False) as client:
        for customer in sorted(newest)[:20]:
            response = client.get(f"/predict/{customer}")
            assert response.status_code == 200, response.text
            row = position[newest[customer]["txn_id"]]
            vector = [offline[name][row].as_py() for name in FEATURE_NAMES]
            assert response.json()["fraud_probability"] == pytest.approx(
                scorer.score(vector), abs=1e-6
            )
            event = {**newest[customer], "txn_id": f"probe-{customer}", "amount": 12.5}
            event["ts"] += 60_000
            scored = client.post("/v1/score", json=event)
            assert scored.status_code == 200, scored.text
            assert scored.json()["txn_id"] == event["txn_id"]


async def test_the_bulk_loader_fills_the_cluster_as_the_stream_does(
    cluster_settings: AggregateSettings, small_month: Month, tmp_path: Path
) -> None:
    """The bulk loader (redis-py's RedisCluster) ends where the stream would, and the snapshot
    job (SCAN over every master) reads every customer back."""
    customers, terminals = load_table(
        cluster_settings.redis_url, small_month.transactions, small_month.labels
    )
    assert customers == len(set(small_month.transactions["customer_id"].to_pylist()))
    assert terminals == len(set(small_month.transactions["terminal_id"].to_pylist()))
    report = await compare(cluster_settings.redis_url, small_month.transactions, small_month.labels)
    assert report.ok, report.summary()
    path, rows = await snapshot_online_features(
        cluster_settings.redis_url, OfflineStore(str(tmp_path))
    )
    assert path is not None and rows == customers
