"""Kafka: producers, consumers, topics and the dead-letter topic.

Delivery is at-least-once everywhere: producers wait for ``acks=all`` and are idempotent (a
retry after a lost acknowledgement is not written twice); consumers commit offsets only after
what they wrote is durable, so a crash replays a little and loses nothing; the writers
downstream are idempotent, so a replay changes nothing.

Topics are replicated as the cluster allows (:func:`replication_for`): on three brokers or more,
replication factor 3 with ``min.insync.replicas=2``, so an acknowledged record is on two brokers
and one broker may fail without losing it or stopping writes; on one broker, one copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from fraudstack.errors import StoreUnavailable
from fraudstack.settings import Topics

log = logging.getLogger(__name__)

#: Partitions of the topics fraudstack creates; aggregation scales out to this many instances.
DEFAULT_PARTITIONS = 4


#: The topics keep more than the features' furthest reach (37 days: 30-day terminal windows
#: behind the 7-day label delay) plus the allowed lateness, so replaying them from the start
#: rebuilds the online store exactly (after a Redis that came back empty, say).
RETENTION_MS = 40 * 86_400_000


def replication_for(brokers: int) -> tuple[int, int]:
    """Replication factor and ``min.insync.replicas`` for a cluster of ``brokers``."""
    return (3, 2) if brokers >= 3 else (1, 1)


async def ensure_topics(
    bootstrap: str, topics: Topics | None = None, partitions: int = DEFAULT_PARTITIONS
) -> None:
    """Create fraudstack's topics when they are missing (idempotent), replicated as the cluster
    allows."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        cluster = await admin.describe_cluster()
        replication, min_insync = replication_for(len(cluster.get("brokers") or []))
        missing = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication,
                topic_configs={
                    "min.insync.replicas": str(min_insync),
                    "retention.ms": str(RETENTION_MS),
                },
            )
            for name in (topics or Topics()).all()
            if name not in existing
        ]
        if missing:
            # another process may create them meanwhile
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    except KafkaError as exc:
        raise StoreUnavailable(f"Kafka at {bootstrap} unreachable: {exc}") from exc
    finally:
        await admin.close()


def make_producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer that acknowledges only once every in-sync replica has the record (``acks=all``)
    and writes a retried batch once (idempotence)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class SourceRecord(Protocol):
    """What a dead letter keeps of the record it stands for (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def send_dead_letter(
    producer: AIOKafkaProducer, topic: str, record: SourceRecord, reason: str
) -> asyncio.Future[Any]:
    """Send ``record`` to the dead-letter ``topic``; returns the delivery future.

    The dead letter is the record itself, key and value byte for byte (so a fixed record can be
    replayed as is), with headers ``reason``, ``source_topic``, ``source_partition`` and
    ``source_offset``; the source headers also let a reader drop the copies an at-least-once
    resend makes.
    """
    headers = [
        ("reason", reason.encode()),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    ]
    delivery: asyncio.Future[Any] = await producer.send(
        topic, value=record.value or b"", key=record.key, headers=headers
    )
    return delivery
