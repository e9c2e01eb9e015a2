"""Kafka: producers, consumers, topics and the dead-letter topic.

Delivery is at-least-once everywhere: producers wait for ``acks=all``; consumers commit offsets
only after what they wrote is durable, so a crash replays a little and loses nothing; the
writers downstream are idempotent, so a replay changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from fraudstack.errors import StoreUnavailable
from fraudstack.settings import Topics

log = logging.getLogger(__name__)

#: Partitions of the topics fraudstack creates; aggregation scales out to this many instances.
DEFAULT_PARTITIONS = 4


async def ensure_topics(
    bootstrap: str, topics: Topics | None = None, partitions: int = DEFAULT_PARTITIONS
) -> None:
    """Create fraudstack's topics when they are missing (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
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
    """A producer that acknowledges only once the broker has the record (``acks=all``)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def dead_letter(
    value: bytes | None,
    reason: str,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
) -> bytes:
    """The dead-letter record: the reason, where the record came from, and the record itself."""
    return orjson.dumps(
        {
            "reason": reason,
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "value": (value or b"").decode("utf-8", errors="replace"),
        }
    )
