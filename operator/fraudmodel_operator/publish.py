"""Where the routing goes: the Redis key every inference worker polls, and a ConfigMap mirror.

Redis (the online store's, ``FRAUDSTACK_REDIS_URL``) holds the one routing document the workers
follow (:mod:`fraudstack.routing`). Writes are check-and-set under ``WATCH``: the key is written
only when the routing differs from what is stored (so ``updated_at`` marks real switches and a
reconcile loop does not churn the workers), and never over a document another FraudModel
published (one FraudModel per key; the handler decides whether that other one still exists).
Withdrawing on deletion removes the key only while this FraudModel is still its source.

The ConfigMap ``<fraudmodel>-routing`` shows the same document to ``kubectl get``; it is
adopted by its FraudModel (``kopf.adopt``: owner reference, namespace, labels), so deleting the
FraudModel lets the garbage collector delete it. Nothing reads it: a failed mirror is logged and
retried, never a reason to hold routing back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import kopf
from kubernetes import client
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import RedisError, WatchError

from fraudstack.errors import StoreUnavailable
from fraudstack.routing import InvalidRouting, RoutingDocument

_ATTEMPTS = 5  # WATCH retries when the key changes under us (another writer, by mistake)
_NAME_LIMIT = 253
_SUFFIX = "-routing"
T = TypeVar("T")
#: A single server's client or a Redis Cluster's (``redis+cluster://``): WATCH works on both.
Store = Redis | RedisCluster
Watched = Pipeline | ClusterPipeline


class Outcome(StrEnum):
    PUBLISHED = "published"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"  # another FraudModel's document is stored; nothing was written


@dataclass(frozen=True, slots=True)
class PublishResult:
    outcome: Outcome
    #: what the key holds now (for CONFLICT: the other FraudModel's document)
    document: RoutingDocument


class RoutingPublisher:
    """The routing document at one Redis key."""

    def __init__(self, redis: Store, key: str) -> None:
        self.redis = redis
        self.key = key

    async def current(self) -> RoutingDocument | None:
        """The stored document; None when there is none or it is unreadable."""
        try:
            raw = await self.redis.get(self.key)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: cannot read {self.key}: {exc}") from exc
        return _parse(raw)

    async def publish(self, document: RoutingDocument, *, take_over: bool = False) -> PublishResult:
        """Store ``document`` unless the same routing is stored, or another source's is
        (``take_over`` overwrites that one: its FraudModel is gone)."""

        async def write(pipe: Watched) -> PublishResult:
            stored = _parse(await pipe.get(self.key))
            if stored is not None and stored.source != document.source and not take_over:
                return PublishResult(Outcome.CONFLICT, stored)
            if (
                stored is not None
                and stored.source == document.source
                and stored.same_routing(document)
            ):
                return PublishResult(Outcome.UNCHANGED, stored)
            pipe.multi()
            pipe.set(self.key, document.to_json())
            await pipe.execute()
            return PublishResult(Outcome.PUBLISHED, document)

        return await self._check_and_set("publish", write)

    async def withdraw(self, source: str) -> bool:
        """Delete the key if ``source`` published what it holds; True when it was deleted."""

        async def delete(pipe: Watched) -> bool:
            stored = _parse(await pipe.get(self.key))
            if stored is None or stored.source != source:
                return False
            pipe.multi()
            pipe.delete(self.key)
            await pipe.execute()
            return True

        return await self._check_and_set("withdraw", delete)

    async def _check_and_set(self, what: str, act: Callable[[Watched], Awaitable[T]]) -> T:
        """``act`` on a pipeline that WATCHes the key, again when the key changed meanwhile."""
        for _ in range(_ATTEMPTS):
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    await pipe.watch(self.key)
                    return await act(pipe)
            except WatchError:
                continue
            except RedisError as exc:
                raise StoreUnavailable(f"Redis: cannot {what} {self.key}: {exc}") from exc
        raise StoreUnavailable(f"Redis: {self.key} kept changing while {what}ing")


def _parse(raw: bytes | str | None) -> RoutingDocument | None:
    if raw is None:
        return None
    try:
        return RoutingDocument.from_json(raw)
    except InvalidRouting:
        return None  # garbage at the key is nobody's: publishing replaces it


def configmap_name(fraudmodel: str) -> str:
    return fraudmodel[: _NAME_LIMIT - len(_SUFFIX)] + _SUFFIX


class ConfigMapMirror:
    """Writes ``<fraudmodel>-routing`` through the Kubernetes API (blocking client, in a thread)."""

    def __init__(self, api: client.ApiClient, key: str) -> None:
        self.core = client.CoreV1Api(api)
        self.key = key

    async def mirror(self, owner: kopf.Body, document: RoutingDocument) -> None:
        """Create or update the ConfigMap of ``owner`` with ``document``."""
        configmap: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(owner.metadata.name or ""),
                "labels": {
                    "app.kubernetes.io/managed-by": "fraudmodel-operator",
                    "fraudstack.io/fraudmodel": owner.metadata.name or "",
                },
            },
            "data": configmap_data(document, self.key),
        }
        kopf.adopt(configmap, owner=owner)
        await asyncio.to_thread(self._apply, configmap)

    def _apply(self, configmap: Any) -> None:  # a dict: the client takes one for any model
        namespace, name = configmap["metadata"]["namespace"], configmap["metadata"]["name"]
        try:
            self.core.patch_namespaced_config_map(name, namespace, configmap)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_config_map(namespace, configmap)


def configmap_data(document: RoutingDocument, key: str) -> dict[str, str]:
    """The mirror's data: the document as published, plus its main fields for reading."""
    return {
        "routing.json": document.to_json().decode(),
        "redisKey": key,
        "stable": document.stable,
        "candidate": document.candidate or "",
        "candidateShare": f"{document.candidate_share:g}",
        "mode": document.mode,
    }
