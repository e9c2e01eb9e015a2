"""Broker failure during ingestion, on real Kafka clusters of three nodes and of one.

Events go through the real ingestion API (a subprocess) at a steady rate while a broker dies;
a real consumer of the project (the snapshot consumer, writing Parquet) reads the topic the whole
time. Afterwards every event the API acknowledged (202) must be in Parquet: nothing
acknowledged is lost, and the consumer got there by itself.

* Three nodes (replication factor 3, ``min.insync.replicas=2``): ``kill -9`` the node that leads
  most of the topic's partitions. Two of three controllers and two in-sync replicas remain, so
  there is a quorum throughout: no request may get 503, only a slower acknowledgement while the
  dead broker's partitions move to new leaders.
* One node: stop it and start it again. Requests get 503 with a reason while it is away, and
  only then.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from fraudstack.adapters.offline_store import EVENTS, OfflineStore
from fraudstack.devstack.base import Context, ServerInfo
from fraudstack.devstack.kafka_server import KafkaServer, start_node, stop_node
from fraudstack.devstack.process import stop
from fraudstack.paths import cache_dir
from fraudstack.snapshot.consumer import SnapshotConfig, SnapshotConsumer
from support.ingest import running_ingest
from support.waiting import eventually

pytestmark = pytest.mark.faults

RATE = 20  # requests a second
EVENTS_PER_REQUEST = 10
START_MS = 1_530_000_000_000


@dataclass
class Request:
    txn_ids: list[str]
    sent_at: float
    status: int = 0
    answered_at: float = 0.0
    reason: str = ""


@dataclass
class Load:
    """Requests sent at a steady rate, each answered (or failed) on its own."""

    url: str
    requests: list[Request] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, seconds: float) -> None:
        """Send for ``seconds`` or until :meth:`stop`; return once every request is answered."""
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            tasks = []
            started = time.monotonic()
            for number in range(int(seconds * RATE)):
                await asyncio.sleep(max(0.0, started + number / RATE - time.monotonic()))
                if self.stopping.is_set():
                    break
                tasks.append(asyncio.create_task(self._send(client, number)))
            await asyncio.gather(*tasks)

    def stop(self) -> None:
        self.stopping.set()

    async def _send(self, client: httpx.AsyncClient, number: int) -> None:
        ids = [f"r{number}-{index}" for index in range(EVENTS_PER_REQUEST)]
        request = Request(ids, time.monotonic())
        self.requests.append(request)
        events = [
            {
                "txn_id": txn_id,
                "ts": START_MS + number * 1000 + index,
                "customer_id": str(number % 97),
                "terminal_id": str(index),
                "amount": 12.5,
            }
            for index, txn_id in enumerate(ids)
        ]
        try:
            response = await client.post("/v1/transactions", json=events)
            request.status = response.status_code
            if response.status_code != 202:
                request.reason = response.json().get("detail", "")
        except httpx.HTTPError as exc:
            request.reason = f"no answer: {exc!r}"
        request.answered_at = time.monotonic()

    def acknowledged(self) -> set[str]:
        return {
            txn for request in self.requests if request.status == 202 for txn in request.txn_ids
        }

    def by_status(self) -> Counter[int]:
        return Counter(request.status for request in self.requests)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerInfo]:
    """A Kafka cluster of ``request.param`` nodes of this test's own."""
    server = KafkaServer(brokers=request.param)
    context = Context(state_dir=tmp_path / "state", cache_dir=cache_dir())
    server.prepare(context)
    info = server.start(context)
    try:
        yield info
    finally:
        for node in info["nodes"]:
            stop(int(node["pid"]), node["properties"])


async def leader_of_most_partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    leaders = Counter(partition["leader"] for partition in description["partitions"])
    replicas = {len(partition["replicas"]) for partition in description["partitions"]}
    assert replicas == {3}, f"the topic is not replicated three times: {description}"
    return leaders.most_common(1)[0][0]


def stored_ids(store: OfflineStore) -> list[str]:
    return (
        store.read(EVENTS, columns=["txn_id"])["txn_id"].to_pylist() if store.days(EVENTS) else []
    )


async def load_through_a_failure(
    info: ServerInfo, tmp_path: Path, kill: bool, down_seconds: float, ack_timeout_s: float
) -> tuple[Load, float, float, list[str]]:
    """Load for 8 s, take a node down for ``down_seconds``, start it, load for 15 s more once it
    answers. Returns the load, when the node went down and when it answered again, and what the
    consumer stored."""
    prefix = f"faults-{uuid.uuid4().hex[:6]}."
    store = OfflineStore(str(tmp_path / "offline"))
    with running_ingest(
        info["address"],
        prefix,
        tmp_path / "ingest.log",
        FRAUDSTACK_INGEST_ACK_TIMEOUT_S=str(ack_timeout_s),
    ) as url:
        snapshot = SnapshotConsumer(
            SnapshotConfig(
                bootstrap=info["address"],
                store_uri=store.root,
                group_id=f"{prefix}snapshot",
                transactions_topic=f"{prefix}transactions",
                labels_topic=f"{prefix}labels",
                dead_letter_topic=f"{prefix}transactions.dlq",
                flush_rows=500,
                flush_seconds=0.5,
            )
        )
        consuming = asyncio.create_task(snapshot.run())
        load = Load(url)
        loading = asyncio.create_task(load.run(3600))
        await asyncio.sleep(8)
        if len(info["nodes"]) == 3:
            victim_id = await leader_of_most_partitions(info["address"], f"{prefix}transactions")
        else:
            victim_id = 1
        (victim,) = [node for node in info["nodes"] if node["id"] == victim_id]
        down_at = time.monotonic()
        await asyncio.to_thread(stop_node, victim, kill)
        await asyncio.sleep(down_seconds)
        start_node(victim)
        server = KafkaServer(brokers=len(info["nodes"]))
        await asyncio.to_thread(eventually, lambda: server.answers(info), "the node back", 120)
        back_at = time.monotonic()
        await asyncio.sleep(15)
        load.stop()
        await loading
        acknowledged = load.acknowledged()
        await asyncio.to_thread(
            eventually,
            lambda: acknowledged <= set(stored_ids(store)),
            "every acknowledged event in Parquet",
            90,
            0.5,
        )
        snapshot.stop()
        await asyncio.wait_for(consuming, 60)
    return load, down_at, back_at, stored_ids(store)


def report(name: str, load: Load, stored: list[str]) -> None:
    sent = len(load.requests) * EVENTS_PER_REQUEST
    acknowledged = load.acknowledged()
    found = acknowledged & set(stored)
    duplicated = len(stored) - len(set(stored))
    slowest = max(request.answered_at - request.sent_at for request in load.requests)
    print(
        f"\n{name}: requests by status {dict(load.by_status())}; events sent {sent}, "
        f"acknowledged {len(acknowledged)}, found {len(found)}, stored {len(stored)} "
        f"(duplicated {duplicated}); slowest answer {slowest:.1f} s"
    )


@pytest.mark.parametrize("cluster", [3], indirect=True)
async def test_killing_the_leaders_broker_of_three_loses_nothing_and_refuses_nothing(
    cluster: ServerInfo, tmp_path: Path
) -> None:
    load, _, _, stored = await load_through_a_failure(
        cluster, tmp_path, kill=True, down_seconds=12, ack_timeout_s=15
    )
    report("3 brokers, leader killed", load, stored)
    assert load.acknowledged() <= set(stored)  # nothing acknowledged is lost
    refused = [request for request in load.requests if request.status != 202]
    assert not refused, f"a quorum was left, yet: {[(r.status, r.reason) for r in refused[:3]]}"


@pytest.mark.parametrize("cluster", [1], indirect=True)
async def test_a_lone_broker_away_gets_503s_while_away_and_loses_nothing(
    cluster: ServerInfo, tmp_path: Path
) -> None:
    ack_timeout_s = 2.0
    load, down_at, back_at, stored = await load_through_a_failure(
        cluster, tmp_path, kill=False, down_seconds=8, ack_timeout_s=ack_timeout_s
    )
    report("1 broker, stopped and restarted", load, stored)
    assert load.acknowledged() <= set(stored)  # nothing acknowledged is lost
    statuses = load.by_status()
    assert set(statuses) <= {202, 503}, statuses
    refused = [request for request in load.requests if request.status == 503]
    assert refused, "no request was refused while the only broker was away"
    for request in refused:
        assert "Kafka unavailable" in request.reason
        # sent while the broker was away or waiting for it when it left; the producer takes up
        # to a second or two to reconnect once the broker answers again
        assert down_at - ack_timeout_s - 1 <= request.sent_at <= back_at + 3, request
    late = [request for request in load.requests if request.sent_at > back_at + 3]
    assert late and all(request.status == 202 for request in late), "no recovery after restart"
