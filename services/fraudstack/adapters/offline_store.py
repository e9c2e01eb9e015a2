"""The Parquet offline store: every event, label and feature snapshot, under one root URI.

Layout (hive partitions, readable as is by pyarrow, DuckDB, Spark or Trino)::

    <root>/events/date=YYYY-MM-DD/part-<topic>-<partition>-<first offset>-<last offset>.parquet
    <root>/labels/date=YYYY-MM-DD/part-<topic>-<partition>-<first offset>-<last offset>.parquet
    <root>/features/date=YYYY-MM-DD/snapshot-<epoch ms>.parquet

The date (UTC) of an event is that of its ``ts``; of a label, that of its ``reported_at`` (the day
it became known, so a point-in-time reader of labels known at T reads no later partition); of a
feature snapshot, the day it was taken.

A file is named after the Kafka offsets it holds, so writing the same offsets again produces
the same name: a consumer that crashed after writing and before committing, and rewrites the
range on restart, finds the file there and skips it (:meth:`OfflineStore.write_partitioned`).

Atomic commit: on a local filesystem a file is written under a hidden temporary name in its
final folder, fsynced, renamed, and the folder fsynced, so a reader (and a crash) sees the
whole file or nothing. On an object store (``s3://``, ``gs://``...) an upload is already
all-or-nothing and there is no rename, so the file is written to its final name directly.
Readers ignore names starting with ``.`` or ``_``, which is where temporary files live.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fraudstack.errors import StoreError
from fraudstack.features.definitions import MS_PER_DAY

EVENTS = "events"
LABELS = "labels"
FEATURES = "features"
DATASETS = (EVENTS, LABELS, FEATURES)

#: Where a row came from: a replayed record has the same offset, a transaction produced twice
#: the same ``txn_id`` at another offset.
SOURCE_FIELDS = [pa.field("kafka_partition", pa.int32()), pa.field("kafka_offset", pa.int64())]

EVENT_SCHEMA = pa.schema(
    [
        pa.field("txn_id", pa.string()),
        pa.field("ts", pa.int64()),
        pa.field("customer_id", pa.string()),
        pa.field("terminal_id", pa.string()),
        pa.field("amount", pa.float64()),
        *SOURCE_FIELDS,
    ]
)
LABEL_SCHEMA = pa.schema(
    [
        pa.field("txn_id", pa.string()),
        pa.field("customer_id", pa.string()),
        pa.field("terminal_id", pa.string()),
        pa.field("ts", pa.int64()),
        pa.field("is_fraud", pa.bool_()),
        pa.field("reported_at", pa.int64()),
        *SOURCE_FIELDS,
    ]
)
#: The column that decides a row's date partition, per dataset.
DATE_COLUMN = {EVENTS: "ts", LABELS: "reported_at", FEATURES: "snapshot_at"}

_RANGE_NAME = re.compile(
    r"^part-(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$"
)
_COMPRESSION = "zstd"


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """The Kafka offsets ``first..last`` (inclusive) of one partition held by a file."""

    topic: str
    partition: int
    first: int
    last: int

    def file_name(self) -> str:
        return f"part-{self.topic}-{self.partition}-{self.first}-{self.last}.parquet"

    @classmethod
    def parse(cls, name: str) -> OffsetRange | None:
        match = _RANGE_NAME.match(name)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


def day_of(epoch_ms: int) -> date:
    """The UTC date of an epoch-millisecond time."""
    return date(1970, 1, 1) + timedelta(days=epoch_ms // MS_PER_DAY)


def partition_name(day: date) -> str:
    return f"date={day.isoformat()}"


class OfflineStore:
    """Reads and writes of the offline store rooted at ``uri`` (a path or a pyarrow URI)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            if "://" in uri:
                self.filesystem, self.root = pafs.FileSystem.from_uri(uri)
            else:
                self.filesystem, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"offline store {uri!r}: {exc}") from exc
        self.is_local = isinstance(self.filesystem, pafs.LocalFileSystem)

    def dataset_path(self, dataset: str) -> str:
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; one of {', '.join(DATASETS)}")
        return f"{self.root.rstrip('/')}/{dataset}"

    def file_path(self, dataset: str, day: date, name: str) -> str:
        return f"{self.dataset_path(dataset)}/{partition_name(day)}/{name}"

    # --- writing -------------------------------------------------------------------------

    def write_partitioned(
        self, dataset: str, table: pa.Table, offsets: OffsetRange
    ) -> tuple[list[str], list[str]]:
        """Split ``table`` by date and write one file per date for this offset range.

        Returns ``(written, skipped)`` paths: a file already there for the same range and date
        was committed by an earlier run and is left as it is.
        """
        written: list[str] = []
        skipped: list[str] = []
        for day, rows in split_by_day(table, DATE_COLUMN[dataset]):
            path = self.file_path(dataset, day, offsets.file_name())
            if self.exists(path):
                skipped.append(path)
                continue
            self.write_file(path, rows)
            written.append(path)
        return written, skipped

    def write_file(self, path: str, table: pa.Table) -> None:
        """Write one Parquet file so that it appears whole or not at all."""
        folder = path.rpartition("/")[0]
        try:
            new_folder = self.is_local and not os.path.isdir(folder)
            self.filesystem.create_dir(folder, recursive=True)
            if new_folder:
                _fsync_folder(os.path.dirname(folder))
            if self.is_local:
                write_local_atomically(table, path)
            else:
                with self.filesystem.open_output_stream(path) as stream:
                    pq.write_table(table, stream, compression=_COMPRESSION)
        except OSError as exc:
            raise StoreError(f"offline store: cannot write {path}: {exc}") from exc

    def exists(self, path: str) -> bool:
        info = self.filesystem.get_file_info(path)
        return bool(info.type == pafs.FileType.File)

    # --- listing and reading -------------------------------------------------------------

    def days(self, dataset: str) -> list[date]:
        """The date partitions of a dataset, oldest first."""
        selector = pafs.FileSelector(self.dataset_path(dataset), allow_not_found=True)
        found = []
        for info in self.filesystem.get_file_info(selector):
            name = info.base_name
            if info.type == pafs.FileType.Directory and name.startswith("date="):
                try:
                    found.append(date.fromisoformat(name.removeprefix("date=")))
                except ValueError:
                    continue
        return sorted(found)

    def files(self, dataset: str, days: Iterable[date] | None = None) -> list[str]:
        """Committed files of a dataset (optionally of some days), in path order."""
        paths: list[str] = []
        for day in self.days(dataset) if days is None else days:
            folder = f"{self.dataset_path(dataset)}/{partition_name(day)}"
            selector = pafs.FileSelector(folder, allow_not_found=True)
            for info in self.filesystem.get_file_info(selector):
                if info.type == pafs.FileType.File and _visible(info.base_name):
                    paths.append(info.path)
        return sorted(paths)

    def offset_ranges(self, dataset: str, topic: str, partition: int) -> list[OffsetRange]:
        """Offset ranges of one topic partition already in the store, by first offset."""
        return self.all_offset_ranges(dataset).get((topic, partition), [])

    def all_offset_ranges(self, dataset: str) -> dict[tuple[str, int], list[OffsetRange]]:
        """Offset ranges in the store per ``(topic, partition)``, by first offset: one listing."""
        ranges = {OffsetRange.parse(path.rpartition("/")[2]) for path in self.files(dataset)}
        grouped: dict[tuple[str, int], list[OffsetRange]] = {}
        for item in sorted(
            (item for item in ranges if item is not None), key=lambda item: (item.first, item.last)
        ):
            grouped.setdefault((item.topic, item.partition), []).append(item)
        return grouped

    def read(
        self,
        dataset: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        columns: Sequence[str] | None = None,
        time_column: str | None = None,
    ) -> pa.Table:
        """Rows with ``start_ms <= time < end_ms`` (either bound optional).

        ``time_column`` defaults to the column the dataset is partitioned by; only the date
        partitions that can hold such rows are opened. An empty store gives an empty table.
        """
        time_column = time_column or DATE_COLUMN[dataset]
        days = self.days(dataset)
        if time_column == DATE_COLUMN[dataset]:
            first = day_of(start_ms) if start_ms is not None else date.min
            last = day_of(end_ms - 1) if end_ms is not None else date.max
            days = [day for day in days if first <= day <= last]
        paths = self.files(dataset, days)
        if not paths:
            return pa.table({})
        dataset_ = ds.dataset(paths, filesystem=self.filesystem, format="parquet")
        condition = None
        if start_ms is not None:
            condition = pc.field(time_column) >= start_ms
        if end_ms is not None:
            below = pc.field(time_column) < end_ms
            condition = below if condition is None else condition & below
        return dataset_.to_table(
            columns=list(columns) if columns is not None else None, filter=condition
        )


def split_by_day(table: pa.Table, column: str) -> list[tuple[date, pa.Table]]:
    """The rows of ``table`` grouped by the UTC date of ``column`` (epoch ms), in row order."""
    if table.num_rows == 0:
        return []
    days = table.column(column).to_numpy() // MS_PER_DAY
    result = []
    for day in np.unique(days):
        rows = table.filter(pa.array(days == day))
        result.append((date(1970, 1, 1) + timedelta(days=int(day)), rows))
    return result


def epoch_ms(moment: datetime | date) -> int:
    """A date (midnight UTC) or an aware datetime as epoch milliseconds."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def write_local_atomically(table: pa.Table, path: str, compression: str = _COMPRESSION) -> None:
    """Write a local Parquet file under a hidden temporary name, fsync it, rename it into place
    and fsync its folder: a reader (and a crash) sees the whole file or nothing."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression=compression)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _fsync_folder(folder)


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


def _fsync_folder(folder: str) -> None:
    # the rename is durable only once the folder entry is
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
