"""Prometheus metrics of the snapshot role, in a registry of their own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class SnapshotMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        registry = self.registry
        self.rows_written = Counter(
            "snapshot_rows_written_total",
            "Rows committed to the offline store",
            ["dataset"],
            registry=registry,
        )
        self.files_written = Counter(
            "snapshot_files_written_total",
            "Parquet files committed to the offline store",
            ["dataset"],
            registry=registry,
        )
        self.files_skipped = Counter(
            "snapshot_files_skipped_total",
            "Files not rewritten because an earlier run had committed the same offsets",
            ["dataset"],
            registry=registry,
        )
        self.flush_latency = Histogram(
            "snapshot_flush_latency_seconds",
            "Time to write a buffer's files and commit its offsets",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.consumer_lag = Gauge(
            "snapshot_consumer_lag_records",
            "Records in the partition after the last one this consumer read",
            ["topic", "partition"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "snapshot_dead_letters_total",
            "Bad records sent to the dead-letter topic",
            ["topic"],
            registry=registry,
        )
        self.last_commit = Gauge(
            "snapshot_last_commit_timestamp_seconds",
            "When offsets were last committed after a durable flush (Unix time)",
            registry=registry,
        )
        self.feature_rows = Counter(
            "snapshot_feature_rows_written_total",
            "Rows of online feature values written by the periodic feature snapshots",
            registry=registry,
        )
