"""The events that flow through fraudstack, and their validation.

Event time ``ts`` is an integer: milliseconds since the Unix epoch, UTC. (One representation
everywhere: it sorts, subtracts and partitions without parsing; ISO-8601 strings are accepted by
nothing.) Amounts are in currency units with at most two decimals. Ids are 1 to 64 printable
ASCII characters other than space, ``:``, ``{`` and ``}`` (the online store's separator and
Redis Cluster's hash-tag braces).

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
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from fraudstack.errors import InvalidEvent

#: Printable ASCII without space, ``:`` (the store's separator), ``{`` and ``}`` (Redis Cluster's
#: hash tag), so an id means the same to every regex dialect (the OpenAPI schema's too).
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[!-9;-z|~]+$")]


def _whole_number(value: Any) -> Any:
    """A JSON number without a fraction (``1522540800000.0``) is an integer, as JSON Schema
    says; a string or a fraction is still refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: 2000-01-01 .. 2100-01-01: a timestamp outside is a unit mistake (seconds, microseconds).
EpochMillis = Annotated[
    int,
    Field(ge=946_684_800_000, lt=4_102_444_800_000, strict=True),
    BeforeValidator(_whole_number),
]


def _two_decimals(amount: float) -> float:
    if abs(amount * 100 - round(amount * 100)) > 1e-6:
        raise ValueError("amount has more than two decimals")
    return amount


#: Currency units, whole cents. The schema names the rule with a format of its own,
#: ``currency-amount``, rather than ``multipleOf: 0.01``: in binary floating point a multiple of
#: 0.01 is not one (0.57 / 0.01 = 56.99999999999999), so validators of that keyword disagree on
#: most amounts. The check here allows for the binary rounding of a decimal such as 57.16.
Amount = Annotated[
    float,
    Field(
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        strict=True,  # a number: not true/false, not "57.16"
        description="currency units, at most two decimals",
        json_schema_extra={"format": "currency-amount"},
    ),
    AfterValidator(_two_decimals),
]


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    txn_id: Identifier
    ts: EpochMillis
    customer_id: Identifier
    terminal_id: Identifier
    amount: Amount

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
