"""The serve tests' Redis: the session's private one holding the test table (``serve_store``)."""

from __future__ import annotations

import pytest

from fraudstack.devstack.redis_server import PrivateRedis


@pytest.fixture(scope="session")
def store(serve_store: PrivateRedis) -> PrivateRedis:
    return serve_store
