"""Gunicorn configuration of the inference service (``gunicorn -c python:<this module>``).

Values come from :class:`~fraudstack.serve.settings.ServeSettings`. Why these choices:

* uvicorn workers on uvloop with httptools, one per core by default: each worker is an event
  loop that keeps many requests in flight while they wait on Redis, so more processes than cores
  only adds context switches;
* no access log (a formatted log line per request costs about as much as routing it; the
  metrics count every request), no ``Server`` header;
* Prometheus multiprocess mode: the master sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
  exists, wipes the folder when it starts, and marks a worker's files dead when it exits;
* the app is built per worker (no ``preload_app``): each worker loads its models in the lifespan,
  after the fork, so no onnxruntime thread pool is ever forked.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

from uvicorn_worker import UvicornWorker

from fraudstack.collector import collect_less_often
from fraudstack.errors import ConfigurationError
from fraudstack.paths import state_dir
from fraudstack.serve.settings import get_settings


class ServeWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 (the base class declares it so)
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,  # nothing here reads the client address
        "lifespan": "on",
    }


_settings = get_settings()
_metrics_dir = (
    _settings.metrics_dir
    or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    or str(state_dir() / "serve-metrics" / _settings.bind.replace(":", "-"))
)
# before prometheus_client is imported anywhere: it picks its storage at import time
if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    raise ConfigurationError(
        "prometheus_client was imported before the gunicorn configuration: the workers' "
        "metrics would not be shared"
    )
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

bind = _settings.bind
workers = _settings.workers
worker_class = f"{__name__}.ServeWorker"
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
backlog = 2048
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "fraudstack-serve"


def on_starting(server: Any) -> None:
    """Wipe the metrics of an earlier run (a counter must start at zero with the service)."""
    folder = Path(_metrics_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # only the client library's files: the folder may be shared
        stale.unlink()


def post_worker_init(worker: Any) -> None:
    """Make the cyclic garbage collector run less often in a serving worker (see
    :mod:`fraudstack.collector`).

    What the worker holds at this point (the imported modules and the app object) is frozen out
    of the collections; the lifespan runs later, and what it loads is mostly native memory
    (onnxruntime sessions, buffers) that the collector does not walk.
    """
    gc.collect()
    gc.freeze()
    collect_less_often()


def child_exit(server: Any, worker: Any) -> None:
    """Fold an exited worker's gauges out of the totals (counters keep their counts)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
