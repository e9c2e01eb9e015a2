"""Metrics of the aggregation service (one process; no multiprocess mode needed)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "aggregate_events_total",
    "Events consumed, by kind (transaction, label) and outcome (applied, duplicate, "
    "dead_letter, ignored).",
    ["kind", "outcome"],
)
REFUSED_WRITES = Counter(
    "aggregate_refused_writes_total",
    "Writes the store refused, by write: customer and watermark (fenced off: another instance "
    "claimed the partition since this one read the batch, a stalled instance), "
    "customer_summary (the store held a newer transaction), terminal_item (an event or label "
    "behind the terminal's last prune, not added back).",
    ["write"],
)
BATCH_SIZE = Histogram(
    "aggregate_batch_size_events",
    "Events per processed batch.",
    buckets=(1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000),
)
WRITE_LATENCY = Histogram(
    "aggregate_redis_write_seconds",
    "Time to write one batch's features to Redis (one pipeline).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
#: Fine below 100 ms, where the steady-state delay lives.
EVENT_TO_FEATURE_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
)
EVENT_TO_FEATURE = Histogram(
    "aggregate_event_to_feature_seconds",
    "Delay from a transaction's event time to its features being in Redis.",
    buckets=EVENT_TO_FEATURE_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "aggregate_consumer_lag",
    "Records not consumed yet, per topic partition assigned to this instance.",
    ["topic", "partition"],
)
FEATURE_EVENT_TIME = Gauge(
    "aggregate_newest_event_timestamp_seconds",
    "Event time of the newest transaction written to the online store (freshness).",
)
EVENT_LOOP_STALL = Gauge(
    "aggregate_event_loop_stall_seconds",
    "Longest time in the last minute the event loop could not run its other tasks (the "
    "consumer's heartbeats among them); past the session timeout the group drops the instance.",
)
EVENT_LOOP_LATENESS = Histogram(
    "aggregate_event_loop_lateness_seconds",
    "How late the loop monitor woke from each of its 50 ms sleeps.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
REBALANCES = Counter(
    "aggregate_rebalances_total",
    "Consumer group rebalances seen by this instance, by what happened to its partitions "
    "(assigned, revoked); a steady group sees one assignment at start and none after.",
    ["event"],
)
STORE_REBUILDS = Counter(
    "aggregate_store_rebuilds_total",
    "Times this instance found the online store without its generation marker (Redis came back "
    "empty, or was never filled) and replayed its partitions from their first offset.",
)
REPLAYING = Gauge(
    "aggregate_store_replaying_partitions",
    "Partitions this instance is replaying into a store being rebuilt; 0 once caught up.",
)
