"""The store's clients against a real redis-server that demands a password, an ACL user and TLS.

One URL configures every client of the store (the request path's ``RedisLink``, redis-py in the
bulk loader, the operator and the readers): ``rediss://user:password@host:port/db`` with
redis-py's ``ssl_ca_certs`` for the CA. The certificates are made here with ``openssl`` (a CA,
and a server certificate for 127.0.0.1 signed by it), as an operator would for a private CA.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from fraudstack.adapters.online_store.reader import OnlineStoreReader
from fraudstack.adapters.redis_link import RedisLink
from fraudstack.aggregate.bulk import load_table
from fraudstack.devstack.redis_server import PrivateRedis
from fraudstack.errors import StoreUnavailable

PASSWORD = "default-pw"
#: An ACL user allowed the store's keys and commands, and one allowed nothing but PING.
ALICE = ("alice", "alice-pw")
LIMITED = ("limited", "limited-pw")


def openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA and a server certificate for 127.0.0.1 that it signed."""
    folder = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=folder)  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt",
            cwd=folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, certificates: Path) -> Iterator[PrivateRedis]:
    """requirepass, two ACL users, and TLS only (no plain-text port)."""
    ca = certificates / "ca.crt"
    server = PrivateRedis(
        tmp_path_factory.mktemp("secured-redis"),
        options=[
            *("--port", "0", "--tls-port", "{port}"),
            *("--tls-cert-file", str(certificates / "server.crt")),
            *("--tls-key-file", str(certificates / "server.key")),
            *("--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"),
            *("--requirepass", PASSWORD),
            *("--user", ALICE[0], "on", f">{ALICE[1]}", "~*", "&*", "+@all"),
            *("--user", LIMITED[0], "on", f">{LIMITED[1]}", "~nothing:*", "+ping", "+hello"),
        ],
        url=f"rediss://{ALICE[0]}:{ALICE[1]}@127.0.0.1:{{port}}/0?ssl_ca_certs={ca}",
    ).start()
    try:
        yield server
    finally:
        server.stop()


def url_of(server: PrivateRedis, user: str | None, password: str, query: str) -> str:
    who = f"{user}:{password}" if user else f":{password}"
    return f"rediss://{who}@127.0.0.1:{server.port}/0{query}"


def ca_query(certificates: Path) -> str:
    return f"?ssl_ca_certs={certificates / 'ca.crt'}"


async def test_the_request_path_authenticates_with_a_password_or_an_acl_user_over_tls(
    secured: PrivateRedis, certificates: Path
) -> None:
    for user, password in ((None, PASSWORD), ALICE):
        link = RedisLink(url_of(secured, user, password, ca_query(certificates)))
        try:
            assert await link.ping()
            await link.execute_many([(b"SET", b"secured-key", b"v")])
            assert await link.get("secured-key") == b"v"
        finally:
            await link.close()


async def test_wrong_credentials_and_missing_rights_are_refused_with_the_reason(
    secured: PrivateRedis, certificates: Path
) -> None:
    link = RedisLink(url_of(secured, ALICE[0], "not-her-password", ca_query(certificates)))
    with pytest.raises(StoreUnavailable, match="WRONGPASS"):
        await link.get("secured-key")
    await link.close()
    link = RedisLink(url_of(secured, *LIMITED, ca_query(certificates)))
    try:
        assert await link.ping()  # allowed in
        with pytest.raises(Exception, match="NOPERM"):  # but not to the store's keys
            await link.get("secured-key")
    finally:
        await link.close()


async def test_tls_trusts_only_the_configured_ca(secured: PrivateRedis, certificates: Path) -> None:
    # the system's trust store does not know the private CA: the server is not trusted
    link = RedisLink(url_of(secured, *ALICE, ""), connect_timeout=5)
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await link.get("x")
    await link.close()
    # a CA file that does not exist is a clear error when the client is made, not a hang later
    with pytest.raises(StoreUnavailable, match="TLS settings unusable"):
        RedisLink(url_of(secured, *ALICE, "?ssl_ca_certs=/nonexistent/ca.crt"))


async def test_every_client_of_the_store_takes_the_same_url(
    secured: PrivateRedis, certificates: Path
) -> None:
    table = pa.table(
        {
            "txn_id": ["1", "2"],
            "ts": [1_530_000_000_000, 1_530_000_060_000],
            "customer_id": ["c1", "c1"],
            "terminal_id": ["t1", "t2"],
            "amount": [10.0, 20.5],
            "is_fraud": [False, False],
        }
    )
    url = secured.url
    load_table(url, table)  # redis-py
    assert redis.Redis.from_url(url).exists("fs:{customer:c1}")
    reader = OnlineStoreReader.from_url(url)  # the readers (snapshot, consistency check)
    try:
        newest = await reader.newest("c1")
        assert newest is not None and newest.last.txn_id == "2"
    finally:
        await reader.close()
