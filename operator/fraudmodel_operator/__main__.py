"""``python -m fraudmodel_operator``: run the FraudModel operator (what the chart's pod runs).

Standalone (one replica, no kopf peering objects: the Deployment's Recreate strategy keeps two
from running at once), watching ``FRAUDSTACK_OPERATOR_NAMESPACE`` (every namespace when empty),
with kopf's liveness endpoint on ``FRAUDSTACK_OPERATOR_HEALTH_PORT`` at ``/healthz``.
Settings: :mod:`fraudmodel_operator.settings`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import kopf
from pydantic import ValidationError

from fraudmodel_operator.handlers import build_registry
from fraudmodel_operator.settings import OperatorSettings, get_settings
from fraudstack.errors import FraudstackError


def _variables() -> list[str]:
    """The environment variable of every setting, read from the settings class itself."""
    prefix = OperatorSettings.model_config.get("env_prefix", "")
    return [
        field.validation_alias
        if isinstance(field.validation_alias, str)
        else f"{prefix}{name}".upper()
        for name, field in OperatorSettings.model_fields.items()
    ]


def build_parser() -> argparse.ArgumentParser:
    """No options: the settings come from the environment, listed in ``--help``."""
    return argparse.ArgumentParser(
        prog="python -m fraudmodel_operator",
        description=(
            "Run the FraudModel operator: roll model versions out from FraudModel resources "
            "and publish the routing to Redis."
        ),
        epilog=(
            f"settings (environment): {', '.join(_variables())}; "
            "Kubernetes credentials from the pod's service account, or KUBECONFIG"
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    # the arguments first, so `--help` answers where no setting is set (say in an image check)
    build_parser().parse_args(argv)
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
