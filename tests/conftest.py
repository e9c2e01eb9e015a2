"""Session fixtures: one real local stack (Redis, Kafka, Prometheus) for the whole test run.

The stack runs in a state folder of its own, so a developer's running devstack is left alone;
the folder is exported as ``FRAUDSTACK_STATE_DIR`` before anything reads settings, so services
started by tests (as subprocesses too) find the same servers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_STATE = Path(tempfile.mkdtemp(prefix="fraudstack-test-"))
os.environ["FRAUDSTACK_STATE_DIR"] = str(_STATE)
for _variable in (
    "FRAUDSTACK_REDIS_URL",
    "FRAUDSTACK_KAFKA_BOOTSTRAP",
    "FRAUDSTACK_PROMETHEUS_URL",
):
    os.environ.pop(_variable, None)

from fraudstack.devstack import Devstack  # noqa: E402  (after the environment is set)
from fraudstack.devstack.base import ServerInfo  # noqa: E402

#: Shared fixtures and helpers (``tests/support``), available to every folder.
pytest_plugins = [
    "support.serving",
    "support.crowd",
    "support.kube",
    "support.aggregation",
    "support.cluster",
]


@pytest.fixture(scope="session")
def devstack() -> Iterator[dict[str, ServerInfo]]:
    stack = Devstack(state=_STATE)
    try:
        yield stack.up(progress=False)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def redis_url(devstack: dict[str, ServerInfo]) -> str:
    return str(devstack["redis"]["address"])


@pytest.fixture(scope="session")
def kafka_bootstrap(devstack: dict[str, ServerInfo]) -> str:
    return str(devstack["kafka"]["address"])


@pytest.fixture(scope="session")
def prometheus(devstack: dict[str, ServerInfo]) -> ServerInfo:
    return devstack["prometheus"]
