"""The pipelined link on Redis Cluster: one :class:`RedisLink` per master, commands by slot.

Chosen by the URL: ``redis+cluster://[[user]:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS, with the query parameters of ``rediss://``). The hosts are
seeds: the link asks one of them for the slot map (``CLUSTER SLOTS``) and from then on talks to
every master directly.
``RedisLink(url)`` with such a URL returns a :class:`ClusterLink`, so every user of the link
(the inference service, the aggregator, snapshot, the consistency check) runs unchanged on a
cluster; the single-node link keeps its code path, untouched.

Routing: a command goes to the master of its key's hash slot (CRC16 of the key, or of the part
in ``{...}`` when there is one: the store's keys carry ``{customer:<id>}`` / ``{terminal:<id>}``,
so every command and script touches one slot). ``EVAL``/``EVALSHA`` go by their first key.
A batch is split by node, each node's share leaves in one write on that node's pipelined
connection (all nodes at once), and the replies come back in the batch's order. Keyless commands
(``PING``) go to any master; ``SCRIPT``, ``FLUSHDB`` and ``FLUSHALL`` go to every master (a script
must be loaded on the node that runs it), the first master's reply standing for all. ``SCAN``
walks the masters one after another behind a cursor of the form ``<node>-<cursor>``.

Redirections: ``MOVED <slot> <host:port>`` (the slot lives elsewhere now) re-routes that command
to the named node and refreshes the whole slot map once per batch; ``ASK <slot> <host:port>``
(the slot is being migrated and the key is already there) sends ``ASKING`` and the command to
the named node, without changing the map; ``TRYAGAIN`` (a multi-key command during a migration)
is sent again after a short pause. A command is redirected at most :data:`MAX_REDIRECTIONS`
times. Every command the store sends is idempotent, so sending one again is safe.

Failures are the single-node link's: :class:`~fraudstack.errors.StoreUnavailable` when a node
cannot be reached (each node's link reconnects by itself), a typed refusal for an error reply.
A node that does not answer also makes the link ask for the slot map again before its next
command (at most every :data:`STALE_REFRESH_S`): after a failover, a replica serves those slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis

from fraudstack.adapters.cluster_slots import (
    EVERY_NODE,
    SLOTS,
    is_cluster_url,
    key_of,
    key_slot,
    parse_arguments,
    parse_commands,
    raw,
    redirection,
    split_cluster_url,
)
from fraudstack.adapters.redis_link import Command, RedisLink, refusal
from fraudstack.errors import StoreUnavailable

__all__ = ["ClusterLink", "is_cluster_url", "key_slot", "split_cluster_url"]

#: How often one command may be redirected (MOVED, ASK, TRYAGAIN) before it fails.
MAX_REDIRECTIONS = 5
#: How often a link whose node stopped answering asks for the slot map again, at most (s).
STALE_REFRESH_S = 0.5
_ASKING = b"*1\r\n$6\r\nASKING\r\n"
_CLUSTER_SLOTS = b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n"


class _Routed:
    """One command of a batch: where it goes, and how often it was redirected."""

    __slots__ = ("asking", "encoded", "every_node", "hops", "index", "name", "node", "slot")

    def __init__(self, index: int, name: bytes, key: bytes | None, encoded: bytes) -> None:
        self.index = index
        self.name = name
        self.encoded = encoded
        self.slot = None if key is None else key_slot(key)
        self.every_node = name in EVERY_NODE
        self.node: str | None = None
        self.asking = False
        self.hops = 0


class ClusterLink(RedisLink):
    """The :class:`RedisLink` interface over a Redis Cluster; create and use it in one loop."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        connect_timeout: float = 1.0,
        retry_after: float = 0.1,
    ) -> None:
        self.url = url
        self._seeds, self._node_url = split_cluster_url(url)
        self._options = {
            "timeout": timeout,
            "connect_timeout": connect_timeout,
            "retry_after": retry_after,
        }
        self._nodes: dict[str, RedisLink] = {}
        #: the master of each slot, by address; empty until the first refresh
        self._slots: list[str | None] = []
        self._masters: list[str] = []
        self._refreshing: asyncio.Future[None] | None = None
        #: a node did not answer: its slots may have a new master (a failover); the map is asked
        #: for again, at most every :data:`STALE_REFRESH_S`
        self._stale = False
        self._refreshed_at = 0.0
        #: slot map refreshes so far (a test sees a MOVED followed)
        self.refreshes = 0
        self.connections = 0

    # --- the RedisLink interface ---------------------------------------------------------

    async def execute(self, payload: bytes, expected: int = 1) -> list[Any]:
        """Send ``expected`` encoded commands, each to its slot's master; replies in order."""
        if expected == 1 and self._slots and not self._stale:
            # one command (GET /predict's HMGET): straight to its node, unless redirected
            ((name, key, _),) = parse_commands(payload, 1)
            if key is not None and name != b"SCAN":
                node = self._slots[key_slot(key)]
                if node is not None:
                    replies = await self._send(node, [payload], 1)
                    reply = replies[0]
                    if not isinstance(reply, hiredis.ReplyError):
                        return replies
                    if redirection(reply) is None:
                        raise refusal(reply)
        return await self._run(
            [
                _Routed(index, name, key, encoded)
                for index, (name, key, encoded) in enumerate(parse_commands(payload, expected))
            ]
        )

    async def send(self, payload: bytes, expected: int = 1) -> list[Any]:
        """:meth:`execute`, with error replies (redirections followed) returned, not raised."""
        return await self._run(
            [
                _Routed(index, name, key, encoded)
                for index, (name, key, encoded) in enumerate(parse_commands(payload, expected))
            ],
            raise_refusals=False,
        )

    async def execute_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send a batch split by node, one write per node, and return every reply in order."""
        pack = hiredis.pack_command
        routed: list[_Routed] = []
        for index, command in enumerate(commands):
            name = raw(command[0]).upper()
            encoded = pack(tuple(command))  # type: ignore[arg-type]
            routed.append(_Routed(index, name, key_of(name, command[1:]), encoded))
        return await self._run(routed)

    async def close(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for node in nodes.values():
            await node.close()

    # --- SCAN over every master ----------------------------------------------------------

    async def _scan(self, command: _Routed) -> list[Any]:
        """``SCAN`` with a cursor ``<master>-<cursor>`` walking the masters in turn."""
        await self._slot_map()
        parts = parse_arguments(command.encoded)
        cursor = parts[1].decode()
        position, _, node_cursor = cursor.partition("-") if "-" in cursor else ("0", "", cursor)
        master = int(position)
        if master >= len(self._masters):
            return [[b"0", []]]
        parts[1] = node_cursor.encode()
        encoded = hiredis.pack_command(tuple(parts))  # type: ignore[arg-type]
        (reply,) = await self._send(self._masters[master], [encoded], 1)
        if isinstance(reply, hiredis.ReplyError):
            raise refusal(reply)
        following, keys = reply[0], reply[1]
        if following in (b"0", "0"):
            master, following = master + 1, b"0"
            if master >= len(self._masters):
                return [[b"0", keys]]
        text = following.decode() if isinstance(following, bytes) else following
        return [[f"{master}-{text}".encode(), keys]]

    # --- routing -------------------------------------------------------------------------

    async def _run(self, routed: list[_Routed], raise_refusals: bool = True) -> list[Any]:
        if len(routed) == 1 and routed[0].name == b"SCAN":
            return await self._scan(routed[0])
        await self._slot_map()
        replies: list[Any] = [None] * len(routed)
        pending = routed
        refreshed = False
        while pending:
            redirected: list[_Routed] = []
            moved = False
            for command, reply in await self._send_all(pending):
                target = redirection(reply)
                if target is None:
                    replies[command.index] = reply
                    continue
                kind, slot, address = target
                command.hops += 1
                if command.hops > MAX_REDIRECTIONS:
                    replies[command.index] = reply
                    continue
                if kind == "MOVED":
                    moved = True
                    self._slots[slot] = address
                    command.node, command.asking = None, False
                elif kind == "ASK":
                    command.node, command.asking = address, True
                else:  # TRYAGAIN: the slot is mid-migration; same node, a moment later
                    await asyncio.sleep(0.01 * command.hops)
                redirected.append(command)
            if moved and not refreshed:
                refreshed = True
                await self._refresh()
            pending = redirected
        if not raise_refusals:
            return replies
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise refusal(reply)
        return replies

    async def _send_all(self, commands: list[_Routed]) -> list[tuple[_Routed, Any]]:
        """Each command to its node (a broadcast one to every master, in its place in the
        batch), one write per node, every node at once."""
        by_node: dict[str, list[_Routed]] = {}
        for command in commands:
            if command.every_node:
                for master in self._masters:
                    by_node.setdefault(master, []).append(command)
                continue
            node = command.node
            if node is None:
                node = self._master_of(command.slot)
            by_node.setdefault(node, []).append(command)
        groups = list(by_node.items())
        sends = [
            self._send(
                node,
                [_ASKING + c.encoded if c.asking else c.encoded for c in group],
                len(group) + sum(c.asking for c in group),
            )
            for node, group in groups
        ]
        # one node (every request of GET /predict): no task to make
        results = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        answered: list[tuple[_Routed, Any]] = []
        broadcast: dict[int, Any] = {}
        for (_, group), node_replies in zip(groups, results, strict=True):
            position = 0
            for command in group:
                position += command.asking  # the ASKING reply (+OK) is not the command's
                reply = node_replies[position]
                position += 1
                if not command.every_node:
                    answered.append((command, reply))
                elif command.index not in broadcast or isinstance(reply, hiredis.ReplyError):
                    broadcast[command.index] = reply  # the first master's, or a refusal
        answered += [
            (command, broadcast[command.index]) for command in commands if command.every_node
        ]
        return answered

    def _master_of(self, slot: int | None) -> str:
        if slot is None:
            return self._masters[0]
        node = self._slots[slot]
        if node is None:
            raise StoreUnavailable(f"online store cluster: no master serves slot {slot}")
        return node

    async def _send(self, address: str, encoded: list[bytes], expected: int) -> list[Any]:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = RedisLink(
                self._node_url.replace("{address}", address, 1), **self._options
            )
        before = node.connections
        try:
            replies = await node.send(b"".join(encoded), expected)
        except StoreUnavailable:
            self._stale = True
            raise
        finally:
            self.connections += node.connections - before
        return replies

    # --- the slot map --------------------------------------------------------------------

    async def _slot_map(self) -> None:
        if not self._slots:
            await self._refresh()
        elif self._stale:
            loop = asyncio.get_running_loop()
            if loop.time() - self._refreshed_at >= STALE_REFRESH_S:
                self._refreshed_at = loop.time()
                await self._refresh()

    async def _refresh(self) -> None:
        """Ask a node for the slot map (one refresh at a time; the others wait for it)."""
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        loop = asyncio.get_running_loop()
        done = self._refreshing = loop.create_future()
        try:
            await self._ask_for_slots()
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()
            raise
        finally:
            self._refreshing = None

    async def _ask_for_slots(self) -> None:
        failures = []
        for address in dict.fromkeys([*self._masters, *self._seeds]):
            try:
                (reply,) = await self._send(address, [_CLUSTER_SLOTS], 1)
            except StoreUnavailable as exc:
                failures.append(f"{address}: {exc}")
                continue
            if isinstance(reply, hiredis.ReplyError):
                failures.append(f"{address}: {reply}")
                continue
            self._install(reply, address)
            self.refreshes += 1
            return
        raise StoreUnavailable(
            "online store cluster: no node gave its slot map: " + "; ".join(failures)
        )

    def _install(self, reply: Iterable[Any], asked: str) -> None:
        slots: list[str | None] = [None] * SLOTS
        masters: list[str] = []
        for first, last, master, *_replicas in reply:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            if not host or host == "?":  # the node does not know its own address: the one asked
                host = asked.rpartition(":")[0]
            address = f"{host}:{int(master[1])}"
            if address not in masters:
                masters.append(address)
            slots[int(first) : int(last) + 1] = [address] * (int(last) - int(first) + 1)
        if not masters:
            raise StoreUnavailable(f"online store cluster: {asked} serves no slot")
        self._slots = slots
        self._masters = sorted(masters)
        self._stale = False
