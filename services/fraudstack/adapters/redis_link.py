"""One pipelined Redis connection per worker, for the request path.

Why not redis-py's asyncio client: measured on a 2-core machine, one ``HGETALL``
through it costs about 120 µs of CPU under concurrent load (pool checkout, locks and parser layers
per command), more than everything else a prediction does together. Redis answers the commands
of one connection in order, so concurrent requests can share a single socket: each request
queues its commands with a future, the commands queued during one turn of the event loop leave
in one ``send``, and hiredis parses the replies as they arrive, handing them out in order. Under
load this is automatic pipelining across requests, at a few µs of CPU per command.

Failure semantics (every failure is :class:`~fraudstack.errors.StoreUnavailable`, mapped to a
503 by the service; the cause is chained):

* no connection: the first request after a loss connects again; when that fails, requests fail
  at once for ``retry_after`` seconds, then the next one tries again. Nothing needs a restart
  when Redis comes back.
* a reply slower than ``timeout``: the connection is dropped and every request waiting on it
  fails (a connection whose oldest command does not answer is stuck for all the others too).
* an error reply (``-ERR``...): that request fails; the connection stays.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path[?db=N]``;
``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster://``) for a Redis
Cluster, served by :mod:`fraudstack.adapters.redis_cluster` behind the same interface.
A user and password authenticate the session (``HELLO 3 AUTH``: an ACL user, or ``default`` for
a ``requirepass`` server). TLS takes the query parameters redis-py takes, so one URL serves every
client of the store: ``ssl_ca_certs`` (the CA file that signed the server's certificate; the
system's trust store otherwise), ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate, for
servers that require one), ``ssl_check_hostname`` (``false`` to accept a certificate that does
not name the host) and ``ssl_cert_reqs`` (``none`` to skip verification: for tests only).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from fraudstack.adapters.cluster_slots import is_cluster_url
from fraudstack.errors import ScriptNotLoaded, StoreError, StoreRefused, StoreUnavailable


def bulk_string(part: bytes | str) -> bytes:
    """One argument of a command in the Redis protocol (RESP)."""
    raw = part.encode() if isinstance(part, str) else part
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def command_head(arguments: int) -> bytes:
    """What starts a command of ``arguments`` parts (the name included)."""
    return b"*%d\r\n" % arguments


def encode_command(*parts: bytes | str) -> bytes:
    """One command in the Redis protocol (RESP), ready to send."""
    return command_head(len(parts)) + b"".join(map(bulk_string, parts))


Command = Sequence[bytes | str | int | float]


def encode_commands(commands: Iterable[Command]) -> bytes:
    """Many commands in RESP, packed by hiredis in C: for writers of thousands per batch."""
    # hiredis's type stub declares a one-element tuple; any number of arguments is accepted.
    pack = hiredis.pack_command
    return b"".join([pack(tuple(command)) for command in commands])  # type: ignore[arg-type]


class _Waiter:
    """One request's place in the reply queue."""

    __slots__ = ("expected", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._waiting: deque[_Waiter] = deque()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False
        self.lost_reason = "connection closed"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._watchdog = self._loop.call_later(self._timeout / 2, self._check_stuck)

    def send(self, payload: bytes, expected: int) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        if self.closed:
            future.set_exception(StoreUnavailable(f"online store unreachable: {self.lost_reason}"))
            return future
        self._waiting.append(_Waiter(future, expected, self._loop.time()))
        outgoing = self._outgoing
        outgoing.append(payload)
        if len(outgoing) == 1:
            # everything queued until the loop comes round leaves in one send
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if self._transport is None or self.closed:
            return
        payload = b"".join(self._outgoing)
        self._outgoing.clear()
        self._transport.write(payload)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiting = self._waiting
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                waiter = waiting[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.expected:
                    waiting.popleft()
                    if not waiter.future.done():  # a cancelled request still owns its replies
                        waiter.future.set_result(waiter.replies)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self.abort(f"unreadable reply from Redis: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.lost_reason == "connection closed":
            self.lost_reason = f"connection lost: {exc}"
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(
                    StoreUnavailable(f"online store unreachable: {self.lost_reason}")
                )

    def abort(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.lost_reason = reason
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows and fails the waiters
        else:
            self.connection_lost(None)

    def _check_stuck(self) -> None:
        if self.closed:
            return
        if self._waiting and self._loop.time() - self._waiting[0].sent_at > self._timeout:
            self.abort(f"no reply within {self._timeout * 1000:.0f} ms")
            return
        self._watchdog = self._loop.call_later(self._timeout / 2, self._check_stuck)


class RedisLink:
    """A pipelined connection to one Redis server; create it and use it in one event loop.

    A Redis Cluster URL (``redis+cluster://host:port,...``) makes a
    :class:`~fraudstack.adapters.redis_cluster.ClusterLink` instead (as ``Path`` makes a
    ``PosixPath``), so every user of the link runs unchanged on a cluster while this class's
    request path stays as it is.
    """

    def __new__(cls, url: str, **options: float) -> RedisLink:
        if cls is RedisLink and is_cluster_url(url):
            from fraudstack.adapters.redis_cluster import ClusterLink

            return super().__new__(ClusterLink)
        return super().__new__(cls)

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        connect_timeout: float = 1.0,
        retry_after: float = 0.1,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._retry_after = retry_after
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._last_error = "not connected yet"
        self._target, self._handshake = _parse_url(url)
        #: Connections opened so far. A new one may mean a new server process (a restart, a
        #: failover) that lost recent writes: whoever keeps a copy of what it wrote compares it.
        self.connections = 0

    async def execute(self, payload: bytes, expected: int = 1) -> list[Any]:
        """Send ``payload`` (``expected`` encoded commands) and return their replies in order."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connection()
        replies = await protocol.send(payload, expected)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise refusal(reply)
        return replies

    async def send(self, payload: bytes, expected: int = 1) -> list[Any]:
        """:meth:`execute`, with error replies returned among the others, not raised (for the
        cluster link, which follows ``MOVED`` and ``ASK`` replies)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connection()
        return await protocol.send(payload, expected)

    async def execute_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send a batch of commands in one write and return every reply, in order."""
        return await self.execute(encode_commands(commands), len(commands))

    async def get(self, key: str) -> bytes | None:
        """The string value at ``key`` (the routing document, for instance)."""
        (value,) = await self.execute(encode_command(b"GET", key))
        return cast(bytes | None, value)

    async def ping(self) -> bool:
        """Whether Redis answers right now (connecting if needed)."""
        try:
            replies = await self.execute(_PING)
        except StoreError:
            return False
        return replies[0] in (b"PONG", "PONG")

    async def close(self) -> None:
        """Drop the connection; one still being opened is abandoned, not left behind."""
        task, self._connect_task = self._connect_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.abort("closed by the service")

    async def _connection(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            if loop.time() < self._retry_at:
                raise StoreUnavailable(f"online store unreachable: {self._last_error}")
            self._connecting = loop.create_future()
            self._connect_task = loop.create_task(self._connect(self._connecting))
        # shielded: a cancelled request must not cancel the connection others wait for
        return await asyncio.shield(self._connecting)

    async def _connect(self, done: asyncio.Future[_Protocol]) -> None:
        loop = asyncio.get_running_loop()
        kind, address, tls = self._target
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if kind == "unix":
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(loop, self._timeout), address
                    )
                else:
                    host, port = address.rsplit(":", 1)
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(loop, self._timeout),
                        host,
                        int(port),
                        ssl=tls,
                    )
                if self._handshake:
                    replies = await protocol.send(b"".join(self._handshake), len(self._handshake))
                    refused = [r for r in replies if isinstance(r, hiredis.ReplyError)]
                    if refused:
                        protocol.abort("handshake refused")
                        hint = (
                            " (HELLO 3 needs Redis 6 or later)"
                            if "unknown" in str(refused[0])
                            else ""
                        )
                        raise StoreUnavailable(
                            f"online store refused the session{hint}: {refused[0]}"
                        )
        except asyncio.CancelledError:  # close() while connecting
            if protocol is not None:
                protocol.abort("closed by the service")
            self._connecting = None
            if not done.done():
                done.set_exception(StoreUnavailable("online store link closed"))
                done.exception()
            raise
        except (OSError, TimeoutError, StoreUnavailable) as exc:
            if protocol is not None:
                protocol.abort("the session could not be opened")
            self._last_error = str(exc) or type(exc).__name__
            self._retry_at = loop.time() + self._retry_after
            self._connecting = None
            failure = (
                exc
                if isinstance(exc, StoreUnavailable)
                else StoreUnavailable(f"online store unreachable: {self._last_error}")
            )
            if failure is not exc:
                failure.__cause__ = exc
            done.set_exception(failure)
            done.exception()  # retrieved here: nobody may be waiting any more
            return
        assert protocol is not None
        self._protocol = protocol
        self.connections += 1
        self._connecting = None
        done.set_result(protocol)


_PING = encode_command(b"PING")


def tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    """The TLS settings of a ``rediss://`` URL, with redis-py's parameter names."""

    def option(name: str) -> str | None:
        return query.get(name, [None])[-1]

    context = ssl.create_default_context(cafile=option("ssl_ca_certs"))
    certificate = option("ssl_certfile")
    if certificate:
        context.load_cert_chain(certificate, option("ssl_keyfile"))
    if (option("ssl_check_hostname") or "true").lower() in ("false", "0", "no"):
        context.check_hostname = False
    if (option("ssl_cert_reqs") or "required").lower() == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _parse_url(url: str) -> tuple[tuple[str, str, ssl.SSLContext | None], list[bytes]]:
    """Where to connect (kind, address, TLS) and the commands that open the session.

    ``HELLO 3`` switches to RESP3, whose maps hiredis hands over as dicts (an ``HGETALL`` needs
    no pairing up in Python); it needs Redis 6 or later.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    target: tuple[str, str, ssl.SSLContext | None]
    if parts.scheme == "unix":
        target = ("unix", parts.path, None)
        db = query.get("db", ["0"])[0]
    elif parts.scheme in ("redis", "rediss"):
        host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
        try:
            tls = tls_context(query) if parts.scheme == "rediss" else None
        except (OSError, ssl.SSLError) as exc:
            raise StoreUnavailable(f"online store TLS settings unusable: {exc}") from exc
        target = ("tcp", host, tls)
        db = parts.path.lstrip("/") or query.get("db", ["0"])[0]
    else:
        raise StoreUnavailable(f"unsupported Redis URL scheme {parts.scheme!r}")
    hello: list[bytes | str] = [b"HELLO", b"3"]
    if parts.password is not None:
        hello += [b"AUTH", unquote(parts.username or "default"), unquote(parts.password)]
    handshake = [encode_command(*hello)]
    if db and db != "0":
        handshake.append(encode_command(b"SELECT", db))
    return target, handshake


#: Error replies that are an error of their own (redis-py maps them alike), by their first word.
_REFUSALS: dict[str, type[StoreRefused]] = {"NOSCRIPT": ScriptNotLoaded}


def refusal(reply: Exception) -> StoreRefused:
    """The typed error of an error reply (``-NOSCRIPT ...``, ``-ERR ...``)."""
    text = str(reply)
    code = text.split(" ", 1)[0]
    return _REFUSALS.get(code, StoreRefused)(f"online store refused a command: {text}", code)


def hash_reply(reply: dict[bytes, bytes] | list[Any]) -> dict[bytes, bytes]:
    """An ``HGETALL`` reply as a mapping (RESP3 gives one already; RESP2 a flat list)."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it, strict=True))
