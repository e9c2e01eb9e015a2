"""The ingestion HTTP API: validate transactions and put them on Kafka.

``POST /v1/transactions`` takes one transaction or a list of them. The answer comes only once
the broker has acknowledged every event (``acks=all``): 202 means durable. A malformed event
gets 422 with the reasons and nothing of the request is produced; when the brokers do not
acknowledge every event within ``FRAUDSTACK_INGEST_ACK_TIMEOUT_S`` (no broker, no leader, fewer
in-sync replicas than ``min.insync.replicas``) the answer is 503 with a JSON reason.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from fraudstack.adapters.kafka import ensure_topics, make_producer
from fraudstack.events import Transaction
from fraudstack.ingest.settings import IngestSettings, get_settings

EVENTS = Counter("ingest_events_total", "Events received, by outcome.", ["outcome"])
PRODUCE_LATENCY = Histogram(
    "ingest_produce_seconds",
    "Time from receiving a request to the broker acknowledging all its events.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a send's failure as seen: the request reports it once, for the whole batch."""
    if not future.cancelled():
        future.exception()


class Accepted(BaseModel):
    accepted: int = Field(description="events acknowledged by the brokers")


class Problem(BaseModel):
    detail: str


class Status(BaseModel):
    status: str


INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "every event is durable on the brokers"},
    400: {"model": Problem, "description": "the body is not JSON"},
    401: {"model": Problem, "description": "an API key is configured and the request lacks it"},
    413: {"model": Problem, "description": "more events than FRAUDSTACK_INGEST_MAX_BATCH"},
    503: {"model": Problem, "description": "the brokers did not acknowledge every event in time"},
}


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.require("kafka_bootstrap")
        await ensure_topics(bootstrap, settings.topics)
        producer = make_producer(bootstrap)
        await producer.start()
        app.state.producer = producer
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(
        title="fraudstack ingestion",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )

    api_key = settings.ingest_api_key.get_secret_value().encode()

    async def authorized(
        x_api_key: Annotated[
            str | None, Header(description="required when the API has a key configured")
        ] = None,
    ) -> None:
        """Checked before the body is read: a caller without the key learns nothing else.
        The comparison takes the same time wherever the key differs."""
        if api_key and not hmac.compare_digest((x_api_key or "").encode(), api_key):
            EVENTS.labels("unauthorized").inc()
            raise HTTPException(
                401, "missing or wrong API key (X-API-Key header)", {"WWW-Authenticate": "ApiKey"}
            )

    @app.post(
        "/v1/transactions",
        status_code=202,
        responses=INGEST_RESPONSES,
        dependencies=[Depends(authorized)],
    )
    async def ingest(
        request: Request,
        events: Annotated[Transaction | list[Transaction], Body()],
    ) -> ORJSONResponse:
        batch = events if isinstance(events, list) else [events]
        if len(batch) > settings.ingest_max_batch:
            EVENTS.labels("rejected").inc(len(batch))
            return ORJSONResponse(
                {"detail": f"at most {settings.ingest_max_batch} events per request"},
                status_code=413,
            )
        producer: AIOKafkaProducer = request.app.state.producer
        started = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        deadline = asyncio.get_running_loop().time() + settings.ingest_ack_timeout_s
        try:
            # Sending waits when no partition leader is known yet; acknowledgements are awaited
            # without cancelling them, so a late one is still taken by the producer.
            async with asyncio.timeout_at(deadline):
                for event in batch:
                    future = await producer.send(
                        settings.topics.transactions,
                        event.model_dump_json().encode(),
                        key=event.customer_id.encode(),
                    )
                    future.add_done_callback(_retrieve)
                    futures.append(future)
            remaining = deadline - asyncio.get_running_loop().time()
            if futures and (await asyncio.wait(futures, timeout=max(remaining, 0.0)))[1]:
                raise TimeoutError  # some not acknowledged in time
            for future in futures:
                future.result()  # the first failure, if any
        except (KafkaError, TimeoutError) as exc:
            EVENTS.labels("unavailable").inc(len(batch))
            reason = str(exc) or f"no acknowledgement within {settings.ingest_ack_timeout_s:g} s"
            return ORJSONResponse(
                {
                    "detail": f"Kafka unavailable, the batch was not acknowledged in full: "
                    f"{reason}. Some of its events may have been written; sending the batch "
                    "again is safe (the aggregator drops duplicates by txn_id)."
                },
                status_code=503,
            )
        PRODUCE_LATENCY.observe(time.perf_counter() - started)
        EVENTS.labels("accepted").inc(len(batch))
        return ORJSONResponse({"accepted": len(batch)}, status_code=202)

    @app.get("/healthz", response_model=Status)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        response_model=Status,
        responses={503: {"model": Status, "description": "the producer is not started yet"}},
    )
    async def readyz(request: Request) -> ORJSONResponse:
        producer: AIOKafkaProducer | None = getattr(request.app.state, "producer", None)
        if producer is None:
            return ORJSONResponse({"status": "starting"}, status_code=503)
        return ORJSONResponse({"status": "ready"})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> ORJSONResponse:
        return ORJSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    # Count the events FastAPI refuses with 422 too.
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        EVENTS.labels("invalid").inc()
        return await request_validation_exception_handler(request, exc)

    return app
