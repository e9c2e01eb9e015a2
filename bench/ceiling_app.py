"""The ceiling: a bare FastAPI endpoint that answers a constant, under the service's settings.

Same URL, same gunicorn configuration and worker count as the service; it reads nothing and
scores nothing, so its throughput is what FastAPI, uvicorn and the load generator manage on
this machine with no work at all. Two flavours:

* ``create_app()``: the bare endpoint as FastAPI's documentation writes one, returning a dict
  that FastAPI serializes; this is the ceiling the targets are measured against;
* ``create_raw_app()``: the same constant already encoded (a ``Response`` of bytes), its requests
  handed straight to the endpoint through the service's own route class
  (:func:`fraudstack.serve.routes.direct`), so neither serialization nor FastAPI's per-request
  handler is left: what ours pays beyond it is its own work. Reported alongside as the strict
  ceiling.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from fraudstack.serve.routes import direct

_ANSWER: dict[str, Any] = {
    "user_id": "0",
    "fraud_probability": 0.0,
    "risk_level": "low",
    "latency_ms": 0.0,
    "model_version": "constant",
}
_ENCODED = orjson.dumps(_ANSWER)
#: As the service's app: no OpenTelemetry bridge asked on each request.
_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}


def create_app() -> FastAPI:
    app = FastAPI(title="ceiling", telemetry=_TELEMETRY_OFF)

    @app.get("/predict/{user_id}")
    async def predict(user_id: str) -> dict[str, Any]:
        return _ANSWER

    return app


def create_raw_app() -> FastAPI:
    app = FastAPI(title="strict ceiling", telemetry=_TELEMETRY_OFF)

    async def predict(user_id: str) -> Response:
        return Response(_ENCODED, media_type="application/json")

    async def handle(request: Request) -> Response:
        return await predict(request.path_params["user_id"])

    app.router.add_api_route(
        "/predict/{user_id}", predict, methods=["GET"], route_class_override=direct(handle)
    )
    return app
