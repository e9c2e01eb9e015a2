"""The routing document: which model versions serve, as the operator publishes it.

The FraudModel operator (``operator/fraudmodel_operator``) writes one document per routing key
to the online store's Redis; every inference worker polls that key
(:mod:`fraudstack.serve.routing_watch`) and switches to the routing it names, without a restart.
The same document is mirrored in a ConfigMap ``<fraudmodel>-routing`` so ``kubectl get`` shows
it. This module is the contract between the two sides; it is pure (no Redis, no kopf).

Key: ``fraudstack:routing`` unless ``FRAUDSTACK_ROUTING_KEY`` says otherwise (both sides read
the same variable). Value: compact JSON, keys sorted::

    {"candidate": "2026-01-15",        # null when only the stable version serves
     "candidate_share": 25.0,          # percent of customers (0-100) the candidate scores
     "generation": 3,                  # FraudModel metadata.generation that last changed it
     "mode": "canary",                 # canary: the candidate answers for its share;
                                       # shadow: it scores its share too, answer only in metrics
     "source": "fraudstack/fraud-scorer",   # <namespace>/<name> of the FraudModel
     "stable": "2026-01-01",
     "updated_at": 1768471200000}      # epoch ms when this routing was published

A customer goes to the candidate by a stable hash of the customer id (see
:func:`fraudstack.serve.models.customer_bucket`), so the share is a share of customers, sticky
for as long as it stays put. The operator rewrites the key only when the routing itself changes
(stable, candidate, share, mode or source), so ``updated_at`` is the time of the last switch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Final

from fraudstack.errors import ConfigurationError

DEFAULT_ROUTING_KEY: Final = "fraudstack:routing"
#: The environment variable both the operator and the inference service read the key from.
ROUTING_KEY_VARIABLE: Final = "FRAUDSTACK_ROUTING_KEY"
MODES: Final = ("canary", "shadow")

# The FraudModel CRD's pattern for a version; the registry accepts the same characters.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SOURCE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
_FIELDS: Final = frozenset(
    {"stable", "candidate", "candidate_share", "mode", "source", "generation", "updated_at"}
)


class InvalidRouting(ConfigurationError):
    """A routing document that cannot be used: unreadable JSON or a field out of range."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingDocument:
    """One published routing; construction validates it (:class:`InvalidRouting` if not)."""

    stable: str
    #: ``<namespace>/<name>`` of the FraudModel that published it.
    source: str
    candidate: str | None = None
    #: Percent of customers (0-100) the candidate scores.
    candidate_share: float = 0.0
    mode: str = "canary"
    generation: int = 0
    #: Epoch milliseconds of publication.
    updated_at: int = 0

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise InvalidRouting("invalid routing document: " + "; ".join(problems))

    def same_routing(self, other: RoutingDocument | None) -> bool:
        """True when ``other`` sends every customer to the same model in the same mode."""
        return other is not None and self.routing_fields() == other.routing_fields()

    def routing_fields(self) -> tuple[str, str | None, float, str]:
        """What decides which model scores a customer; who published it and when left out."""
        return (self.stable, self.candidate, self.candidate_share, self.mode)

    @property
    def versions(self) -> list[str]:
        """The versions a worker needs loaded for this routing."""
        return [self.stable] + ([self.candidate] if self.candidate else [])

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> RoutingDocument:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRouting(f"routing document is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidRouting("routing document is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingDocument:
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise InvalidRouting(f"routing document has unknown fields: {', '.join(unknown)}")
        missing = [name for name in ("stable", "source") if name not in data]
        if missing:
            raise InvalidRouting(f"routing document has no {' or '.join(missing)}")
        share = data.get("candidate_share", 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise InvalidRouting(f"candidate_share {share!r} is not a number")
        for name in ("generation", "updated_at"):
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRouting(f"{name} {value!r} is not an integer")
        return cls(
            stable=data["stable"],
            candidate=data.get("candidate"),
            candidate_share=float(share),
            mode=data.get("mode", "canary"),
            source=data["source"],
            generation=data.get("generation", 0),
            updated_at=data.get("updated_at", 0),
        )


def split_problems(candidate: str | None, share: object, mode: str) -> list[str]:
    """What is wrong with a split (candidate, its share, the mode), wherever it comes from."""
    problems = []
    if not isinstance(share, int | float) or not 0.0 <= share <= 100.0:
        problems.append(f"candidate_share {share!r} is outside 0-100")
    elif share and candidate is None:
        problems.append("a candidate_share above 0 needs a candidate")
    if mode not in MODES:
        problems.append(f"mode {mode!r} is not one of {', '.join(MODES)}")
    return problems


def _problems(document: RoutingDocument) -> list[str]:
    problems = []
    if not isinstance(document.stable, str) or not _VERSION.match(document.stable):
        problems.append(f"stable {document.stable!r} is not a model version name")
    candidate = document.candidate
    if candidate is not None and (not isinstance(candidate, str) or not _VERSION.match(candidate)):
        problems.append(f"candidate {candidate!r} is not a model version name")
    problems += split_problems(candidate, document.candidate_share, document.mode)
    if not isinstance(document.source, str) or not _SOURCE.match(document.source):
        problems.append(f"source {document.source!r} is not <namespace>/<name>")
    if not isinstance(document.generation, int) or document.generation < 0:
        problems.append(f"generation {document.generation!r} is not a non-negative integer")
    if not isinstance(document.updated_at, int) or document.updated_at < 0:
        problems.append(f"updated_at {document.updated_at!r} is not epoch milliseconds")
    return problems
