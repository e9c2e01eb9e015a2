"""The reference design, kept as the benchmark's comparison point (not a straw man).

What the reference system did, as a new user would build it: a synchronous Redis client
(redis-py with hiredis) called from a plain ``def`` endpoint, which FastAPI runs in its thread
pool, and scikit-learn's ``predict_proba`` on one row per request. Everything else is the same as
the service it is compared with: the same model (the version's ``model.joblib``, from which the
ONNX graph was exported), the same stored data and feature code (so both answer the same
probability for a customer), the same response shape and the same gunicorn settings.

Run by ``bench/inference.py`` as ``naive_app:create_app()`` with ``FRAUDSTACK_REDIS_URL``,
``FRAUDSTACK_MODEL_REGISTRY_URI`` and ``FRAUDSTACK_SERVE_MODEL_VERSION`` set.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import joblib
import redis
from fastapi import FastAPI, HTTPException

from fraudstack.adapters.online_store.codecs import LastTransaction, unpack_customer_features
from fraudstack.adapters.online_store.layout import (
    CUSTOMER_FEATURES_FIELD,
    LAST_TXN_FIELD,
    customer_key,
)
from fraudstack.adapters.online_store.reader import terminal_count_commands
from fraudstack.adapters.registry import ModelRegistry
from fraudstack.features.online import terminal_features_from_counts, transaction_features


def _risk_level(probability: float) -> str:
    if probability >= 0.7:
        return "high"
    return "medium" if probability >= 0.3 else "low"


def create_app() -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(os.environ["FRAUDSTACK_MODEL_REGISTRY_URI"])
        version = os.environ["FRAUDSTACK_SERVE_MODEL_VERSION"]
        metadata = registry.verify(version)
        state["model"] = joblib.load(registry.path(version) / "model.joblib")
        state["version"] = version
        state["feature_names"] = metadata.feature_names
        state["redis"] = redis.Redis.from_url(os.environ["FRAUDSTACK_REDIS_URL"])
        yield
        state["redis"].close()

    app = FastAPI(title="naive reference", lifespan=lifespan)

    @app.get("/predict/{user_id}")
    def predict(user_id: str) -> dict[str, Any]:
        started = time.perf_counter()
        client: redis.Redis = state["redis"]
        fields = client.hgetall(customer_key(user_id))
        if LAST_TXN_FIELD.encode() not in fields:
            raise HTTPException(status_code=404, detail=f"unknown customer {user_id}")
        last = LastTransaction.decode(fields[LAST_TXN_FIELD.encode()])
        features = transaction_features(last.ts_ms, last.amount_cents)
        stored = unpack_customer_features(fields.get(CUSTOMER_FEATURES_FIELD.encode()), last.txn_id)
        if stored is None:  # the benchmark's store is loaded whole: every customer has them
            raise HTTPException(status_code=503, detail=f"no stored features for {user_id}")
        features.update(stored)
        pipe = client.pipeline(transaction=False)  # the terminal's window counts, one round trip
        for command in terminal_count_commands(last.terminal_id, last.ts_ms):
            pipe.execute_command(*command)
        features.update(terminal_features_from_counts(pipe.execute()))
        vector = [[features[name] for name in state["feature_names"]]]
        probability = float(state["model"].predict_proba(vector)[0, 1])
        return {
            "user_id": user_id,
            "fraud_probability": probability,
            "risk_level": _risk_level(probability),
            "latency_ms": (time.perf_counter() - started) * 1000,
            "model_version": state["version"],
        }

    return app
