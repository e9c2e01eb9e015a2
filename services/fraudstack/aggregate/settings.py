"""Settings of ``fraudstack aggregate`` (environment variables ``FRAUDSTACK_AGGREGATE_*``)."""

from __future__ import annotations

from functools import lru_cache

from fraudstack.settings import CommonSettings


class AggregateSettings(CommonSettings):
    aggregate_group_id: str = "fraudstack-aggregate"
    """``FRAUDSTACK_AGGREGATE_GROUP_ID``: the consumer group; instances of one group split the
    partitions."""
    aggregate_max_batch: int = 50_000
    """``FRAUDSTACK_AGGREGATE_MAX_BATCH``: most records applied in one batch of Redis pipelines.
    Batches only grow this large when there is a backlog; a customer seen several times in one
    batch is written once, and its newest transaction's terminal windows counted once, so a
    backlog drains faster than a steady stream arrives."""
    aggregate_step_budget_ms: float = 500.0
    """``FRAUDSTACK_AGGREGATE_STEP_BUDGET_MS``: CPU time one step of a poll may take before the
    loop lets its other tasks run (the consumer's heartbeats among them); a poll is applied in
    steps sized to this budget. A step's CPU is split by its Redis round trips, so the longest
    stall is about half of it: far below the 10 s session timeout. Smaller steps drain a backlog
    slower (a customer seen several times in one step is written once): on the benchmark's
    backlog 200 ms gave 11,800 events/s, 500 ms 14,000, one step per poll 15,400."""
    aggregate_allowed_lateness_ms: int = 3_600_000
    """``FRAUDSTACK_AGGREGATE_ALLOWED_LATENESS_MS``: how far an event may trail the newest of its
    partition and still be applied; later ones go to the dead-letter topic."""
    aggregate_metrics_port: int = 9100
    """``FRAUDSTACK_AGGREGATE_METRICS_PORT``: Prometheus metrics (0 = off)."""
    aggregate_broker_timeout_s: float = 60.0
    """``FRAUDSTACK_AGGREGATE_BROKER_TIMEOUT_S``: exit (so Kubernetes restarts us) when the
    broker stays away this long."""


@lru_cache
def get_settings() -> AggregateSettings:
    return AggregateSettings()
