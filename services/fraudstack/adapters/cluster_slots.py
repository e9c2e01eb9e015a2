"""Redis Cluster's addressing, without I/O: cluster URLs, hash slots, which key a command is
routed by, and RESP commands split apart, for :mod:`fraudstack.adapters.redis_cluster` and the
redis-py clients (:mod:`fraudstack.adapters.redis_clients`)."""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import hiredis

from fraudstack.errors import StoreUnavailable

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SLOTS = 16384
#: Commands sent to every master; the first master's reply is the answer.
EVERY_NODE = frozenset({b"SCRIPT", b"FLUSHDB", b"FLUSHALL"})
#: Commands without a key: any master answers them.
_KEYLESS = frozenset({b"PING", b"ECHO", b"INFO", b"DBSIZE", b"TIME", b"CLUSTER", b"COMMAND"})
_SCRIPTED = frozenset({b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"})


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def split_cluster_url(url: str) -> tuple[list[str], str]:
    """The seed addresses (``host:port``) of a cluster URL, and the single-node URL template
    (``{address}`` in place of the host) every node's link is opened with."""
    scheme, _, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES:
        raise StoreUnavailable(f"not a Redis Cluster URL (redis+cluster://...): {scheme!r}")
    location, slash, tail = rest.partition("/")
    if not slash:
        location, question, query = rest.partition("?")
        tail = f"?{query}" if question else ""
    else:
        tail = "/" + tail
    userinfo, at, hosts = location.rpartition("@")
    database = tail.lstrip("/").split("?", 1)[0]
    if database not in ("", "0"):
        raise StoreUnavailable(f"Redis Cluster has only database 0, not {database!r}")
    query = tail.partition("?")[2]
    seeds = []
    for host in filter(None, hosts.split(",")):
        name, colon, port = unquote(host).rpartition(":")
        seeds.append(f"{name}:{port}" if colon else f"{port}:6379")
    if not seeds:
        raise StoreUnavailable("a Redis Cluster URL names at least one host:port")
    template = f"{CLUSTER_SCHEMES[scheme]}://{userinfo}{at}{{address}}/0"
    return seeds, template + (f"?{query}" if query else "")


def key_slot(key: bytes) -> int:
    """The hash slot of ``key``: CRC16 (XMODEM) of its hash tag if it has one, else of it all."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % SLOTS


def raw(part: bytes | str | int | float) -> bytes:
    return part if isinstance(part, bytes) else str(part).encode()


def key_of(name: bytes, arguments: Sequence[bytes | str | int | float]) -> bytes | None:
    """The key a command is routed by (None: keyless); ``arguments`` follow the name."""
    if name in _SCRIPTED:
        # EVALSHA sha numkeys key...: by its first key, any node when it has none
        return raw(arguments[2]) if len(arguments) > 2 and raw(arguments[1]) != b"0" else None
    if name in _KEYLESS or not arguments:
        return None
    return raw(arguments[0])


def redirection(reply: Any) -> tuple[str, int, str] | None:
    """``(MOVED|ASK|TRYAGAIN, slot, address)`` of a redirection reply; None for anything else."""
    if not isinstance(reply, hiredis.ReplyError):
        return None
    text = str(reply)
    if text.startswith(("MOVED ", "ASK ")):
        kind, slot, address = text.split(" ", 2)
        return kind, int(slot), address
    if text.startswith("TRYAGAIN"):
        return "TRYAGAIN", -1, ""
    return None


def parse_commands(payload: bytes, expected: int) -> list[tuple[bytes, bytes | None, bytes]]:
    """Split ``expected`` RESP-encoded commands: (name, routing key, the command's bytes)."""
    commands = []
    position = 0
    for number in range(expected):
        start = position
        if payload[position : position + 1] != b"*":
            raise StoreUnavailable("online store cluster: a command not in the RESP array form")
        end = payload.index(b"\r\n", position)
        count = int(payload[position + 1 : end])
        position = end + 2
        # the last command runs to the payload's end: only what may hold its key is read
        wanted = min(count, 4) if number == expected - 1 else count
        arguments: list[bytes] = []
        for _ in range(wanted):
            end = payload.index(b"\r\n", position)
            length = int(payload[position + 1 : end])
            if len(arguments) < 4:  # the name, and what may hold the key (EVALSHA: the 4th)
                arguments.append(payload[end + 2 : end + 2 + length])
            position = end + 2 + length + 2
        if wanted < count:
            position = len(payload)
        name = arguments[0].upper()
        commands.append((name, key_of(name, arguments[1:]), payload[start:position]))
    return commands


def parse_arguments(encoded: bytes) -> list[bytes]:
    """Every argument of one RESP-encoded command."""
    end = encoded.index(b"\r\n")
    count = int(encoded[1:end])
    position = end + 2
    arguments = []
    for _ in range(count):
        end = encoded.index(b"\r\n", position)
        length = int(encoded[position + 1 : end])
        arguments.append(encoded[end + 2 : end + 2 + length])
        position = end + 2 + length + 2
    return arguments
