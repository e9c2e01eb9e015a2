"""The kopf handlers of the FraudModel operator, and the registry that holds them.

One reconcile function does all the work, level-triggered: it reads the spec and the status it
wrote last, checks the versions against the model registry, judges the gates when a rollout step
has run its course, asks :func:`fraudmodel_operator.rollout.decide` for the next status,
publishes the routing (Redis, then the ConfigMap mirror) and writes the status; a new split is
stored in the status before it is published, so that the status never lags the routing. It runs

* on create, update and resume (operator start), so a spec change takes effect at once;
* from a timer every ``FRAUDSTACK_OPERATOR_RECONCILE_SECONDS``, which moves the rollout clock,
  retries what failed (a version not yet in the registry, Redis away) and restores a routing key
  that Redis lost. Nothing sleeps in a handler: waiting is the timer coming back.

kopf runs timers beside the change handlers of the same object, so a per-object lock (in the
object's memo) keeps two reconciles of one FraudModel from interleaving, and the status written
last is kept in the memo too: a reconcile never acts on an older status that the watch stream
has not caught up with yet. After a restart the memo is empty and the status stored in the
object is the starting point, so the operator carries on where it stopped.

Deleting a FraudModel removes the routing key if it still publishes it (a finalizer makes kopf
wait for that, retrying while Redis is away); the ConfigMap goes with its owner reference.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import kopf
import urllib3
from kubernetes import client, config

from fraudmodel_operator import rollout
from fraudmodel_operator.gates import PrometheusGates
from fraudmodel_operator.publish import ConfigMapMirror, Outcome, RoutingPublisher, Store
from fraudmodel_operator.registry_check import RegistryCheck
from fraudmodel_operator.resource import Problem, Spec, Split, Status
from fraudmodel_operator.settings import OperatorSettings, get_settings
from fraudstack.adapters.redis_clients import async_redis_client
from fraudstack.errors import StoreUnavailable
from fraudstack.routing import RoutingDocument

GROUP, VERSION, PLURAL = "fraudstack.io", "v1alpha1", "fraudmodels"
FINALIZER = "fraudstack.io/operator"
ROUTING_CONFLICT, ROUTING_NOT_PUBLISHED = "RoutingConflict", "RoutingNotPublished"


@dataclass
class Services:
    """The clients every handler shares; made once at start-up, kept in the operator's memo."""

    settings: OperatorSettings
    redis: Store
    http: httpx.AsyncClient
    api: client.ApiClient
    publisher: RoutingPublisher
    mirror: ConfigMapMirror
    gates: PrometheusGates
    registry: RegistryCheck

    @classmethod
    def build(cls, settings: OperatorSettings) -> Services:
        redis = async_redis_client(  # a single server or a cluster, by the URL
            settings.require("redis_url"), socket_timeout=5, socket_connect_timeout=5
        )
        http = httpx.AsyncClient(timeout=settings.prometheus_timeout_seconds)
        api = _kubernetes_client()
        return cls(
            settings=settings,
            redis=redis,
            http=http,
            api=api,
            publisher=RoutingPublisher(redis, settings.routing_key),
            mirror=ConfigMapMirror(api, settings.routing_key),
            gates=PrometheusGates(http, settings.prometheus_url, settings.gate_selector),
            registry=RegistryCheck(settings.model_registry_uri),
        )

    async def close(self) -> None:
        await self.redis.aclose()
        await self.http.aclose()
        await asyncio.to_thread(self.api.close)

    async def fraudmodel_exists(self, source: str) -> bool:
        """Whether the FraudModel ``<namespace>/<name>`` exists (unsure counts as yes)."""
        namespace, _, name = source.partition("/")
        objects = client.CustomObjectsApi(self.api)
        try:
            await asyncio.to_thread(
                objects.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except client.ApiException as exc:
            return exc.status != 404
        return True


def _kubernetes_client() -> client.ApiClient:
    """The pod's service account in a cluster, else the kubeconfig (as kopf itself logs in)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # read KUBECONFIG now: the client library's default is fixed when it is imported
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return client.ApiClient(configuration)


class _QuietTimer(logging.Filter):
    """Drops kopf's "Timer 'tick' succeeded." line, logged every few seconds per object."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timer 'tick'") and message.endswith("succeeded."))


# -- the handlers ------------------------------------------------------------------------------


async def startup(
    memo: kopf.Memo,
    settings: kopf.OperatorSettings,
    param: OperatorSettings | None = None,
    **_: Any,
) -> None:
    """Configure kopf and build the shared clients (``param`` is this operator's settings)."""
    # kopf's bookkeeping under our own names; status stays ours alone (phase, split, conditions)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # Events for what a person should see (transitions, posted explicitly), not every log line
    settings.posting.level = logging.WARNING
    objects_logger = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietTimer) for f in objects_logger.filters):
        objects_logger.addFilter(_QuietTimer())
    operator_settings = param or get_settings()
    if operator_settings.namespace:
        # One namespace, named exactly: nothing to discover. Otherwise kopf lists and watches
        # every namespace of the cluster, which the chart's namespaced RBAC rightly refuses
        # (nine Forbidden errors at each start, then a warning). CRDs are still scanned once.
        settings.scanning.disabled = True
    memo.services = Services.build(operator_settings)


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account in a cluster, else the kubeconfig named by ``KUBECONFIG``.

    kopf's own readers, read when the operator starts (the client library's loader fixes the
    kubeconfig path when it is imported); enough for tokens and certificates, not for
    kubeconfigs that run an exec plugin.
    """
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    services: Services | None = memo.get("services")
    if services is not None:
        await services.close()


async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Bring the routing and the status in line with the spec (see the module docstring)."""
    async with _lock(memo):
        if memo.get("deleted") or meta.get("deletionTimestamp"):
            return  # the delete handler has withdrawn the routing; do not publish it again
        services: Services = memo.services
        previous = memo.get("status") or Status.from_dict(status)
        decision, saved = await _decide(services, body, memo, Spec.from_dict(spec), previous)
        memo.status = decision.status
        if not saved:  # a saved status is stored whole already
            _write_status(patch, status, decision.status)
        for transition in decision.transitions:
            (logger.warning if transition.warning else logger.info)(
                "%s: %s", transition.reason, transition.message
            )
            kopf.event(
                body,
                type="Warning" if transition.warning else "Normal",
                reason=transition.reason,
                message=transition.message,
            )


async def withdraw(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """On deletion: remove the routing key if this FraudModel still publishes it."""
    async with _lock(memo):
        memo.deleted = True
        services: Services = memo.services
        try:
            removed = await services.publisher.withdraw(_source(body))
        except StoreUnavailable as exc:
            raise kopf.TemporaryError(f"cannot withdraw the routing: {exc}", delay=5) from exc
        if removed:
            logger.info("routing key %s removed", services.settings.routing_key)


# -- what reconcile does -----------------------------------------------------------------------


async def _decide(
    services: Services,
    body: kopf.Body,
    memo: kopf.Memo,
    spec: Spec,
    previous: Status,
) -> tuple[rollout.Decision, bool]:
    """The next status, with its routing published; and whether the status is saved already
    (:func:`_save_status`), else the handler's patch stores it."""
    now = time.time()
    generation = int(body.metadata.get("generation") or 0)
    problem = await services.registry.check(spec)
    gates = None
    step = rollout.current_step(spec, previous)
    if problem is None and step is not None and rollout.gates_due(spec, previous, now):
        assert spec.candidate is not None  # a step exists only with a candidate
        assert previous.rollout is not None  # gates are due only within a step
        # everything since the step began: a step kept waiting for traffic gathers more of it
        window = max(
            now - previous.rollout.step_started_at, services.settings.gate_min_window_seconds
        )
        gates = await services.gates.evaluate(
            spec.stable, spec.candidate, spec.gates, window, shadow=spec.mode == "shadow"
        )
    # a problem usually freezes the routing (Degraded); one that rejects the candidate rolls
    # the rollout back instead, and that split is published like any other
    decision = rollout.decide(
        spec, previous, generation=generation, now=now, problem=problem, gates=gates
    )
    split = decision.routing
    if split is not None:
        saved = split != previous.split
        if saved:
            # The status first: an operator that stops between the two then publishes, when it
            # starts again, what the status says. Routing first, it would start from the status
            # before, and could give a rolled-back candidate its step's traffic again.
            await _save_status(services, body, decision.status)
        problem = await _publish(services, body, memo, split, generation, now)
        if problem is not None:  # nothing changed where it matters: report, stay where we were
            decision = rollout.decide(
                spec, previous, generation=generation, now=now, problem=problem
            )
            if saved:  # the status saved describes a routing that was not published
                await _save_status(services, body, decision.status)
        return decision, saved
    return decision, False


def routing_document(split: Split, source: str, generation: int, now: float) -> RoutingDocument:
    """The routing that publishes ``split`` for FraudModel ``source`` (``<namespace>/<name>``);
    a share counts only with a candidate."""
    return RoutingDocument(
        stable=split.stable,
        candidate=split.candidate,
        candidate_share=float(split.share) if split.candidate else 0.0,
        mode=split.mode,
        source=source,
        generation=generation,
        updated_at=int(now * 1000),
    )


async def _publish(
    services: Services,
    body: kopf.Body,
    memo: kopf.Memo,
    split: Split,
    generation: int,
    now: float,
) -> Problem | None:
    """Publish ``split`` to Redis and mirror it; a Problem when Redis does not take it."""
    source = _source(body)
    document = routing_document(split, source, generation, now)
    publisher = services.publisher
    try:
        result = await publisher.publish(document)
        if result.outcome is Outcome.CONFLICT:
            other = result.document.source
            if await services.fraudmodel_exists(other):
                return Problem(
                    ROUTING_CONFLICT,
                    f"the routing key {publisher.key} is published by FraudModel {other}; "
                    "one FraudModel per routing key",
                )
            result = await publisher.publish(document, take_over=True)
    except StoreUnavailable as exc:
        return Problem(ROUTING_NOT_PUBLISHED, str(exc))
    published = result.document.to_json()
    if memo.get("mirrored") != published:  # the ConfigMap is written when the routing changes
        try:
            await services.mirror.mirror(body, result.document)
            memo.mirrored = published
        except (client.ApiException, urllib3.exceptions.HTTPError) as exc:
            # only a mirror: Redis has the routing; the next reconcile writes it again
            logging.getLogger(__name__).warning(
                "%s: cannot mirror the routing in a ConfigMap (%s); retrying", source, exc
            )
    return None


async def _save_status(services: Services, body: kopf.Body, status: Status) -> None:
    """Store the whole ``status`` at once, not when the handler returns (as ``patch`` is).

    A failure raises: nothing is published that the stored status does not describe, and kopf
    runs the handler again.
    """
    namespace, _, name = _source(body).partition("/")
    objects = client.CustomObjectsApi(services.api)
    await asyncio.to_thread(
        objects.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status.to_dict()},
        _content_type="application/merge-patch+json",
    )


def _write_status(patch: kopf.Patch, stored: Mapping[str, Any], status: Status) -> None:
    """Patch the status fields that differ from what the object holds (None removes one)."""
    for name, value in status.to_dict().items():
        if _without_nulls(stored.get(name)) != _without_nulls(value):
            patch.status[name] = value


def _without_nulls(value: Any) -> Any:
    """What a merge patch leaves stored: a null removes its key, so the object never holds one."""
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _lock(memo: kopf.Memo) -> asyncio.Lock:
    lock: asyncio.Lock | None = memo.get("lock")
    if lock is None:
        lock = memo.lock = asyncio.Lock()
    return lock


def _source(body: kopf.Body) -> str:
    return f"{body.metadata.namespace}/{body.metadata.name}"


# -- the registry ------------------------------------------------------------------------------


def build_registry(settings: OperatorSettings | None = None) -> kopf.OperatorRegistry:
    """Every handler of the operator, for ``kopf.run(registry=...)`` or ``KopfRunner``."""
    settings = settings or get_settings()
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry, param=settings)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    for on_change in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on_change(*resource, registry=registry)(reconcile)
    kopf.timer(
        *resource,
        registry=registry,
        id="tick",
        interval=settings.reconcile_seconds,
        initial_delay=settings.reconcile_seconds,
    )(reconcile)
    # Redis away for longer than ~5 minutes: let the deletion finish; the key stays behind with
    # a source that no longer exists, which the next FraudModel may take over
    kopf.on.delete(*resource, registry=registry, retries=60)(withdraw)
    return registry
