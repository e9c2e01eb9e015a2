"""The Parquet offline store: date partitions, offset-named files, atomic and idempotent."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudstack.adapters.offline_store import (
    EVENTS,
    FEATURES,
    LABELS,
    OfflineStore,
    OffsetRange,
    day_of,
    epoch_ms,
)

DAY = 86_400_000
START = epoch_ms(date(2018, 8, 1))


def events(count: int, first_offset: int = 0) -> pa.Table:
    return pa.table(
        {
            "txn_id": [f"t{first_offset + i}" for i in range(count)],
            "ts": pa.array([START + i * DAY // 4 for i in range(count)], type=pa.int64()),
            "customer_id": ["c1"] * count,
            "terminal_id": ["m1"] * count,
            "amount": [1.5] * count,
        }
    )


def test_a_batch_is_split_by_date_into_offset_named_files(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    offsets = OffsetRange("transactions", 2, 100, 109)
    written, skipped = store.write_partitioned(EVENTS, events(10), offsets)
    assert skipped == []
    assert store.days(EVENTS) == [date(2018, 8, 1), date(2018, 8, 2), date(2018, 8, 3)]
    assert len(written) == 3
    for path in written:
        assert Path(path).name == "part-transactions-2-100-109.parquet"
        assert Path(path).parent.name.startswith("date=2018-08-0")
    day_two = pq.read_table(tmp_path / "events" / "date=2018-08-02" / offsets.file_name())
    assert day_two.column("txn_id").to_pylist() == ["t4", "t5", "t6", "t7"]
    # nothing temporary is left behind
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_rewriting_the_same_offsets_is_a_no_op(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    offsets = OffsetRange("transactions", 0, 0, 9)
    store.write_partitioned(EVENTS, events(10), offsets)
    written, skipped = store.write_partitioned(EVENTS, events(10), offsets)
    assert written == [] and len(skipped) == 3
    assert store.read(EVENTS).num_rows == 10


def test_read_a_time_window(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    store.write_partitioned(EVENTS, events(8), OffsetRange("transactions", 0, 0, 7))
    store.write_partitioned(EVENTS, events(8, 8), OffsetRange("transactions", 1, 0, 7))
    window = store.read(EVENTS, START + DAY, START + 2 * DAY, columns=["txn_id", "ts"])
    assert window.column_names == ["txn_id", "ts"]
    assert sorted(window.column("txn_id").to_pylist()) == sorted(
        ["t4", "t5", "t6", "t7", "t12", "t13", "t14", "t15"]
    )
    assert store.read(EVENTS, START + 30 * DAY).num_rows == 0
    assert store.read(LABELS).num_rows == 0  # a dataset never written reads as empty


def test_labels_are_partitioned_by_the_day_they_became_known(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    labels = pa.table(
        {
            "txn_id": ["t1"],
            "customer_id": ["c1"],
            "terminal_id": ["m1"],
            "ts": pa.array([START], type=pa.int64()),
            "is_fraud": [True],
            "reported_at": pa.array([START + 3 * DAY + 5], type=pa.int64()),
        }
    )
    store.write_partitioned(LABELS, labels, OffsetRange("labels", 0, 7, 7))
    assert store.days(LABELS) == [date(2018, 8, 4)]
    assert store.read(LABELS, end_ms=START + 3 * DAY).num_rows == 0
    assert store.read(LABELS, end_ms=START + 4 * DAY).num_rows == 1


def test_offset_ranges_of_one_partition(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    for first in (0, 10, 20):
        store.write_partitioned(EVENTS, events(3), OffsetRange("my-topic.v2", 1, first, first + 9))
    store.write_partitioned(EVENTS, events(3), OffsetRange("my-topic.v2", 0, 0, 4))
    assert [item.first for item in store.offset_ranges(EVENTS, "my-topic.v2", 1)] == [0, 10, 20]
    grouped = store.all_offset_ranges(EVENTS)
    assert set(grouped) == {("my-topic.v2", 0), ("my-topic.v2", 1)}
    assert grouped[("my-topic.v2", 0)] == [OffsetRange("my-topic.v2", 0, 0, 4)]
    assert OffsetRange.parse("part-my-topic.v2-1-10-19.parquet") == OffsetRange(
        "my-topic.v2", 1, 10, 19
    )
    assert OffsetRange.parse("snapshot-1.parquet") is None


def test_uri_roots_and_unknown_datasets(tmp_path: Path) -> None:
    store = OfflineStore(f"file://{tmp_path}")
    path = store.file_path(FEATURES, day_of(START), "snapshot-1.parquet")
    store.write_file(path, pa.table({"snapshot_at": pa.array([START], type=pa.int64())}))
    assert store.read(FEATURES).num_rows == 1
    with pytest.raises(ValueError, match="unknown dataset"):
        store.dataset_path("nope")
