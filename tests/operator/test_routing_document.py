"""The routing document shared by the operator and the inference service (pure)."""

from __future__ import annotations

import json

import pytest

from fraudstack.routing import InvalidRouting, RoutingDocument

GOOD = {
    "stable": "2026-01-01",
    "candidate": "2026-01-15",
    "candidate_share": 25.0,
    "mode": "canary",
    "source": "fraudstack/fraud-scorer",
    "generation": 3,
    "updated_at": 1_768_471_200_000,
}


def test_round_trip() -> None:
    document = RoutingDocument.from_dict(GOOD)
    raw = document.to_json()
    assert json.loads(raw) == GOOD
    assert list(json.loads(raw)) == sorted(GOOD)  # sorted keys: byte-stable for the same doc
    assert RoutingDocument.from_json(raw) == document
    assert RoutingDocument.from_json(raw.decode()) == document
    assert document.versions == ["2026-01-01", "2026-01-15"]


def test_stable_only_with_defaults() -> None:
    document = RoutingDocument.from_json(b'{"stable": "v1", "source": "ns/name"}')
    assert document.routing_fields() == ("v1", None, 0.0, "canary")
    assert document.versions == ["v1"]


def test_same_routing_ignores_who_and_when() -> None:
    document = RoutingDocument.from_dict(GOOD)
    later = RoutingDocument.from_dict({**GOOD, "generation": 4, "updated_at": 1, "source": "a/b"})
    assert document.same_routing(later)
    assert not document.same_routing(RoutingDocument.from_dict({**GOOD, "candidate_share": 30}))
    assert not document.same_routing(RoutingDocument.from_dict({**GOOD, "mode": "shadow"}))
    assert not document.same_routing(None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"candidate_share": 100.5}, "candidate_share 100.5 is outside 0-100"),
        ({"candidate_share": -1}, "outside 0-100"),
        ({"candidate_share": "25"}, "candidate_share '25' is not a number"),
        ({"candidate_share": True}, "is not a number"),
        ({"candidate": None}, "a candidate_share above 0 needs a candidate"),
        ({"stable": "../etc"}, "stable '../etc' is not a model version name"),
        ({"stable": ""}, "is not a model version name"),
        ({"candidate": 7}, "candidate 7 is not a model version name"),
        ({"mode": "blue-green"}, "mode 'blue-green' is not one of canary, shadow"),
        ({"source": "no-slash"}, "is not <namespace>/<name>"),
        ({"generation": -1}, "generation -1"),
        ({"generation": 1.5}, "generation 1.5 is not an integer"),
        ({"updated_at": "now"}, "updated_at 'now' is not an integer"),
        ({"weight": 3}, "unknown fields: weight"),
    ],
)
def test_invalid_documents_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRouting) as refused:
        RoutingDocument.from_dict({**GOOD, **change})
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"source": "a/b"}', "has no stable"),
        (b'{"stable": "v1"}', "has no source"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_unreadable_documents_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRouting) as refused:
        RoutingDocument.from_json(raw)
    assert message in str(refused.value)


def test_construction_validates_too() -> None:
    with pytest.raises(InvalidRouting, match="needs a candidate"):
        RoutingDocument(stable="v1", source="a/b", candidate_share=5)
