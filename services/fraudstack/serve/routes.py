"""The endpoints. The two scoring routes are the hot path: their requests go straight to a
handler of ours (:func:`direct`) that checks its own parameters, no response model validation (the
models in :mod:`.schemas` document the answers), one dict encoded by orjson, metrics added to
in-process tallies (see :mod:`.metrics`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response

from fraudstack.errors import FraudstackError, ModelError
from fraudstack.events import Transaction
from fraudstack.serve.batching import BatchingScorer
from fraudstack.serve.errors import (
    OUTCOME_ERROR,
    OUTCOME_OK,
    OUTCOME_SHADOW,
    OUTCOME_SHADOW_ERROR,
    JSONBytes,
    classify,
    json_response,
)
from fraudstack.serve.lookup import FeatureLookup, Scored
from fraudstack.serve.metrics import NO_VERSION, ServeMetrics
from fraudstack.serve.models import ModelHolder, Routing
from fraudstack.serve.schemas import (
    ERROR_RESPONSES,
    Health,
    Prediction,
    Readiness,
    TransactionScore,
)
from fraudstack.serve.settings import ServeSettings, get_settings

log = logging.getLogger(__name__)
_perf_counter = time.perf_counter
_wall_clock = time.time
_dumps = orjson.dumps

#: ``GET /predict/{user_id}``'s parameter, as OpenAPI describes it and as it is checked.
CustomerId = Annotated[str, Path(min_length=1, max_length=64)]
_customer_id: TypeAdapter[str] = TypeAdapter(CustomerId)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def direct(handler: Handler) -> type[APIRoute]:
    """A route class whose requests go to ``handler``, past FastAPI's generic request handler.

    FastAPI's handler solves the endpoint's dependencies and validates its parameters for every
    request; for a scoring endpoint that costs more CPU than reading the features and scoring
    them (measured in one process against the real Redis, ``GET /predict``: about 130 µs a
    request through it, 75 µs past it). The route keeps everything else of an ``APIRoute``: the
    OpenAPI description drawn from the endpoint's signature, the matching, the app's exception
    handlers. ``handler`` reads and checks the parameters itself and raises FastAPI's
    ``RequestValidationError`` (see :func:`refused`), so a bad request is answered as any other.
    A route with anything else to solve (a dependency of its own, of the app or of the router it
    is added to, which is how an authentication check would come; a query, header or cookie
    parameter) is refused when it is built, rather than served without it. The check cannot see
    dependencies that a router adds when it includes another one (FastAPI keeps those apart), so
    the scoring routes are added to the app itself.
    """

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            # what FastAPI would have solved for each request would silently not happen here
            skipped = self.dependant
            if (
                skipped.dependencies
                or skipped.query_params
                or skipped.header_params
                or skipped.cookie_params
            ):
                raise TypeError(
                    f"{self.path}: a direct route reads only its path and body; its dependencies "
                    "and query, header or cookie parameters would never run or be checked"
                )
            return handler

    return DirectRoute


def refused(exc: ValidationError, *where: str) -> RequestValidationError:
    """FastAPI's error for what pydantic refused, located as FastAPI locates it (``path``,
    ``body``)."""
    return RequestValidationError(
        [{**error, "loc": (*where, *error["loc"])} for error in exc.errors(include_url=False)]
    )


def _body_refused(kind: str, reason: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": reason}])


def _add_scoring(
    routes: APIRouter,
    method: str,
    path: str,
    endpoint: Callable[..., Coroutine[Any, Any, Response]],
    handler: Handler,
    answer: type[BaseModel],
) -> None:
    """A scoring route: described by ``endpoint``'s signature and ``answer``, served by
    ``handler`` (see :func:`direct`)."""
    routes.add_api_route(
        path,
        endpoint,
        methods=[method],
        response_model=answer,
        response_class=JSONBytes,
        responses=ERROR_RESPONSES,
        tags=["scoring"],
        route_class_override=direct(handler),
    )


def _is_json(content_type: str) -> bool:
    """A JSON media type (``application/json``, ``application/problem+json``...), as FastAPI
    requires of a JSON body."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


_Key = TypeVar("_Key")


async def _newest(lookup: FeatureLookup, customer_id: str) -> Scored:
    return (await lookup.newest(customer_id))[1]


class Service:
    """What the routes use; filled by the app's lifespan, once per worker."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics
        self.holder: ModelHolder | None = None
        self.lookup: FeatureLookup | None = None
        self.risk_medium = 0.3
        self.risk_high = 0.7
        #: Scoring requests begun and not answered yet, in this worker.
        self.in_flight = 0

    def start(self, holder: ModelHolder, lookup: FeatureLookup, settings: ServeSettings) -> None:
        self.holder, self.lookup = holder, lookup
        self.risk_medium, self.risk_high = settings.risk_medium, settings.risk_high

    def parts(self) -> tuple[Routing, FeatureLookup]:
        """The current routing (read once per request) and the store lookup."""
        if self.holder is None or self.lookup is None:
            raise ModelError("the service is still starting")
        return self.holder.routing, self.lookup

    def risk_level(self, probability: float) -> str:
        if probability >= self.risk_high:
            return "high"
        return "medium" if probability >= self.risk_medium else "low"

    async def score(
        self, routing: Routing, scorer: BatchingScorer, customer_id: str, scored: Scored
    ) -> float:
        """The answering model's probability; in shadow mode the candidate scores too.

        Both probabilities go to the score histogram, so the operator's drift gate compares the
        candidate with stable in shadow mode as well as in canary mode. The shadow's answer goes
        to metrics only, and so does its failure: the request is still answered by stable.
        """
        features = scored.features
        metrics = self.metrics
        alone = self.in_flight == 1  # then no other row can join a batch: scored at once
        probability = await scorer.score(
            [features[name] for name in scorer.feature_names], alone=alone
        )
        metrics.observe_score(scorer.version, probability)
        shadow = routing.shadow_for(customer_id)
        if shadow is not None:
            started = _perf_counter()
            try:
                shadow_probability = await shadow.score(
                    [features[name] for name in shadow.feature_names], alone=alone
                )
            except Exception:
                log.exception("shadow model %s failed; answered with stable", shadow.version)
                metrics.observe(shadow.version, OUTCOME_SHADOW_ERROR, _perf_counter() - started)
            else:
                metrics.observe(shadow.version, OUTCOME_SHADOW, _perf_counter() - started)
                metrics.observe_score(shadow.version, shadow_probability)
        return probability

    async def respond(
        self,
        customer_id: str,
        find: Callable[[FeatureLookup, _Key], Awaitable[Scored]],
        key: _Key,
        body: dict[str, Any],
    ) -> Response:
        """Score ``find(lookup, key)``, the features read from the store, with ``customer_id``'s
        model, count it and answer ``body`` (the request's ids) with the score; a failure is
        counted and raised, for the handlers of :mod:`.errors` to answer."""
        started = _perf_counter()
        version = NO_VERSION
        self.in_flight += 1
        try:
            routing, lookup = self.parts()
            scorer = routing.scorer_for(customer_id)
            version = scorer.version
            scored = await find(lookup, key)
            probability = await self.score(routing, scorer, customer_id, scored)
        except Exception as exc:
            self.failed(exc, version, started)
            raise
        finally:
            self.in_flight -= 1
        return self.answer(version, probability, scored, started, body)

    def failed(self, exc: Exception, version: str, started: float) -> None:
        """Count a request that did not score (ours map to an outcome; anything else is a bug)."""
        outcome = classify(exc)[1] if isinstance(exc, FraudstackError) else OUTCOME_ERROR
        if outcome == "unavailable":
            self.metrics.store_down()
        self.metrics.observe(version, outcome, _perf_counter() - started)

    def answer(
        self, version: str, probability: float, scored: Scored, started: float, body: dict[str, Any]
    ) -> Response:
        """Count the success and encode the answer (``body`` already holds the ids)."""
        elapsed = _perf_counter() - started
        metrics = self.metrics
        metrics.observe(version, OUTCOME_OK, elapsed)
        if scored.event_ts_ms is not None:
            metrics.observe_age(max(0.0, _wall_clock() - scored.event_ts_ms / 1000))
        body["fraud_probability"] = probability
        body["risk_level"] = self.risk_level(probability)
        body["latency_ms"] = round(elapsed * 1000, 3)
        body["model_version"] = version
        return JSONBytes(_dumps(body))


def add_routes(router: APIRouter | FastAPI, service: Service) -> None:
    """Add the endpoints to ``router``; on the app itself they skip a routing layer."""
    routes = router.router if isinstance(router, FastAPI) else router

    async def predict(user_id: CustomerId) -> Response:
        """Score the customer's newest transaction with its features at that time."""
        return await service.respond(user_id, _newest, user_id, {"user_id": user_id})

    async def predict_request(request: Request) -> Response:
        try:
            user_id = _customer_id.validate_python(request.path_params["user_id"])
        except ValidationError as exc:
            raise refused(exc, "path", "user_id") from None
        return await predict(user_id)

    _add_scoring(routes, "GET", "/predict/{user_id}", predict, predict_request, Prediction)

    async def score(txn: Transaction) -> Response:
        """Score one transaction with its features at its own time, the transaction included."""
        body = {"txn_id": txn.txn_id, "user_id": txn.customer_id}
        return await service.respond(txn.customer_id, FeatureLookup.transaction, txn, body)

    async def score_request(request: Request) -> Response:
        if not _is_json(request.headers.get("content-type", "")):
            raise _body_refused("content_type", "send JSON (application/json)")
        try:
            content = await request.body()
        except HTTPException:  # the app's body size limit: 413
            raise
        except Exception as exc:  # the client went away mid-body, say: a quiet 400, as FastAPI
            raise HTTPException(400, "there was an error reading the body") from exc
        try:
            txn = Transaction.model_validate(orjson.loads(content))
        except orjson.JSONDecodeError as exc:
            raise _body_refused("json_invalid", f"JSON decode error: {exc}") from None
        except ValidationError as exc:
            raise refused(exc, "body") from None
        return await score(txn)

    _add_scoring(routes, "POST", "/v1/score", score, score_request, TransactionScore)

    @router.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Response:
        """The process is alive (no dependency is asked)."""
        return json_response({"status": "ok"})

    @router.get(
        "/readyz",
        response_model=Readiness,
        tags=["operations"],
        responses={503: {"model": Readiness, "description": "not ready, with the reasons"}},
    )
    async def readyz(settings: Annotated[ServeSettings, Depends(get_settings)]) -> Response:
        """Models loaded and the online store answering."""
        reasons = []
        holder = service.holder
        routing = holder.routing.describe() if holder is not None and holder.ready else None
        if routing is None:
            reasons.append("no model loaded")
        if service.lookup is None or not await service.lookup.link.ping():
            reasons.append(f"online store not answering within {settings.store_timeout_ms:g} ms")
        body = {
            "status": "not ready" if reasons else "ready",
            "reasons": reasons,
            "routing": routing,
        }
        return json_response(body, 503 if reasons else 200)

    @router.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics of every worker."""
        content, media_type = service.metrics.exposition()
        return Response(content, media_type=media_type)
