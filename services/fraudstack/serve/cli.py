"""``fraudstack serve``: the inference service under gunicorn with uvicorn workers.

Options override the matching ``FRAUDSTACK_SERVE_*`` variables (see
:mod:`fraudstack.serve.settings`). Before any worker starts, the models of the routing are
checked against the sha256 in their ``metadata.json``, so a missing or corrupt artifact stops
the command with one clear line instead of a worker traceback; the stable version is then pinned,
so every worker serves the same one even if a newer model is published meanwhile.

``--wait-for-model`` waits for a model that is not published yet instead of failing: the chart
runs ``serve --check --wait-for-model`` as the inference pods' init container, so before the
first training a pod stays not Ready (``Init:0/1``), and starts as soon as a model appears,
rather than exiting into a CrashLoopBackOff whose back-off would outlast the training.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from fraudstack.adapters.registry import ModelRegistry
from fraudstack.errors import ModelNotFound

if TYPE_CHECKING:
    from fraudstack.serve.models import RoutingSpec
    from fraudstack.serve.settings import ServeSettings

#: How often ``--wait-for-model`` looks at the registry again.
WAIT_INTERVAL_SECONDS = 2.0

# option -> the variable it overrides
_OVERRIDES = {
    "bind": "FRAUDSTACK_SERVE_BIND",
    "workers": "FRAUDSTACK_SERVE_WORKERS",
    "model_version": "FRAUDSTACK_SERVE_MODEL_VERSION",
    "candidate_version": "FRAUDSTACK_SERVE_CANDIDATE_VERSION",
    "candidate_share": "FRAUDSTACK_SERVE_CANDIDATE_SHARE",
    "registry": "FRAUDSTACK_MODEL_REGISTRY_URI",
    "redis_url": "FRAUDSTACK_REDIS_URL",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", help="host:port to listen on (FRAUDSTACK_SERVE_BIND)")
    parser.add_argument("--workers", type=int, help="worker processes (FRAUDSTACK_SERVE_WORKERS)")
    parser.add_argument("--model-version", help="stable model; default the registry's newest")
    parser.add_argument("--candidate-version", help="candidate model (optional)")
    parser.add_argument(
        "--candidate-share", type=float, help="percent of customers the candidate scores"
    )
    parser.add_argument("--registry", help="model registry root (FRAUDSTACK_MODEL_REGISTRY_URI)")
    parser.add_argument("--redis-url", help="online store (FRAUDSTACK_REDIS_URL)")
    parser.add_argument(
        "--check", action="store_true", help="only check the settings and the models, then exit"
    )
    parser.add_argument(
        "--wait-for-model",
        action="store_true",
        help="wait until the registry holds the model(s) instead of failing",
    )


def run(args: argparse.Namespace) -> int:
    for option, variable in _OVERRIDES.items():
        value = getattr(args, option, None)
        if value is not None:
            os.environ[variable] = str(value)

    # not the app: prometheus_client must not be imported before gunicorn_conf sets its folder
    from fraudstack.serve.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    settings.require("redis_url")
    spec = _verified_routing(settings, wait=args.wait_for_model)
    os.environ["FRAUDSTACK_SERVE_MODEL_VERSION"] = spec.stable
    get_settings.cache_clear()
    print(
        f"fraudstack serve: models {', '.join(filter(None, (spec.stable, spec.candidate)))} "
        f"verified; {settings.workers} workers on {settings.bind}",
        flush=True,
    )
    if args.check:
        return 0
    _Gunicorn().run()  # exits the process when gunicorn stops
    return 0


def _verified_routing(settings: ServeSettings, wait: bool) -> RoutingSpec:
    """The routing's models, checked; with ``wait``, once they are published."""
    from fraudstack.serve.models import routing_spec

    registry = ModelRegistry(settings.model_registry_uri)
    announced = False
    while True:
        try:
            spec = routing_spec(settings)
            for version in filter(None, (spec.stable, spec.candidate)):
                registry.verify(version)
            return spec
        except ModelNotFound as exc:
            if not wait:
                raise
            if not announced:
                print(f"fraudstack serve: {exc}; waiting for it", flush=True)
                announced = True
            time.sleep(WAIT_INTERVAL_SECONDS)


class _Gunicorn(BaseApplication):
    """Gunicorn run in this process, configured from :mod:`fraudstack.serve.gunicorn_conf`."""

    def load_config(self) -> None:
        from fraudstack.serve import gunicorn_conf

        for name in self.cfg.settings:
            value: Any = getattr(gunicorn_conf, name, None)
            if value is not None:
                self.cfg.set(name, value)

    def load(self) -> Any:
        # called in each worker after the fork: the app (and its lifespan) is per worker
        from fraudstack.serve.app import create_app

        return create_app()
