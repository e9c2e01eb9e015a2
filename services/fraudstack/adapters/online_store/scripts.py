"""The store's Lua scripts: ``.lua`` files of this package, loaded once at start.

Each source gets the names of :mod:`.layout` prepended (:func:`~.layout.lua_header`), so a field
is named in one place, and then ``common.lua``, the functions the scripts share. Commands call a
script by its SHA-1 (``EVALSHA``); a Redis that does not have it (it restarted, or was flushed)
answers ``NOSCRIPT``, which the link raises as :class:`~fraudstack.errors.ScriptNotLoaded`, and
:func:`execute` loads the scripts and sends the batch again (every command the store sends is
idempotent).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fraudstack.adapters.online_store.layout import lua_header
from fraudstack.adapters.redis_link import Command, RedisLink
from fraudstack.errors import ScriptNotLoaded


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        folder = files("fraudstack.adapters.online_store")
        body = folder.joinpath(f"{name}.lua").read_text()
        source = lua_header() + folder.joinpath("common.lua").read_text() + body
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())

    def call(
        self, keys: tuple[str, ...], *args: bytes | str | int | float
    ) -> list[bytes | str | int | float]:
        """The ``EVALSHA`` command that runs this script on ``keys`` (all of one slot)."""
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


CUSTOMER_WRITE = Script.load("customer_write")
TERMINAL_WRITE = Script.load("terminal_write")
SNAPSHOT_WRITE = Script.load("snapshot_write")
WATERMARKS_WRITE = Script.load("watermarks_write")
CLAIM = Script.load("claim")
CAUGHT_UP = Script.load("caught_up")
ALL = (CUSTOMER_WRITE, TERMINAL_WRITE, SNAPSHOT_WRITE, WATERMARKS_WRITE, CLAIM, CAUGHT_UP)


async def execute(link: RedisLink, commands: list[Command]) -> list[Any]:
    """Run a batch and return its replies, loading the scripts first if Redis lost them."""
    if not commands:
        return []
    try:
        return await link.execute_many(commands)
    except ScriptNotLoaded:
        pass
    await link.execute_many([("SCRIPT", "LOAD", script.source) for script in ALL])
    return await link.execute_many(commands)
