"""Settings of the FraudModel operator (``python -m fraudmodel_operator``).

Besides the common ones (:mod:`fraudstack.settings`: ``FRAUDSTACK_REDIS_URL``,
``FRAUDSTACK_PROMETHEUS_URL``, ``FRAUDSTACK_MODEL_REGISTRY_URI``), every setting has its own
variable, documented beside it. The Kubernetes credentials are the pod's service account, or
the kubeconfig (``KUBECONFIG``) outside a cluster, as for any kopf operator.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fraudstack.routing import DEFAULT_ROUTING_KEY, ROUTING_KEY_VARIABLE
from fraudstack.settings import CommonSettings


def _variable(name: str) -> str:
    return f"FRAUDSTACK_OPERATOR_{name.upper()}"


class OperatorSettings(CommonSettings):
    # fields read FRAUDSTACK_OPERATOR_<NAME>; a keyword argument may still use the field's name
    model_config = SettingsConfigDict(
        env_prefix="FRAUDSTACK_", extra="ignore", populate_by_name=True
    )

    namespace: str = Field(default="", validation_alias=_variable("namespace"))
    """``FRAUDSTACK_OPERATOR_NAMESPACE``: the namespace whose FraudModels are served (the chart
    sets the release's); empty means every namespace, for a developer's cluster."""
    health_port: int = Field(
        default=8080, ge=1, le=65535, validation_alias=_variable("health_port")
    )
    """``FRAUDSTACK_OPERATOR_HEALTH_PORT``: port of kopf's liveness endpoint ``/healthz``."""
    routing_key: str = Field(
        default=DEFAULT_ROUTING_KEY, min_length=1, validation_alias=ROUTING_KEY_VARIABLE
    )
    """``FRAUDSTACK_ROUTING_KEY``: the Redis key the routing is published at; the inference
    service reads the same variable."""
    reconcile_seconds: float = Field(
        default=5.0, gt=0, le=300, validation_alias=_variable("reconcile_seconds")
    )
    """``FRAUDSTACK_OPERATOR_RECONCILE_SECONDS``: how often every FraudModel is looked at again
    (rollout clock, gates, a lost Redis key); changes to the spec are handled at once anyway."""
    gate_min_window_seconds: float = Field(
        default=60.0, gt=0, validation_alias=_variable("gate_min_window_seconds")
    )
    """``FRAUDSTACK_OPERATOR_GATE_MIN_WINDOW_SECONDS``: the gates read the step's own duration of
    metrics, but never less than this, so a step shorter than a few scrape intervals still has
    samples to compare."""
    gate_selector: str = Field(default="", validation_alias=_variable("gate_selector"))
    """``FRAUDSTACK_OPERATOR_GATE_SELECTOR``: extra PromQL label matchers added to every gate
    query, e.g. ``namespace="fraudstack"`` when one Prometheus scrapes several installations."""
    prometheus_timeout_seconds: float = Field(
        default=5.0, gt=0, validation_alias=_variable("prometheus_timeout_seconds")
    )
    """``FRAUDSTACK_OPERATOR_PROMETHEUS_TIMEOUT_SECONDS``: a gate query slower than this counts as
    "no figures yet" (the rollout waits, it does not fail)."""


@lru_cache
def get_settings() -> OperatorSettings:
    """The settings, read once."""
    return OperatorSettings()
