"""The store's generation marker: how a Redis that came back empty is told from a full one.

Redis may lose everything (a restart without persistence, a failover to an empty replica, a
``FLUSHALL``) and come back answering as if nothing happened: every customer unknown, every
terminal window short. Features read from it would be wrong, and answered with 200 OK. So the
store marks its own life in one hash, ``fs:{store}`` (see :mod:`.layout`):

* ``generation``: an id made by whoever first finds the marker missing (an aggregator, or the
  bulk loader); a store without it is empty or was never filled, whatever else it holds;
* ``partitions``: how many topic partitions fill it, and a ``caught_up:<topic>:<partition>``
  field for each once it has been replayed to its end in this generation;
* ``ready``: set when every partition is (``caught_up.lua``), or at once by the bulk loader.

The aggregators make the marker and replay (:mod:`fraudstack.aggregate.rebuild`); the inference
service reads ``ready`` in the same round trip as the features and answers 503 without it
(:class:`~fraudstack.errors.StoreNotReady`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from fraudstack.adapters.online_store import scripts
from fraudstack.adapters.online_store.layout import (
    CAUGHT_UP_PREFIX,
    GENERATION_FIELD,
    PARTITIONS_FIELD,
    READY_FIELD,
    STORE_KEY,
)
from fraudstack.adapters.redis_link import Command, RedisLink, hash_reply

#: The command that reads whether the store is ready (sent beside a read of features).
READY_READ: Command = ("HGET", STORE_KEY, READY_FIELD)


@dataclass(frozen=True, slots=True)
class StoreGeneration:
    """The marker as read: its generation id (None: the store is empty), whether it is ready,
    and the partitions already replayed to their end (``<topic>:<partition>``)."""

    generation: str | None
    ready: bool
    caught_up: frozenset[str]


def new_generation() -> str:
    return uuid.uuid4().hex


def ready_commands(generation: str | None = None) -> list[Command]:
    """Mark a store filled whole in one go (the bulk loader) as ready, in a new generation."""
    return [
        ("DEL", STORE_KEY),
        ("HSET", STORE_KEY, GENERATION_FIELD, generation or new_generation(), READY_FIELD, 1),
    ]


def partition_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class GenerationMarker:
    """Reads and writes of the marker, over the aggregator's link."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def read(self) -> StoreGeneration:
        (flat,) = await self.link.execute_many([("HGETALL", STORE_KEY)])
        fields = {name.decode(): value.decode() for name, value in hash_reply(flat).items()}
        caught_up = frozenset(
            name.removeprefix(CAUGHT_UP_PREFIX)
            for name in fields
            if name.startswith(CAUGHT_UP_PREFIX)
        )
        return StoreGeneration(fields.get(GENERATION_FIELD), READY_FIELD in fields, caught_up)

    async def generation(self) -> str | None:
        """The generation id alone (one ``HGET``: checked before every step of the stream)."""
        (raw,) = await self.link.execute_many([("HGET", STORE_KEY, GENERATION_FIELD)])
        return raw.decode() if raw is not None else None

    async def begin(self, partitions: int) -> StoreGeneration:
        """Make the marker if it is missing (whoever comes first makes it, ``HSETNX``), and
        return it as it is then."""
        await self.link.execute_many(
            [
                ("HSETNX", STORE_KEY, GENERATION_FIELD, new_generation()),
                ("HSETNX", STORE_KEY, PARTITIONS_FIELD, partitions),
            ]
        )
        return await self.read()

    async def caught_up(self, generation: str, partitions: Iterable[str]) -> int:
        """Record partitions replayed to their end in ``generation``: 1 if the store is ready
        now, 0 if not yet, -1 if the store is in another generation (lost again)."""
        names = list(partitions)
        (reply,) = await scripts.execute(
            self.link, [scripts.CAUGHT_UP.call((STORE_KEY,), generation, *names)]
        )
        return int(reply)
