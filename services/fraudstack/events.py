"""The events that flow through fraudstack, and their validation.

Event time ``ts`` is an integer: milliseconds since the Unix epoch, UTC. (One representation
everywhere: it sorts, subtracts and partitions without parsing; ISO-8601 strings are accepted by
nothing.) Amounts are in currency units with at most two decimals. Ids are non-empty strings of
at most 64 characters without ``:`` (the online store uses it as a separator).

A transaction on topic ``transactions`` (key: ``customer_id``)::

    {"txn_id": "1754", "ts": 1522540800000, "customer_id": "42", "terminal_id": "8071",
     "amount": 57.16}

A label on topic ``labels`` (key: ``terminal_id``), a chargeback that arrives late::

    {"txn_id": "1754", "customer_id": "42", "terminal_id": "8071", "ts": 1522540800000,
     "is_fraud": true, "reported_at": 1522900800000}
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from fraudstack.errors import InvalidEvent

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^:\s]+$")]
#: 2000-01-01 .. 2100-01-01: a timestamp outside is a unit mistake (seconds, microseconds).
EpochMillis = Annotated[int, Field(ge=946_684_800_000, lt=4_102_444_800_000, strict=True)]
Amount = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    txn_id: Identifier
    ts: EpochMillis
    customer_id: Identifier
    terminal_id: Identifier
    amount: Amount

    @model_validator(mode="after")
    def _cents(self) -> Transaction:
        if abs(self.amount * 100 - round(self.amount * 100)) > 1e-6:
            raise ValueError("amount has more than two decimals")
        return self

    @property
    def amount_cents(self) -> int:
        return round(self.amount * 100)


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    txn_id: Identifier
    customer_id: Identifier
    terminal_id: Identifier
    ts: EpochMillis
    is_fraud: bool
    reported_at: EpochMillis

    @model_validator(mode="after")
    def _reported_after(self) -> Label:
        if self.reported_at < self.ts:
            raise ValueError("reported_at is before the transaction's ts")
        return self


_TRANSACTION = TypeAdapter(Transaction)
_LABEL = TypeAdapter(Label)


def reasons(error: ValidationError) -> list[str]:
    """One readable line per problem: ``field: message``."""
    lines = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "event"
        lines.append(f"{where}: {problem['msg']}")
    return lines


def _parse(adapter: TypeAdapter[Any], raw: bytes | str | dict[str, Any]) -> Any:
    try:
        if isinstance(raw, dict):
            return adapter.validate_python(raw)
        return adapter.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(reasons(exc)) from exc


def parse_transaction(raw: bytes | str | dict[str, Any]) -> Transaction:
    """Validate one transaction (JSON bytes/text or a dict); InvalidEvent says why not."""
    transaction: Transaction = _parse(_TRANSACTION, raw)
    return transaction


def parse_label(raw: bytes | str | dict[str, Any]) -> Label:
    """Validate one label (JSON bytes/text or a dict); InvalidEvent says why not."""
    label: Label = _parse(_LABEL, raw)
    return label


def encode(event: BaseModel) -> bytes:
    return orjson.dumps(event.model_dump())
