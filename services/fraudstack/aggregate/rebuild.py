"""Rebuilding an online store that came back empty, from the topics.

Redis can come back empty (see :mod:`fraudstack.adapters.online_store.generation`): the
aggregators would go on from their committed offsets and write new events into a store that lost
the old ones, every window short from then on. Instead:

* **Noticed** at every assignment of partitions and before every attempt to write a step: the
  store's generation marker is read; missing, or of another generation than the one this
  instance writes for, the store was lost (or never filled).
* **Marked**: the first instance to notice makes a new generation (``HSETNX``); the inference
  service answers 503 until it is ready, rather than serve what would be wrong.
* **Replayed**: each instance seeks the partitions it owns that are not caught up in this
  generation to their first offset, with its in-memory state dropped, and replays them. The
  writes are idempotent, so what was written already is written again unchanged; the topics keep
  40 days (:data:`~fraudstack.adapters.kafka.RETENTION_MS`), beyond the 37 days of the longest
  window and its delay. The offsets are committed as the replay goes, so a replay that moves to
  another instance goes on from there, and one whose partitions move before any commit starts
  again from the first offset (the new owner finds them not caught up).
* **Caught up**: a partition whose committed offset reaches the end offset it had when its replay
  began is marked in the marker; with every partition marked, the store is ready. A partition
  the instance owns at the end of a replay is watched again at the next check, as any other.

A store that is ready is left alone: an instance that joins later, or restarts, only reads the
marker. The bulk loader makes a ready store of its own generation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from fraudstack.adapters.online_store.generation import GenerationMarker, partition_name
from fraudstack.aggregate import metrics

log = logging.getLogger(__name__)


class StoreLost(Exception):
    """The store is in another generation than this instance writes for: it was lost."""


class Rebuild:
    """One instance's view of the store's generation, and its part of a rebuild."""

    def __init__(self, marker: GenerationMarker, topics: Iterable[str]) -> None:
        self.marker = marker
        self.topics = tuple(topics)
        #: the generation this instance writes for; None until it has read the marker
        self.generation: str | None = None
        #: set when the assigned partitions must be checked against the marker (an assignment,
        #: a loss) before anything more is written
        self.pending = True
        #: set when the store was found lost: the partitions are claimed again (the owners'
        #: epochs went with it) before the marker is read
        self.lost = False
        #: partitions replaying for this generation -> the offset that makes them caught up
        self.targets: dict[TopicPartition, int] = {}
        #: the offsets committed since the replay began, per replaying partition
        self.reached: dict[TopicPartition, int] = {}

    async def check(self) -> None:
        """Raise StoreLost if the store is not in this instance's generation any more (one
        ``HGET``, before every attempt to write a step)."""
        if self.generation is None:
            return
        found = await self.marker.generation()
        if found != self.generation:
            self.pending = self.lost = True
            raise StoreLost(
                f"the online store's generation is {found or 'missing'}, "
                f"not {self.generation}: it was lost"
            )

    async def start(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Read (or make) the marker and seek the owned partitions that are not caught up in
        its generation to their first offset; return them. The caller drops its in-memory
        state and whatever it fetched before."""
        assigned = consumer.assignment()
        partitions = sum(len(consumer.partitions_for_topic(t) or ()) for t in self.topics)
        state = await self.marker.read()
        if state.generation is None:
            state = await self.marker.begin(partitions)
            metrics.STORE_REBUILDS.inc()
            log.warning(
                "the online store has no generation marker: it came back empty (or was never "
                "filled); generation %s begins, the partitions are replayed from their first "
                "offset",
                state.generation,
            )
        self.generation = state.generation
        self.pending = self.lost = False
        self.targets = {}
        self.reached = {}
        replay = sorted(
            (
                tp
                for tp in assigned
                if not state.ready and partition_name(tp.topic, tp.partition) not in state.caught_up
            ),
            key=lambda tp: (tp.topic, tp.partition),
        )
        if replay:
            begins = await consumer.beginning_offsets(replay)
            ends = await consumer.end_offsets(replay)
            await consumer.seek_to_beginning(*replay)
            self.targets = {tp: ends[tp] for tp in replay}
            log.info(
                "replaying %d partitions into generation %s: %s",
                len(replay),
                self.generation,
                ", ".join(f"{tp.topic}[{tp.partition}] to {ends[tp]}" for tp in replay),
            )
            await self.committed({tp: begins[tp] for tp in replay})
        metrics.REPLAYING.set(len(self.targets))
        return replay

    async def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Mark the replaying partitions whose committed offset reached their target (called
        with what was just committed, or with nothing to try again a mark Redis refused)."""
        if not self.targets or self.generation is None:
            return
        self.reached.update((tp, offset) for tp, offset in offsets.items() if tp in self.targets)
        done = [tp for tp, target in self.targets.items() if self.reached.get(tp, -1) >= target]
        if not done:
            return
        reply = await self.marker.caught_up(
            self.generation, (partition_name(tp.topic, tp.partition) for tp in done)
        )
        if reply < 0:
            self.pending = self.lost = True
            raise StoreLost("the online store was lost again during its rebuild")
        for tp in done:
            del self.targets[tp]
        metrics.REPLAYING.set(len(self.targets))
        log.info(
            "caught up in generation %s: %s%s",
            self.generation,
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in done),
            "; the store is ready" if reply == 1 else "",
        )
