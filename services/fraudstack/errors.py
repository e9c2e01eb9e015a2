"""The exception tree of fraudstack.

Every error this project raises on purpose derives from one root, so a caller can catch
``FraudstackError`` and know it is ours. Third-party errors are mapped at the boundary
(``raise StoreUnavailable(...) from exc``) so the cause survives in the traceback::

    FraudstackError
    ├── ConfigurationError        a setting is missing or wrong
    │   └── InvalidRouting        a published routing document is malformed
    │                             (defined in :mod:`fraudstack.routing`)
    ├── DevstackError             a local server could not be installed, started or reached
    ├── InvalidEvent              an event failed validation (ingestion answers 422; the stream
    │                             sends it to the dead-letter topic)
    ├── InvalidTable              a user's transaction table (``--events``) cannot be used
    ├── StoreError
    │   ├── StoreUnavailable      Redis or Kafka cannot be reached (HTTP 503)
    │   ├── StoreNotReady         the online store is being rebuilt: it came back empty and the
    │   │                         aggregators replay the topics into it (HTTP 503)
    │   ├── StoreRefused          Redis answered a command with an error reply
    │   │   └── ScriptNotLoaded   ``NOSCRIPT``: Redis does not have the script (it restarted)
    │   └── EntityNotFound        no features stored for a customer (HTTP 404)
    └── ModelError
        ├── ModelNotFound         a model version is not in the registry
        └── ModelIntegrityError   an artifact's sha256 differs from metadata.json
"""

from __future__ import annotations


class FraudstackError(Exception):
    """Root of every error raised by fraudstack on purpose."""


class ConfigurationError(FraudstackError):
    """A setting is missing or has an unusable value."""


class DevstackError(FraudstackError):
    """A server of the local stack could not be installed, started or reached."""


class InvalidEvent(FraudstackError):
    """An event failed validation; ``reasons`` says why, one line per problem."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class InvalidTable(FraudstackError):
    """A transaction table given by the user cannot be used; the message, one line, names the
    problem (a missing column, a wrong type, too few days, a period without frauds)."""


class StoreError(FraudstackError):
    """A problem with the online or offline store."""


class StoreUnavailable(StoreError):
    """The store (Redis, Kafka) cannot be reached right now; retrying later may work."""


class StoreNotReady(StoreError):
    """The online store does not hold every event yet (it came back empty and is being rebuilt,
    or no aggregator has filled it): its features would be wrong, not merely old."""


class StoreRefused(StoreError):
    """Redis answered a command with an error reply; ``code`` is its first word (``ERR``...)."""

    def __init__(self, message: str, code: str = "ERR") -> None:
        super().__init__(message)
        self.code = code


class ScriptNotLoaded(StoreRefused):
    """Redis does not know the script (``NOSCRIPT``): load it and send the command again."""


class EntityNotFound(StoreError):
    """No features are stored for this entity."""


class ModelError(FraudstackError):
    """A problem with a model in the registry."""


class ModelNotFound(ModelError):
    """The model version is not in the registry."""


class ModelIntegrityError(ModelError):
    """A model artifact is missing or its sha256 differs from ``metadata.json``."""
