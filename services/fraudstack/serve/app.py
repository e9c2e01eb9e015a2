"""The FastAPI application of the inference service.

``create_app()`` only wires things together; the heavy parts are made in the lifespan, once per
worker process: the models are loaded and checked against their sha256 (a missing or corrupt
artifact stops the worker's start-up, and with it gunicorn's, with the reason in the log), and the
pipelined Redis connection is opened. Redis being down at start-up does not stop the service:
``/readyz`` says so and requests answer 503 until it is back.

Routing: a routing the operator published in Redis (:mod:`fraudstack.routing`) wins over the
settings' one; each worker then follows that key (:mod:`fraudstack.serve.routing_watch`) and
swaps its routing in one step when it changes (:class:`~fraudstack.serve.models.ModelHolder`).

Settings come from :func:`fraudstack.serve.settings.get_settings`; a test overrides them with
``app.dependency_overrides[get_settings]`` or by passing ``settings`` here, and the lifespan
honours the override too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fraudstack.adapters.redis_link import RedisLink
from fraudstack.errors import FraudstackError
from fraudstack.routing import RoutingDocument
from fraudstack.serve import errors
from fraudstack.serve.errors import JSONBytes
from fraudstack.serve.lookup import FeatureLookup
from fraudstack.serve.metrics import FLUSH_SECONDS, ServeMetrics
from fraudstack.serve.models import ModelHolder, ScorerLoader, routing_spec
from fraudstack.serve.routes import Service, add_routes
from fraudstack.serve.routing_watch import read_routing, watch_routing
from fraudstack.serve.settings import ServeSettings, get_settings

log = logging.getLogger("fraudstack.serve")


async def _published_routing(link: RedisLink, key: str) -> RoutingDocument | None:
    """The routing the operator published, if any can be read now."""
    if not key:
        return None
    try:
        return await read_routing(link, key)
    except (FraudstackError, TimeoutError) as exc:
        log.warning("cannot read the published routing at %s (%s); using the settings", key, exc)
        return None


def _apply_published(holder: ModelHolder, document: RoutingDocument | None) -> bool:
    if document is None:
        return False
    try:
        holder.apply(document)
    except FraudstackError as exc:
        log.error("the published routing cannot be served (%s); using the settings", exc)
        return False
    return True


async def _flush_metrics(metrics: ServeMetrics) -> None:
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            metrics.flush()
        except Exception:  # a full disk, say: keep serving and keep trying
            log.exception("cannot write the metrics to the multiprocess folder")


def create_app(
    settings: ServeSettings | None = None, *, loader: ScorerLoader | None = None
) -> FastAPI:
    """The application; ``loader`` replaces :func:`fraudstack.scoring.load_scorer` if given."""
    service = Service(ServeMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = app.dependency_overrides.get(get_settings, get_settings)()
        link = RedisLink(
            current.require("redis_url"),
            timeout=current.store_timeout_ms / 1000,
            retry_after=current.store_retry_ms / 1000,
        )
        if not await link.ping():
            log.warning("the online store does not answer yet; requests answer 503 until it does")
        holder = ModelHolder(current.model_registry_uri, loader)
        try:
            published = await _published_routing(link, current.routing_key)
            if not _apply_published(holder, published):
                published = None
                holder.apply(routing_spec(current))  # a model that does not load stops start-up
        except BaseException:
            await link.close()
            raise
        service.start(holder, FeatureLookup(link), current)
        log.info("serving %s", holder.routing.describe())
        watch = None
        if current.routing_key:

            async def switch(document: RoutingDocument) -> None:
                await holder.apply_async(document)

            watch = asyncio.create_task(
                watch_routing(
                    link,
                    current.routing_key,
                    switch,
                    current.routing_poll_ms / 1000,
                    current=published,
                )
            )
        flusher = asyncio.create_task(_flush_metrics(service.metrics))
        try:
            yield
        finally:
            for task in (watch, flusher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            service.metrics.flush()
            await link.close()

    app = FastAPI(
        title="fraudstack inference",
        summary="Fraud probability of card transactions from their online features.",
        version="1",
        lifespan=lifespan,
        default_response_class=JSONBytes,
        # the service exports its own Prometheus metrics; FastAPI's OpenTelemetry bridge would
        # ask for a tracer and a meter provider on every request of the hot path
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.state.metrics = service.metrics
    app.state.service = service
    errors.install(app)
    add_routes(app, service)
    return app
