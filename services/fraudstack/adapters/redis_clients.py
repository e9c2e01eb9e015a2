"""redis-py clients from the store's URL: one decision, single server or Redis Cluster.

For the users of redis-py (the bulk loader, the operator's routing publisher, demos and
benchmarks); the request path uses :class:`~fraudstack.adapters.redis_link.RedisLink`, which
takes the same URLs. A ``redis+cluster://host:port,host:port`` URL (``rediss+cluster://`` for
TLS) makes a :class:`redis.cluster.RedisCluster` (or its asyncio twin) seeded with every host
named; any other URL a :class:`redis.Redis`, as ``Redis.from_url`` makes it.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from fraudstack.adapters.cluster_slots import is_cluster_url, split_cluster_url


def redis_client(url: str, **options: Any) -> redis.Redis | redis.cluster.RedisCluster:
    """A blocking redis-py client of the store at ``url`` (``options`` as redis-py takes them)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    first, nodes = _seeds(url)
    startup = [redis.cluster.ClusterNode(host, port) for host, port in nodes]
    return redis.cluster.RedisCluster.from_url(first, startup_nodes=startup, **options)


def async_redis_client(
    url: str, **options: Any
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """An asyncio redis-py client of the store at ``url``."""
    if not is_cluster_url(url):
        return redis.asyncio.Redis.from_url(url, **options)
    first, nodes = _seeds(url)
    startup = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in nodes]
    return redis.asyncio.cluster.RedisCluster.from_url(first, startup_nodes=startup, **options)


def _seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The first seed as a single-node URL, and every other seed as (host, port)."""
    seeds, template = split_cluster_url(url)
    nodes = []
    for seed in seeds[1:]:
        host, _, port = seed.rpartition(":")
        nodes.append((host, int(port)))
    return template.replace("{address}", seeds[0], 1), nodes
