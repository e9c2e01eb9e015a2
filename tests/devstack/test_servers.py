"""The local stack's servers are real and answer real clients."""

from __future__ import annotations

import time
import uuid

import httpx
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, start_http_server

from fraudstack.adapters.scrape import register_target
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.process import free_port
from fraudstack.settings import CommonSettings
from support.waiting import eventually


async def test_kafka_produce_then_consume(kafka_bootstrap: str) -> None:
    topic = f"probe-{uuid.uuid4().hex[:8]}"
    sent = [f"event-{index}".encode() for index in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in sent:
            await producer.send_and_wait(topic, value, key=b"customer-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"probe-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.extend(record.value for record in records if record.value is not None)
    finally:
        await consumer.stop()
    # One key, so one partition, so the order is kept.
    assert received == sent


def test_redis_hash_roundtrip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = "fs:{customer:probe}"
    client.delete(key)
    client.hset(key, mapping={"customer_nb_tx_1d": 3, "_event_ts": 1_522_540_800_000})
    client.expire(key, 60)
    assert client.hgetall(key) == {b"customer_nb_tx_1d": b"3", b"_event_ts": b"1522540800000"}
    assert 0 < client.ttl(key) <= 60


def test_prometheus_scrapes_a_registered_target(prometheus: ServerInfo) -> None:
    registry = CollectorRegistry()
    Counter("probe_events_total", "events seen by the probe", registry=registry).inc(7)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    name = f"probe-{uuid.uuid4().hex[:6]}"
    try:
        register_target(prometheus["targets_dir"], name, f"127.0.0.1:{port}")
        query = f'probe_events_total{{service="{name}"}}'
        up = f'up{{service="{name}"}}'
        values = _wait_for_query(prometheus["address"], [up, query])
        assert values == [1.0, 7.0]
    finally:
        server.shutdown()
        thread.join()


def test_settings_find_the_devstack(devstack: dict[str, ServerInfo]) -> None:
    settings = CommonSettings()
    assert settings.redis_url == devstack["redis"]["address"]
    assert settings.kafka_bootstrap == devstack["kafka"]["address"]


def _wait_for_query(prometheus_url: str, queries: list[str], timeout: float = 30) -> list[float]:
    """Every query's value, once each has a result."""

    def values() -> list[float] | None:
        found = []
        for query in queries:
            response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query})
            result = response.json()["data"]["result"]
            if result:
                found.append(float(result[0]["value"][1]))
        return found if len(found) == len(queries) else None

    return eventually(values, f"a result for each of {queries}", timeout, interval=0.5)
