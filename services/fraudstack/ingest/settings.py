"""Settings of ``fraudstack ingest`` (environment variables ``FRAUDSTACK_INGEST_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from fraudstack.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_bind: str = "0.0.0.0:8000"
    """``FRAUDSTACK_INGEST_BIND``: host:port of the HTTP API."""
    ingest_max_batch: int = 10_000
    """``FRAUDSTACK_INGEST_MAX_BATCH``: most events accepted in one request."""
    ingest_ack_timeout_s: float = Field(default=15.0, gt=0)
    """``FRAUDSTACK_INGEST_ACK_TIMEOUT_S``: how long a request waits for the brokers to
    acknowledge its events before it answers 503. Longer than a leader failover (a dead broker
    is fenced after ``broker.session.timeout.ms``, 9 s by default, then its partitions get new
    leaders), so losing one broker of three delays acknowledgements but fails none."""


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
