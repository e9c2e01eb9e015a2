"""Settings of ``fraudstack ingest`` (environment variables ``FRAUDSTACK_INGEST_*``)."""

from __future__ import annotations

from functools import lru_cache

from fraudstack.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_bind: str = "0.0.0.0:8000"
    """``FRAUDSTACK_INGEST_BIND``: host:port of the HTTP API."""
    ingest_max_batch: int = 10_000
    """``FRAUDSTACK_INGEST_MAX_BATCH``: most events accepted in one request."""


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
