"""Our exceptions as HTTP answers, in this one place.

Every answer that is not a score is JSON ``{"detail": <reason>}`` (422 adds ``errors``, one line
per problem). No request answers with a stack trace: an unexpected exception is logged with its
traceback and answered 500 ``{"detail": "internal error"}``.

===============================  ======  ===================  ====================================
exception                        status  metric ``outcome``   when
===============================  ======  ===================  ====================================
EntityNotFound                   404     ``not_found``        no stored features for the customer
StoreUnavailable, StoreError     503     ``unavailable``      Redis cannot be reached or refuses
ModelError                       503     ``error``            no usable model loaded
InvalidEvent, validation error   422     ``invalid``          malformed path or body
anything else                    500     ``error``            a bug; logged with its traceback
===============================  ======  ===================  ====================================

A shadow candidate that fails is counted under its own version as ``shadow_error``; the request
is still answered by the stable model.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from fraudstack.errors import (
    EntityNotFound,
    FraudstackError,
    InvalidEvent,
    ModelError,
    StoreError,
    StoreUnavailable,
)
from fraudstack.serve.metrics import NO_VERSION

log = logging.getLogger(__name__)

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
#: A candidate scored in the shadow of the stable model (its answer went to metrics only).
OUTCOME_SHADOW = "shadow"
#: The shadow candidate failed; the request was still answered by the stable model.
OUTCOME_SHADOW_ERROR = "shadow_error"
# (exception class, HTTP status, metric outcome), most specific first
_MAPPING: tuple[tuple[type[FraudstackError], int, str], ...] = (
    (EntityNotFound, 404, "not_found"),
    (StoreUnavailable, 503, "unavailable"),
    (StoreError, 503, "unavailable"),
    (ModelError, 503, OUTCOME_ERROR),
    (InvalidEvent, 422, "invalid"),
)


class JSONBytes(JSONResponse):
    """A JSON answer whose body is already encoded (orjson on the way in). A ``JSONResponse``,
    so the OpenAPI document describes a route's answer by its response model."""

    def render(self, content: object) -> bytes:
        assert isinstance(content, bytes), type(content)
        return content


def json_response(content: object, status_code: int = 200) -> JSONBytes:
    return JSONBytes(orjson.dumps(content), status_code=status_code)


def classify(exc: FraudstackError) -> tuple[int, str]:
    """The HTTP status and metric outcome of one of our exceptions."""
    for kind, status, outcome in _MAPPING:
        if isinstance(exc, kind):
            return status, outcome
    return 500, OUTCOME_ERROR


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the answers above."""

    async def ours(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FraudstackError)
        status, _ = classify(exc)
        if status == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
            return json_response({"detail": "internal error"}, 500)
        if isinstance(exc, InvalidEvent):
            return json_response({"detail": "invalid request", "errors": exc.reasons}, status)
        return json_response({"detail": str(exc)}, status)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.observe(NO_VERSION, "invalid", None)
        return json_response({"detail": "invalid request", "errors": errors}, 422)

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code in (204, 304):  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSONBytes(
            orjson.dumps({"detail": exc.detail}), status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return json_response({"detail": "internal error"}, 500)

    app.add_exception_handler(FraudstackError, ours)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, unexpected)
