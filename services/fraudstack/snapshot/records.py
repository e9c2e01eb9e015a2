"""Kafka records to offline-store rows: validation, and the table of a batch in the store's
schema (:data:`~fraudstack.adapters.offline_store.EVENT_SCHEMA`, ``LABEL_SCHEMA``).

Every row keeps where it came from (``kafka_partition``, ``kafka_offset``), so a reader can tell
a replayed record (same offset) from a transaction that was produced twice (same ``txn_id``,
another offset).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from fraudstack.adapters.offline_store import EVENT_SCHEMA, LABEL_SCHEMA, SOURCE_FIELDS
from fraudstack.errors import InvalidEvent
from fraudstack.events import parse_label, parse_transaction

#: A validated record, as a tuple in schema order (cheaper to buffer than a dict).
Row = tuple[Any, ...]


def _row(
    parse: Callable[[bytes], BaseModel], schema: pa.Schema, value: bytes | None, source: Row
) -> Row:
    if not value:
        raise InvalidEvent(["event: empty record value"])
    event = parse(value)
    return (*(getattr(event, name) for name in schema.names[: -len(SOURCE_FIELDS)]), *source)


def transaction_row(value: bytes | None, partition: int, offset: int) -> Row:
    """The row of one transaction record; :class:`InvalidEvent` says why it cannot be one."""
    return _row(parse_transaction, EVENT_SCHEMA, value, (partition, offset))


def label_row(value: bytes | None, partition: int, offset: int) -> Row:
    """The row of one label record; :class:`InvalidEvent` says why it cannot be one."""
    return _row(parse_label, LABEL_SCHEMA, value, (partition, offset))


def rows_to_table(rows: list[Row], schema: pa.Schema) -> pa.Table:
    """A table of buffered rows (column-wise, one conversion per column)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )
