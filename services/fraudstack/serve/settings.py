"""Settings of the inference service (``fraudstack serve``).

Besides the common ones (:mod:`fraudstack.settings`: ``FRAUDSTACK_REDIS_URL``,
``FRAUDSTACK_MODEL_REGISTRY_URI``...), every setting has its own variable, documented beside it.
Nothing is required: by default the service serves the newest model of the registry to all
customers, with one worker per CPU core.
"""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from fraudstack.errors import ConfigurationError
from fraudstack.routing import DEFAULT_ROUTING_KEY, ROUTING_KEY_VARIABLE
from fraudstack.settings import CommonSettings


def _variable(name: str) -> str:
    return f"FRAUDSTACK_SERVE_{name.upper()}"


class ServeSettings(CommonSettings):
    # fields read FRAUDSTACK_SERVE_<NAME>; a keyword argument may still use the field's name
    model_config = SettingsConfigDict(
        env_prefix="FRAUDSTACK_", extra="ignore", populate_by_name=True
    )

    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, validation_alias=_variable("workers")
    )
    """``FRAUDSTACK_SERVE_WORKERS``: gunicorn worker processes; default one per CPU core (each
    worker is a single-threaded event loop, so more workers than cores only adds switching)."""
    bind: str = Field(default="127.0.0.1:8000", validation_alias=_variable("bind"))
    """``FRAUDSTACK_SERVE_BIND``: ``host:port`` to listen on (``0.0.0.0:8000`` in a container)."""
    timeout: int = Field(default=30, ge=1, validation_alias=_variable("timeout"))
    """``FRAUDSTACK_SERVE_TIMEOUT``: seconds a silent worker lives before gunicorn restarts it."""
    graceful_timeout: int = Field(default=10, ge=0, validation_alias=_variable("graceful_timeout"))
    """``FRAUDSTACK_SERVE_GRACEFUL_TIMEOUT``: seconds to finish in-flight requests on shutdown."""
    keepalive: int = Field(default=5, ge=0, validation_alias=_variable("keepalive"))
    """``FRAUDSTACK_SERVE_KEEPALIVE``: seconds an idle keep-alive connection stays open."""
    model_version: str = Field(default="", validation_alias=_variable("model_version"))
    """``FRAUDSTACK_SERVE_MODEL_VERSION``: the stable model; default the registry's newest."""
    candidate_version: str = Field(default="", validation_alias=_variable("candidate_version"))
    """``FRAUDSTACK_SERVE_CANDIDATE_VERSION``: an optional candidate model."""
    candidate_share: float = Field(
        default=0.0, ge=0.0, le=100.0, validation_alias=_variable("candidate_share")
    )
    """``FRAUDSTACK_SERVE_CANDIDATE_SHARE``: percent of customers the candidate scores (sticky:
    chosen by a hash of the customer id)."""
    store_timeout_ms: float = Field(
        default=250.0, gt=0, validation_alias=_variable("store_timeout_ms")
    )
    """``FRAUDSTACK_SERVE_STORE_TIMEOUT_MS``: a Redis reply slower than this answers 503 (the
    check runs every half timeout, so a stuck connection is dropped within 1.5 times this)."""
    store_retry_ms: float = Field(default=100.0, ge=0, validation_alias=_variable("store_retry_ms"))
    """``FRAUDSTACK_SERVE_STORE_RETRY_MS``: after a failed connection, requests answer 503 at once
    for this long before the next attempt (a down Redis is not hammered)."""
    risk_medium: float = Field(
        default=0.3, ge=0.0, le=1.0, validation_alias=_variable("risk_medium")
    )
    """``FRAUDSTACK_SERVE_RISK_MEDIUM``: probability from which ``risk_level`` is ``medium``."""
    risk_high: float = Field(default=0.7, ge=0.0, le=1.0, validation_alias=_variable("risk_high"))
    """``FRAUDSTACK_SERVE_RISK_HIGH``: probability from which ``risk_level`` is ``high``."""
    routing_key: str = Field(default=DEFAULT_ROUTING_KEY, validation_alias=ROUTING_KEY_VARIABLE)
    """``FRAUDSTACK_ROUTING_KEY``: the Redis key the operator publishes the routing at (the
    operator reads the same variable); a routing found there wins over the settings above.
    Empty: the settings' routing only."""
    routing_poll_ms: float = Field(
        default=500.0, gt=0, validation_alias=_variable("routing_poll_ms")
    )
    """``FRAUDSTACK_SERVE_ROUTING_POLL_MS``: how often each worker reads the routing key."""
    metrics_dir: str = Field(default="", validation_alias=_variable("metrics_dir"))
    """``FRAUDSTACK_SERVE_METRICS_DIR``: Prometheus multiprocess folder, wiped at start; default
    ``PROMETHEUS_MULTIPROC_DIR`` if set, else ``serve-metrics/<bind>`` in the state folder."""

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> ServeSettings:
        if self.risk_medium > self.risk_high:
            raise ConfigurationError(
                "FRAUDSTACK_SERVE_RISK_MEDIUM must not exceed FRAUDSTACK_SERVE_RISK_HIGH"
            )
        if self.candidate_share and not self.candidate_version:
            raise ConfigurationError(
                "FRAUDSTACK_SERVE_CANDIDATE_SHARE is set without FRAUDSTACK_SERVE_CANDIDATE_VERSION"
            )
        return self


@lru_cache
def get_settings() -> ServeSettings:
    """The settings, read once; FastAPI routes take them with ``Depends(get_settings)``."""
    return ServeSettings()
