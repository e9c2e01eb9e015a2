"""The ingestion API against the real broker: 202 only once Kafka has the events, 422 says why."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from support.ingest import running_ingest

TOPIC_PREFIX = f"ingest-{uuid.uuid4().hex[:6]}."
EVENT = {
    "txn_id": "t-1",
    "ts": 1_522_540_800_000,
    "customer_id": "42",
    "terminal_id": "7",
    "amount": 57.16,
}


@pytest.fixture(scope="module")
def ingest_url(kafka_bootstrap: str) -> Iterator[str]:
    with running_ingest(kafka_bootstrap, TOPIC_PREFIX) as url:
        yield url


def test_single_and_batch_are_acknowledged(ingest_url: str) -> None:
    single = httpx.post(f"{ingest_url}/v1/transactions", json=EVENT)
    assert single.status_code == 202
    assert single.json() == {"accepted": 1}
    batch = [{**EVENT, "txn_id": f"t-{index}", "customer_id": str(index)} for index in range(2, 52)]
    response = httpx.post(f"{ingest_url}/v1/transactions", json=batch)
    assert response.status_code == 202
    assert response.json() == {"accepted": 50}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": -1}, "amount"),
        ({"ts": "2018-04-01T00:00:00Z"}, "ts"),
        ({"ts": 1_522_540_800}, "ts"),  # seconds, not milliseconds
        ({"customer_id": ""}, "customer_id"),
        ({"amount": 1.234}, "amount"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_malformed_events_get_422_with_reasons(
    ingest_url: str, change: dict[str, object], field: str
) -> None:
    response = httpx.post(f"{ingest_url}/v1/transactions", json={**EVENT, **change})
    assert response.status_code == 422
    assert field in orjson.dumps(response.json()).decode()


def test_a_batch_with_one_bad_event_produces_nothing(ingest_url: str) -> None:
    batch = [{**EVENT, "txn_id": "bad-batch-1"}, {**EVENT, "txn_id": "bad-batch-2", "amount": -5}]
    response = httpx.post(f"{ingest_url}/v1/transactions", json=batch)
    assert response.status_code == 422


async def test_acknowledged_events_are_on_the_topic(ingest_url: str, kafka_bootstrap: str) -> None:
    httpx.post(f"{ingest_url}/v1/transactions", json={**EVENT, "txn_id": "on-topic"})
    consumer = AIOKafkaConsumer(
        f"{TOPIC_PREFIX}transactions",
        bootstrap_servers=kafka_bootstrap,
        group_id=f"check-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: list[dict[str, object]] = []
    try:
        for _ in range(40):
            for records in (await consumer.getmany(timeout_ms=250)).values():
                seen += [orjson.loads(record.value) for record in records]
            if any(event["txn_id"] == "on-topic" for event in seen):
                break
    finally:
        await consumer.stop()
    on_topic = [event for event in seen if event["txn_id"] == "on-topic"]
    assert on_topic == [{**EVENT, "txn_id": "on-topic"}]
    assert not any(str(event["txn_id"]).startswith("bad-batch") for event in seen)


def test_with_an_api_key_configured_only_requests_that_carry_it_get_in(
    kafka_bootstrap: str,
) -> None:
    with running_ingest(kafka_bootstrap, TOPIC_PREFIX, FRAUDSTACK_INGEST_API_KEY="s3cret") as url:
        event = {**EVENT, "txn_id": "keyed"}
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cre"}):
            refused = httpx.post(f"{url}/v1/transactions", json=event, headers=headers)
            assert refused.status_code == 401
            assert "API key" in refused.json()["detail"]
        # the key is checked before the body: no hint about the body without it
        assert httpx.post(f"{url}/v1/transactions", content=b"{").status_code == 401
        accepted = httpx.post(f"{url}/v1/transactions", json=event, headers={"X-API-Key": "s3cret"})
        assert accepted.status_code == 202
        assert httpx.get(f"{url}/readyz").status_code == 200  # probes need no key
        assert "ingest_events_total" in httpx.get(f"{url}/metrics").text
