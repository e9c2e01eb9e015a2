"""``python -m fraudmodel_operator``: run the FraudModel operator (what the chart's pod runs).

Standalone (one replica, no kopf peering objects: the Deployment's Recreate strategy keeps two
from running at once), watching ``FRAUDSTACK_OPERATOR_NAMESPACE`` (every namespace when empty),
with kopf's liveness endpoint on ``FRAUDSTACK_OPERATOR_HEALTH_PORT`` at ``/healthz``.
Settings: :mod:`fraudmodel_operator.settings`.
"""

from __future__ import annotations

import logging
import sys

import kopf
from pydantic import ValidationError

from fraudmodel_operator.handlers import build_registry
from fraudmodel_operator.settings import get_settings
from fraudstack.errors import FraudstackError


def main() -> int:
    try:
        settings = get_settings()
        settings.require("redis_url")
    except (FraudstackError, ValidationError) as exc:
        print(f"fraudmodel-operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.run(
        registry=build_registry(settings),
        standalone=True,
        clusterwide=not settings.namespace,
        namespaces=[settings.namespace] if settings.namespace else [],
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
