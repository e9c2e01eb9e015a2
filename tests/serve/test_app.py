"""The service in-process (real Redis, real models): answers, errors, health, OpenAPI, metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.features.definitions import DEFAULT_ALLOWED_LATENESS_MS, FEATURE_NAMES
from fraudstack.scoring import load_scorer
from fraudstack.serve.app import create_app
from fraudstack.serve.metrics import ServeMetrics
from fraudstack.serve.routes import Service, add_routes
from fraudstack.serve.schemas import Prediction, TransactionScore
from support.serving import STABLE, serve_settings


@pytest.fixture(scope="module")
def client(store: PrivateRedis, registry_root: str) -> Iterator[TestClient]:
    app = create_app(serve_settings(store.url, registry_root))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def exactly_scorable(transactions: pa.Table) -> dict[str, dict[str, Any]]:
    """Each customer's newest transaction, where the store still holds all its windows need.

    The store keeps a terminal's events for 37 days plus the allowed lateness behind the
    terminal's newest event; a customer's newest transaction older than that by more than the
    lateness would find the far end of its 30-day terminal window pruned.
    """
    newest: dict[str, dict[str, Any]] = {}
    terminal_newest: dict[str, int] = {}
    for row in transactions.select(["txn_id", "ts", "customer_id", "terminal_id"]).to_pylist():
        current = newest.get(row["customer_id"])
        if current is None or (row["ts"], row["txn_id"]) > (current["ts"], current["txn_id"]):
            newest[row["customer_id"]] = row
        terminal_newest[row["terminal_id"]] = max(
            terminal_newest.get(row["terminal_id"], 0), row["ts"]
        )
    return {
        customer: row
        for customer, row in newest.items()
        if row["ts"] >= terminal_newest[row["terminal_id"]] - DEFAULT_ALLOWED_LATENESS_MS
    }


def test_predict_answers_the_reference_shape_with_the_newest_transaction_scored(
    client: TestClient, transactions: pa.Table, offline_features: pa.Table, registry_root: str
) -> None:
    scorer = load_scorer(registry_root, STABLE)
    position = {txn: index for index, txn in enumerate(offline_features["txn_id"].to_pylist())}
    newest = exactly_scorable(transactions)
    assert len(newest) >= 5
    for customer in sorted(newest)[:25]:
        response = client.get(f"/predict/{customer}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert list(body) == [
            "user_id",
            "fraud_probability",
            "risk_level",
            "latency_ms",
            "model_version",
        ]
        Prediction.model_validate(body)
        assert body["user_id"] == customer and body["model_version"] == STABLE
        row = position[newest[customer]["txn_id"]]
        vector = [offline_features[name][row].as_py() for name in FEATURE_NAMES]
        assert body["fraud_probability"] == pytest.approx(scorer.score(vector), abs=1e-6)
        assert body["latency_ms"] > 0


def test_score_answers_the_same_shape_plus_the_transaction_id(
    client: TestClient, transactions: pa.Table
) -> None:
    row = transactions.slice(transactions.num_rows - 1, 1).to_pylist()[0]
    event = {
        "txn_id": "new-1",
        "ts": row["ts"] + 60_000,
        "customer_id": row["customer_id"],
        "terminal_id": row["terminal_id"],
        "amount": 12.34,
    }
    response = client.post("/v1/score", json=event)
    assert response.status_code == 200
    body = TransactionScore.model_validate(response.json())
    assert body.txn_id == "new-1" and body.user_id == row["customer_id"]
    assert 0.0 <= body.fraud_probability <= 1.0


def test_a_first_transaction_of_an_unseen_customer_is_scored(client: TestClient) -> None:
    event = {
        "txn_id": "first",
        "ts": 1_530_000_000_000,
        "customer_id": "never-seen",
        "terminal_id": "never-seen-either",
        "amount": 5.0,
    }
    assert client.post("/v1/score", json=event).status_code == 200


def test_an_unknown_customer_is_a_404_with_a_reason(client: TestClient) -> None:
    response = client.get("/predict/nobody-like-this")
    assert response.status_code == 404
    assert "nobody-like-this" in response.json()["detail"]
    # a request that failed is no longer counted in flight (the next one scores at once)
    assert client.app.state.service.in_flight == 0


@pytest.mark.parametrize(
    "body",
    [
        {"txn_id": "x"},
        {"txn_id": "x", "ts": "yesterday", "customer_id": "1", "terminal_id": "2", "amount": 1},
        {
            "txn_id": "x",
            "ts": 1_530_000_000_000,
            "customer_id": "1",
            "terminal_id": "2",
            "amount": -3,
        },
        {
            "txn_id": "x",
            "ts": 1_530_000_000_000,
            "customer_id": "1",
            "terminal_id": "2",
            "amount": 1,
            "surprise": True,
        },
    ],
)
def test_a_malformed_body_is_a_422_listing_the_problems(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    answer = response.json()
    assert answer["detail"] == "invalid request" and answer["errors"]


def test_a_body_that_is_not_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/v1/score", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0].startswith("body: JSON decode error")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_a_422_that_says_so(
    client: TestClient, content_type: str | None
) -> None:
    event = {"txn_id": "t", "ts": 1, "customer_id": "c", "terminal_id": "t", "amount": 1.0}
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/score", content=orjson.dumps(event), headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"] == ["body: send JSON (application/json)"]


def test_an_overlong_customer_id_is_a_422(client: TestClient) -> None:
    assert client.get("/predict/" + "9" * 65).status_code == 422


def test_health_readiness_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["routing"]["stable"] == STABLE
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict/{user_id}", "/v1/score", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "404" in paths["/predict/{user_id}"]["get"]["responses"]
    # the scoring routes skip FastAPI's request handler, not its description of them
    (parameter,) = paths["/predict/{user_id}"]["get"]["parameters"]
    assert parameter["schema"]["maxLength"] == 64
    body = paths["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/Transaction")


def test_metrics_count_requests_by_model_and_outcome(client: TestClient) -> None:
    client.get("/predict/nobody")
    text = client.get("/metrics").text
    assert f'inference_requests_total{{model_version="{STABLE}",outcome="not_found"}}' in text
    assert f'inference_requests_total{{model_version="{STABLE}",outcome="ok"}}' in text
    assert 'inference_latency_seconds_bucket{le="0.0005"' in text
    assert "feature_age_seconds_count" in text
    assert "online_store_unavailable_total" in text


class BrokenScorer:
    feature_names = FEATURE_NAMES

    def __init__(self, version: str = "broken") -> None:
        self.version = version

    def score(self, vector: Any) -> float:
        raise RuntimeError("a bug, with a secret in its message")

    def score_many(self, matrix: Any) -> list[float]:
        raise RuntimeError("a bug, with a secret in its message")


def test_an_unexpected_error_is_a_500_without_a_stack_trace(
    store: PrivateRedis, registry_root: str, transactions: pa.Table
) -> None:
    app = create_app(
        serve_settings(store.url, registry_root), loader=lambda root, version: BrokenScorer()
    )
    customer = transactions["customer_id"][0].as_py()
    with TestClient(app, raise_server_exceptions=False) as broken:
        response = broken.get(f"/predict/{customer}")
        metrics = broken.get("/metrics").text
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret" not in response.text and "Traceback" not in response.text
    # counted, so a dashboard sees the failures
    assert 'inference_requests_total{model_version="broken",outcome="error"} 1.0' in metrics
    assert app.state.service.in_flight == 0


def test_a_wrong_method_is_a_405_that_says_which_are_allowed(client: TestClient) -> None:
    response = client.post("/predict/someone")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json() == {"detail": "Method Not Allowed"}


def test_a_scoring_route_with_something_to_solve_is_refused_when_built() -> None:
    # an app-wide dependency (an authentication check, say) would be skipped by a direct route
    app = FastAPI(dependencies=[Depends(lambda: None)])
    with pytest.raises(TypeError, match=re.escape("/predict/{user_id}: a direct route reads only")):
        add_routes(app, Service(ServeMetrics()))


async def test_a_client_gone_mid_body_is_a_quiet_400(
    store: PrivateRedis, registry_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(serve_settings(store.url, registry_root))
    parts = [
        {"type": "http.request", "body": b'{"txn_id": "t', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return parts.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/score",
        "raw_path": b"/v1/score",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert orjson.loads(sent[1]["body"]) == {"detail": "there was an error reading the body"}
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
