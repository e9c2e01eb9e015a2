"""What every server of the local stack looks like to ``Devstack``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ServerInfo = dict[str, Any]
"""What a started server records in the state file: ``pids`` and ``marker`` (to stop it),
``address`` (what clients use) and anything else its clients need."""


@dataclass(frozen=True)
class Context:
    """Where a server keeps its data and logs (``state_dir``) and its downloads (``cache_dir``)."""

    state_dir: Path
    cache_dir: Path

    def server_dir(self, name: str) -> Path:
        path = self.state_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class Server(ABC):
    """One real server run as a local process on loopback."""

    name: str

    def prepare(self, context: Context) -> None:  # noqa: B027 - optional hook
        """Install or build what the server needs (cached); runs before ``start``."""

    @abstractmethod
    def start(self, context: Context) -> ServerInfo:
        """Start the server on free ports and return once it answers."""

    @abstractmethod
    def answers(self, info: ServerInfo) -> bool:
        """One cheap real request: does the server answer right now?"""

    def stop(self, info: ServerInfo) -> None:
        """Stop what ``start`` recorded; a server that sets up more than processes undoes it."""
        from fraudstack.devstack.process import stop

        for pid in info["pids"]:
            stop(pid, info["marker"])

    def fits(self, info: ServerInfo) -> bool:
        """Whether the recorded server is the one asked for (a restart otherwise)."""
        return True

    def environment(self, info: ServerInfo) -> dict[str, str]:
        """The ``FRAUDSTACK_*`` settings that point the roles at this server."""
        return {}
