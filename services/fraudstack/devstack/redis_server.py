"""Redis: Debian's ``redis-server`` on a free loopback port, no persistence."""

from __future__ import annotations

import redis

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.process import free_port, spawn, wait_until
from fraudstack.devstack.system import ensure_binary


class RedisServer(Server):
    name = "redis"

    def prepare(self, context: Context) -> None:
        self.binary = ensure_binary("redis-server", "redis-server")

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.name)
        port = free_port()
        log = folder / "redis.log"
        pid = spawn(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ],
            log,
        )
        info: ServerInfo = {
            "pids": [pid],
            "marker": f"127.0.0.1:{port}",
            "address": f"redis://127.0.0.1:{port}/0",
            "port": port,
            "log": str(log),
        }
        wait_until(lambda: self.answers(info), "redis-server", 20, pid, log)
        return info

    def answers(self, info: ServerInfo) -> bool:
        try:
            client = redis.Redis.from_url(info["address"], socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False
