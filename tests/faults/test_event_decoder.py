"""The stream's event decoder, fuzzed with hypothesis: every input is an event or a clear reason.

What the aggregator and the snapshot consumer read from Kafka goes through
``fraudstack.events.parse_transaction`` / ``parse_label``; a record they cannot decode goes to
the dead-letter topic with the reason, so the decoder may raise :class:`InvalidEvent` and
nothing else, whatever the bytes.
"""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudstack.errors import InvalidEvent
from fraudstack.events import Transaction, encode, parse_label, parse_transaction

pytestmark = pytest.mark.faults

#: What an id may hold: printable ASCII but space, ":", "{" and "}" (fraudstack.events).
IDS = st.text(
    alphabet=[chr(code) for code in range(0x21, 0x7F) if chr(code) not in ":{}"],
    min_size=1,
    max_size=64,
)
#: Generation speed is not under test: a busy machine must not fail a run for it.
FAST_ENOUGH = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
TIMES = st.integers(946_684_800_000, 4_102_444_800_000 - 1)
CENTS = st.integers(0, 100_000_000)

JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
FIELDS = ("txn_id", "ts", "customer_id", "terminal_id", "amount", "is_fraud", "reported_at")


@FAST_ENOUGH
@given(txn_id=IDS, ts=TIMES, customer_id=IDS, terminal_id=IDS, cents=CENTS)
def test_every_valid_transaction_decodes_to_itself(
    txn_id: str, ts: int, customer_id: str, terminal_id: str, cents: int
) -> None:
    raw = {
        "txn_id": txn_id,
        "ts": ts,
        "customer_id": customer_id,
        "terminal_id": terminal_id,
        "amount": cents / 100,
    }
    transaction = parse_transaction(orjson.dumps(raw))
    assert transaction.model_dump() == raw
    assert transaction.amount_cents == cents
    assert parse_transaction(encode(transaction)) == transaction


@FAST_ENOUGH
@given(raw=st.binary(max_size=300))
def test_any_bytes_are_an_event_or_a_reason(raw: bytes) -> None:
    for parse in (parse_transaction, parse_label):
        try:
            parse(raw)
        except InvalidEvent as exc:
            assert str(exc)


@FAST_ENOUGH
@given(
    event=st.fixed_dictionaries(
        {},
        optional={
            name: JSON | (TIMES if name in ("ts", "reported_at") else IDS) for name in FIELDS
        },
    )
)
def test_any_json_object_is_an_event_or_a_reason(event: dict[str, object]) -> None:
    for parse in (parse_transaction, parse_label):
        try:
            parsed = parse(json.dumps(event).encode())  # any integer, Infinity too
        except InvalidEvent as exc:
            assert str(exc)
        else:  # what passes is sound
            if isinstance(parsed, Transaction):
                assert math.isfinite(parsed.amount) and 0 <= parsed.amount <= 1_000_000


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": float("inf")}, "amount"),
        ({"amount": -0.01}, "amount"),
        ({"amount": 1_000_000.01}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "12.50"}, "amount"),
        ({"amount": 0.001}, "two decimals"),
        ({"ts": 4_102_444_800_000}, "ts"),  # the year 2100: a unit mistake
        ({"ts": 1_522_540_800}, "ts"),  # seconds
        ({"ts": 1_522_540_800_000.5}, "ts"),
        ({"customer_id": "a:b"}, "customer_id"),
        ({"customer_id": "{hot}"}, "customer_id"),
        ({"customer_id": "é"}, "customer_id"),
        ({"customer_id": "x" * 65}, "customer_id"),
        ({"terminal_id": ""}, "terminal_id"),
    ],
)
def test_odd_values_are_refused_with_the_field_named(
    change: dict[str, object], reason: str
) -> None:
    event = {"txn_id": "t1", "ts": 1_522_540_800_000, "customer_id": "1", "terminal_id": "2"}
    event = {**event, "amount": 1.5, **change}
    with pytest.raises(InvalidEvent, match=reason):
        parse_transaction(json.dumps(event).encode())
