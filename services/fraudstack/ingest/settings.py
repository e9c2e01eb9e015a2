"""Settings of ``fraudstack ingest`` (environment variables ``FRAUDSTACK_INGEST_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from fraudstack.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_bind: str = "0.0.0.0:8000"
    """``FRAUDSTACK_INGEST_BIND``: host:port of the HTTP API."""
    ingest_max_batch: int = 10_000
    """``FRAUDSTACK_INGEST_MAX_BATCH``: most events accepted in one request."""
    ingest_api_key: SecretStr = SecretStr("")
    """``FRAUDSTACK_INGEST_API_KEY``: when set, ``POST /v1/transactions`` requires it in the
    ``X-API-Key`` header (401 otherwise); health, readiness and metrics stay open to probes and
    scrapers. The chart sets it from a Secret."""
    ingest_ack_timeout_s: float = Field(default=15.0, gt=0)
    """``FRAUDSTACK_INGEST_ACK_TIMEOUT_S``: how long a request waits for the brokers to
    acknowledge its events before it answers 503. Longer than a leader failover (a dead broker
    is fenced after ``broker.session.timeout.ms``, 9 s by default, then its partitions get new
    leaders), so losing one broker of three delays acknowledgements but fails none."""


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
