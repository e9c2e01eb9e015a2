"""The serve tests' Redis: a private ``redis-server`` (a free port, no persistence) instead of the
devstack's, so stopping it to see the service answer 503 leaves every other test alone."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from fraudstack.aggregate.bulk import load_table
from fraudstack.devstack.redis_server import PrivateRedis


@pytest.fixture(scope="session")
def store(
    tmp_path_factory: pytest.TempPathFactory, transactions: pa.Table
) -> Iterator[PrivateRedis]:
    """A private redis-server holding the table, as the stream would have written it."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        load_table(server.url, transactions)
        yield server
    finally:
        server.stop()
