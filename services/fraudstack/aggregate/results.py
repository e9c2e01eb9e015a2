"""What a batch did: its outcome counts, its dead letters and the writes the store refused."""

from __future__ import annotations

from dataclasses import dataclass, field

from fraudstack.adapters.kafka import SourceRecord


@dataclass(slots=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    labels: int = 0
    ignored: int = 0
    #: writes the store refused, by write: ``customer``, ``snapshot`` (of one of the batch's
    #: customers) and ``watermark`` fenced off (another instance claimed the partition since
    #: the batch was read), ``customer_summary`` (the store held a newer transaction),
    #: ``terminal_item`` (behind the terminal's last prune: not added back)
    refused: dict[str, int] = field(default_factory=dict)
    #: records to send to the dead-letter topic, with the reason
    dead_letters: list[tuple[SourceRecord, str]] = field(default_factory=list)
    written_event_ts: list[int] = field(default_factory=list)

    @property
    def fenced(self) -> bool:
        """Whether the store fenced this instance off: its batch is not to be committed."""
        return any(self.refused.get(write) for write in _STALE_WRITER)


#: Refusals that say this instance is a stale writer (its partition-local state is not to be
#: trusted); a terminal item behind the prune is only a replay of something long gone.
_STALE_WRITER = ("customer", "snapshot", "watermark", "customer_summary")


def count_by_kind(result: BatchResult) -> dict[tuple[str, str], int]:
    """The batch's outcome counts, keyed like the ``aggregate_events_total`` labels."""
    return {
        ("transaction", "applied"): result.applied,
        ("transaction", "duplicate"): result.duplicates,
        ("label", "applied"): result.labels,
        ("label", "ignored"): result.ignored,
    }
