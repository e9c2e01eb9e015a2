"""A bulk writer for Redis: many commands encoded in C, sent as one buffer, replies read at once.

redis-py's pipeline encodes every argument in Python and reads every reply under its own
timeout; for the aggregator, which writes tens of thousands of commands a second, that was most
of the cost. Here each command is packed by hiredis (C), the whole batch goes out in one write,
and the replies are parsed by one hiredis reader. Everything else (reads, hydration, the
inference service) keeps using redis-py.

Errors are mapped at the boundary: a connection problem raises ``ConnectionError``/``OSError``
(the caller retries the batch, which is idempotent); an error reply raises
:class:`BulkCommandError` naming the first failed command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.connection import parse_url

Command = Sequence[str | bytes | int | float]


def _pack(command: Command) -> bytes:
    """One command in Redis's wire format, encoded by hiredis."""
    # hiredis's type stub declares a one-element tuple; any number of arguments is accepted.
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]
    return packed


class BulkCommandError(Exception):
    """Redis answered a command of the batch with an error."""


class BulkWriter:
    """One connection of its own, used for batches of writes."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.options: dict[str, Any] = parse_url(url)
        self.timeout_s = timeout_s
        self.scripts: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def register_script(self, source: str) -> str:
        """Remember a Lua script; returns the SHA1 to use with EVALSHA."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self.scripts[sha] = source
        return sha

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send every command and return every reply, in order."""
        if not commands:
            return []
        try:
            return await asyncio.wait_for(self._execute(commands), self.timeout_s)
        except NoScript:
            # Redis restarted and forgot the scripts: load them, run the (idempotent) batch again.
            await self._load_scripts()
            return await asyncio.wait_for(self._execute(commands), self.timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise ConnectionError(f"Redis bulk write failed: {exc!r}") from exc

    async def _execute(self, commands: Sequence[Command]) -> list[Any]:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(b"".join(_pack(command) for command in commands))
        await self._writer.drain()
        replies = await self._read(len(commands))
        for index, reply in enumerate(replies):
            if isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("NOSCRIPT"):
                    raise NoScript(str(reply))
                raise BulkCommandError(f"{commands[index][0]!r} failed: {reply}")
        return replies

    async def _read(self, count: int) -> list[Any]:
        assert self._reader is not None
        parser = hiredis.Reader()
        replies: list[Any] = []
        while len(replies) < count:
            chunk = await self._reader.read(1 << 20)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
            parser.feed(chunk)
            while len(replies) < count:
                reply = parser.gets()
                if reply is False:
                    break
                replies.append(reply)
        return replies

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.options.get("host", "127.0.0.1"), self.options.get("port", 6379)
        )
        handshake: list[Command] = []
        if self.options.get("password"):
            username = self.options.get("username")
            auth = (
                ["AUTH", username, self.options["password"]]
                if username
                else ["AUTH", self.options["password"]]
            )
            handshake.append(auth)
        handshake.append(["SELECT", int(self.options.get("db", 0))])
        self._writer.write(b"".join(_pack(c) for c in handshake))
        await self._writer.drain()
        for reply in await self._read(len(handshake)):
            if isinstance(reply, hiredis.ReplyError):
                raise ConnectionError(f"Redis refused the connection: {reply}")
        await self._load_scripts()

    async def _load_scripts(self) -> None:
        if not self.scripts:
            return
        if self._writer is None:
            await self._connect()
            return
        assert self._writer is not None
        loads = [("SCRIPT", "LOAD", source) for source in self.scripts.values()]
        self._writer.write(b"".join(_pack(load) for load in loads))
        await self._writer.drain()
        await self._read(len(loads))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


class NoScript(Exception):
    """Redis does not know a script (it restarted since we loaded it)."""
