"""Settings shared by every role, read from ``FRAUDSTACK_*`` environment variables.

Each role has its own settings class deriving from :class:`CommonSettings`; each is built once
through a cached ``get_settings()`` so tests and FastAPI dependencies can override it instead of
patching the environment. A setting comes from, first to last: a keyword argument, the
environment, the running devstack's env file (:func:`~fraudstack.paths.devstack_env_file`, which
``fraudstack devstack up`` writes), the default.

=================================  ==========================================================
variable                           meaning
=================================  ==========================================================
``FRAUDSTACK_REDIS_URL``           online store, e.g. ``redis://:secret@redis:6379/0``
``FRAUDSTACK_KAFKA_BOOTSTRAP``     Kafka bootstrap servers, ``host:port[,host:port]``
``FRAUDSTACK_OFFLINE_STORE_URI``   root of the Parquet offline store (path or pyarrow URI)
``FRAUDSTACK_MODEL_REGISTRY_URI``  root of the model registry (``models/<version>/``)
``FRAUDSTACK_LOG_LEVEL``           ``DEBUG``, ``INFO`` (default), ``WARNING``...
``FRAUDSTACK_TOPIC_PREFIX``        prefix of every Kafka topic name (default none)
``FRAUDSTACK_PROMETHEUS_URL``      Prometheus, read by the operator's gates
``FRAUDSTACK_SCRAPE_TARGETS_DIR``  a Prometheus ``file_sd`` folder a service adds itself to
                                   (the devstack's; unset in a cluster, where Prometheus finds
                                   the pods by itself)
=================================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydantic import model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from fraudstack.errors import ConfigurationError
from fraudstack.paths import devstack_env_file, state_dir

TOPIC_TRANSACTIONS = "transactions"
TOPIC_LABELS = "labels"
TOPIC_DEAD_LETTER = "transactions.dlq"


@dataclass(frozen=True)
class Topics:
    """The topic names; a prefix keeps several pipelines (or test runs) apart on one broker."""

    transactions: str = TOPIC_TRANSACTIONS
    labels: str = TOPIC_LABELS
    dead_letter: str = TOPIC_DEAD_LETTER

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            *(prefix + name for name in (TOPIC_TRANSACTIONS, TOPIC_LABELS, TOPIC_DEAD_LETTER))
        )

    def all(self) -> tuple[str, str, str]:
        return (self.transactions, self.labels, self.dead_letter)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUDSTACK_", extra="ignore")

    redis_url: str = ""
    """``FRAUDSTACK_REDIS_URL``; default: the devstack's Redis."""
    kafka_bootstrap: str = ""
    """``FRAUDSTACK_KAFKA_BOOTSTRAP``; default: the devstack's broker."""
    prometheus_url: str = ""
    """``FRAUDSTACK_PROMETHEUS_URL``; default: the devstack's Prometheus."""
    offline_store_uri: str = ""
    """``FRAUDSTACK_OFFLINE_STORE_URI``; default: ``<devstack state>/offline``."""
    model_registry_uri: str = ""
    """``FRAUDSTACK_MODEL_REGISTRY_URI``; default: ``<devstack state>/models``."""
    log_level: str = "INFO"
    """``FRAUDSTACK_LOG_LEVEL``."""
    topic_prefix: str = ""
    """``FRAUDSTACK_TOPIC_PREFIX``: put before every topic name (default none)."""

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    scrape_targets_dir: str = ""
    """``FRAUDSTACK_SCRAPE_TARGETS_DIR``: where to announce a metrics port to Prometheus."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first, then the devstack's env file, read anew on every build."""
        devstack = DotEnvSettingsSource(settings_cls, env_file=devstack_env_file())
        return init_settings, env_settings, devstack, file_secret_settings

    @model_validator(mode="after")
    def _default_folders(self) -> CommonSettings:
        if not self.offline_store_uri:
            self.offline_store_uri = str(state_dir() / "offline")
        if not self.model_registry_uri:
            self.model_registry_uri = str(state_dir() / "models")
        return self

    def require(self, name: str) -> str:
        """The value of an address setting, or a clear error naming its variable."""
        value: str = getattr(self, name)
        if not value:
            raise ConfigurationError(
                f"FRAUDSTACK_{name.upper()} is not set and no devstack is running "
                "(start one with `fraudstack devstack up`)"
            )
        return value


@lru_cache
def get_settings() -> CommonSettings:
    return CommonSettings()
