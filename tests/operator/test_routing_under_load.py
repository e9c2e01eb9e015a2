"""A running inference service follows the published routing while under load.

Real gunicorn workers (two), a real Redis holding 10,000 customers, the two real models of
``tests/serve``. Eight request loops keep asking ``GET /predict/{customer}`` for random customers
while the routing at the service's key goes from stable only, to the candidate for 10 % of
customers, to 50 %, each published as the operator publishes it
(:class:`fraudmodel_operator.publish.RoutingPublisher`). Then:

* not one request failed or went unanswered across the switches;
* once every worker has the last routing, each of the 10,000 customers is asked once: every
  answer comes from the model the customer's hash bucket names, and the candidate's share of the
  answers is within ±2 points of 50;
* a customer asked again gets the same model (sticky A/B).

The second test closes the loop with the real operator: a FraudModel applied through the real
API server (the operator in this process, ``kopf.testing.KopfRunner``, watching a namespace of
its own and publishing to the service's Redis and key) moves the running service's answers,
still under load and still without a failed request. It needs no Prometheus: a FraudModel
without rollout steps publishes its share as it stands.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis.asyncio
from kopf.testing import KopfRunner
from kubernetes import client
from operator_support import (
    GROUP,
    PLURAL,
    VERSION,
    delete_and_wait,
    fraud_model,
    running_operator,
)

from fraudmodel_operator.publish import Outcome, RoutingPublisher
from fraudstack.devstack.base import ServerInfo
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.routing import RoutingDocument
from fraudstack.serve.models import BUCKETS, customer_bucket
from support.crowd import CUSTOMERS
from support.serving import CANDIDATE, STABLE, RunningService
from support.waiting import eventually_async

LOOPS = 8
SOURCE = "fraudstack/load-test"
#: Time under load on each routing before the next switch.
PHASE_SECONDS = 1.5
TOLERANCE_POINTS = 2.0


@dataclass
class Load:
    """Request loops over random customers; every answer and every failure is kept."""

    client: httpx.AsyncClient
    customers: list[str]
    answers: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def loop(self, seed: int) -> None:
        chooser = random.Random(seed)
        while not self.stop.is_set():
            customer = chooser.choice(self.customers)
            try:
                response = await self.client.get(f"/predict/{customer}")
            except httpx.HTTPError as exc:  # a dropped connection or a timeout: a failure too
                self.failures.append(f"{customer}: {exc!r}")
                continue
            if response.status_code != 200:
                self.failures.append(f"{customer}: {response.status_code} {response.text[:200]}")
                continue
            self.answers.append((customer, response.json()["model_version"]))

    def candidate_answers(self) -> int:
        return sum(1 for _, version in self.answers if version == CANDIDATE)


def document(candidate_share: float, generation: int) -> RoutingDocument:
    return RoutingDocument(
        stable=STABLE,
        candidate=CANDIDATE if candidate_share else None,
        candidate_share=candidate_share,
        source=SOURCE,
        generation=generation,
        updated_at=int(time.time() * 1000),
    )


def expected_version(customer: str, candidate_share: float) -> str:
    cutoff = round(candidate_share * BUCKETS / 100)
    return CANDIDATE if customer_bucket(customer) < cutoff else STABLE


async def every_worker_serves(url: str, customers: list[str], version: str) -> bool:
    """Each of 24 requests on a connection of its own (so the workers share them) answered by
    ``version``: a worker still on the old routing would answer one of them with the other."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as fresh:
        for customer in customers[:24]:
            response = await fresh.get(f"/predict/{customer}")
            if response.status_code != 200 or response.json()["model_version"] != version:
                return False
    return True


@pytest.fixture
async def publisher(
    crowd_store: PrivateRedis, serve_routing_key: str
) -> AsyncIterator[RoutingPublisher]:
    connection = redis.asyncio.Redis.from_url(crowd_store.url)
    try:
        yield RoutingPublisher(connection, serve_routing_key)
    finally:
        await connection.delete(serve_routing_key)
        await connection.aclose()


async def test_switching_routing_under_load_fails_nothing_and_splits_customers_as_published(
    service: RunningService, publisher: RoutingPublisher, crowd: list[str]
) -> None:
    assert len(crowd) == CUSTOMERS
    # customers the candidate scores at 50 % but not at 10 %: they show the last switch
    switched = [c for c in crowd if BUCKETS // 10 <= customer_bucket(c) < BUCKETS // 2]
    limits = httpx.Limits(max_connections=LOOPS, max_keepalive_connections=LOOPS)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=10) as client:
        load = Load(client, crowd)
        loops = [asyncio.create_task(load.loop(seed)) for seed in range(LOOPS)]
        try:
            for generation, share in enumerate((0.0, 10.0, 50.0), start=1):
                result = await publisher.publish(document(share, generation))
                assert result.outcome is Outcome.PUBLISHED
                await asyncio.sleep(PHASE_SECONDS)
                if share == 10.0:

                    async def candidate_answered() -> bool:
                        return load.candidate_answers() > 0

                    await eventually_async(
                        candidate_answered, "the candidate to answer under load", timeout=15
                    )

            async def last_switch_seen() -> bool:
                return await every_worker_serves(service.url, switched, CANDIDATE)

            await eventually_async(
                last_switch_seen, "every worker to serve the last routing", timeout=15
            )
            await asyncio.sleep(PHASE_SECONDS / 3)  # and some more load on it
        finally:
            load.stop.set()
            await asyncio.gather(*loops)
        under_load = len(load.answers)
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
        assert under_load > 500, f"only {under_load} requests in {time.monotonic() - started:.0f}s"
        # every answer came from a routing that was published: the candidate only ever scored
        # customers inside its largest share
        strays = [
            c for c, v in load.answers if v == CANDIDATE and customer_bucket(c) >= BUCKETS // 2
        ]
        assert strays == []

        # each customer once, on the last routing
        versions = await ask_all(client, crowd)
        wrong = [c for c in crowd if versions[c] != expected_version(c, 50.0)]
        assert wrong == [], f"{len(wrong)} customers got the other model, e.g. {wrong[:5]}"
        share = 100 * sum(1 for v in versions.values() if v == CANDIDATE) / len(crowd)
        assert abs(share - 50.0) <= TOLERANCE_POINTS, f"candidate share {share:.2f} %"

        # sticky: asked again, the same customer gets the same model
        sample = random.Random(7).sample(crowd, 500)
        again = await ask_all(client, sample)
        assert {c: again[c] for c in sample} == {c: versions[c] for c in sample}
    print(
        f"\n{under_load} requests under load, 0 failed; candidate share of {len(crowd)} "
        f"customers {share:.2f} %; {time.monotonic() - started:.1f}s"
    )


async def ask_all(client: httpx.AsyncClient, customers: list[str]) -> dict[str, str]:
    """The version that answered each customer, ``LOOPS`` requests at a time; all must be 200."""
    versions: dict[str, str] = {}
    failures: list[str] = []
    queue = iter(customers)

    async def worker() -> None:
        for customer in queue:
            response = await client.get(f"/predict/{customer}")
            if response.status_code != 200:
                failures.append(f"{customer}: {response.status_code}")
                continue
            versions[customer] = response.json()["model_version"]

    await asyncio.gather(*(worker() for _ in range(LOOPS)))
    assert failures == [], f"{len(failures)} failed: {failures[:5]}"
    return versions


@pytest.fixture(scope="module")
def serve_namespace(crds: list[str], create_namespace: Callable[[str], str]) -> str:
    return create_namespace("fraudmodel-serve")


@pytest.fixture(scope="module")
def serving_operator(
    kube: ServerInfo,
    serve_namespace: str,
    crowd_store: PrivateRedis,
    registry_root: str,
    serve_routing_key: str,
) -> Iterator[KopfRunner]:
    """The operator, for this module's namespace only, publishing where the service reads."""
    with running_operator(
        str(kube["kubeconfig"]),
        namespace=serve_namespace,
        redis_url=crowd_store.url,
        kafka_bootstrap="unused:9092",
        prometheus_url="http://127.0.0.1:9",  # never asked: no rollout steps, no gates
        model_registry_uri=registry_root,
        routing_key=serve_routing_key,
    ) as runner:
        yield runner


async def test_the_service_follows_a_fraudmodel_applied_through_the_api_server(
    service: RunningService,
    serving_operator: KopfRunner,
    objects: client.CustomObjectsApi,
    serve_namespace: str,
    crowd: list[str],
) -> None:
    name = "scorer-under-load"
    switched = [c for c in crowd if BUCKETS // 10 <= customer_bucket(c) < BUCKETS // 2]
    sample = random.Random(11).sample(crowd, 1_000)
    body = fraud_model(name, stableVersion=STABLE, candidateVersion=CANDIDATE, candidateShare=50)
    limits = httpx.Limits(max_connections=LOOPS, max_keepalive_connections=LOOPS)
    async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=10) as http:
        load = Load(http, crowd)
        loops = [asyncio.create_task(load.loop(seed)) for seed in range(LOOPS)]
        try:
            await asyncio.to_thread(
                objects.create_namespaced_custom_object,
                GROUP,
                VERSION,
                serve_namespace,
                PLURAL,
                body,
                field_validation="Strict",
            )

            async def on_candidate() -> bool:
                return await every_worker_serves(service.url, switched, CANDIDATE)

            await eventually_async(on_candidate, "the service to follow the FraudModel", timeout=30)
            versions = await ask_all(http, sample)
            assert versions == {c: expected_version(c, 50.0) for c in sample}

            await asyncio.to_thread(
                objects.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                serve_namespace,
                PLURAL,
                name,
                {"spec": {"candidateShare": 10}},
            )

            async def back_on_stable() -> bool:
                return await every_worker_serves(service.url, switched, STABLE)

            await eventually_async(
                back_on_stable, "the service to follow the new share", timeout=30
            )
            versions = await ask_all(http, sample)
            assert versions == {c: expected_version(c, 10.0) for c in sample}
        finally:
            load.stop.set()
            await asyncio.gather(*loops)
            await asyncio.to_thread(delete_and_wait, objects, serve_namespace, name)
    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
    assert len(load.answers) > 100
