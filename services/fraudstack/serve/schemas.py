"""The shapes of the service's answers, for the OpenAPI document and for clients.

The request path does not build these models: it encodes plain dicts with orjson (validating a
response it has just built itself would only cost time). Tests check that the answers match
these shapes. The body of ``POST /v1/score`` is the transaction event itself,
:class:`fraudstack.events.Transaction`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

RiskLevel = Literal["low", "medium", "high"]


class Prediction(BaseModel):
    """``GET /predict/{user_id}``: the customer's newest transaction, scored."""

    user_id: str
    fraud_probability: float = Field(ge=0.0, le=1.0)
    risk_level: RiskLevel
    latency_ms: float = Field(description="time spent inside the service")
    model_version: str = Field(description="the model that scored this customer")


class TransactionScore(Prediction):
    """``POST /v1/score``: one transaction, scored with its features at its own time."""

    txn_id: str


class ErrorAnswer(BaseModel):
    detail: str


class InvalidAnswer(BaseModel):
    detail: str
    errors: list[str] = Field(description="one line per problem: location: message")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    reasons: list[str] = Field(default_factory=list)
    routing: dict[str, object] | None = None


#: Error answers, for the OpenAPI document of the scoring endpoints.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorAnswer, "description": "no stored features for this customer"},
    422: {"model": InvalidAnswer, "description": "malformed request"},
    503: {"model": ErrorAnswer, "description": "online store unreachable or no model loaded"},
}
