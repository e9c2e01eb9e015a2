"""The loaded models and the routing between them, swappable at runtime in one step.

A :class:`Routing` is immutable: the stable scorer, an optional candidate, the share of
customers the candidate scores and the mode (``canary``: the candidate answers for its share;
``shadow``: it scores its share too, but only metrics see its answer). The :class:`ModelHolder`
keeps the current routing in one attribute; a request reads it once and uses that object to the
end, so replacing it (one reference assignment) never mixes two routings within a request, never
blocks a request and never fails one. A model is loaded (and its files checked against
``metadata.json``) before the routing that needs it is published; a routing that cannot be
loaded leaves the current one in place.

Which model scores a customer is sticky: the customer id is hashed (BLAKE2b, the same in every
process, unlike Python's ``hash``) into one of 10,000 buckets, and buckets below
``candidate_share × 100`` go to the candidate. The same customer therefore always meets the same
model while the share stays put, and raising the share only moves customers from stable to
candidate, never back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol

from fraudstack.adapters.registry import ModelRegistry
from fraudstack.errors import ModelError
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.routing import split_problems
from fraudstack.serve.batching import BatchableScorer, BatchingScorer
from fraudstack.serve.settings import ServeSettings

BUCKETS = 10_000

log = logging.getLogger(__name__)


#: What the service needs of a loaded model (see :class:`fraudstack.scoring.Scorer`).
Scorer = BatchableScorer
#: ``(registry_root, version) -> Scorer``; loads and verifies one version.
ScorerLoader = Callable[[str, str], Scorer]


class RoutingRequest(Protocol):
    """Which versions serve, by name: a :class:`RoutingSpec` from the settings, or the
    :class:`~fraudstack.routing.RoutingDocument` the operator publishes; both validate the
    share and the mode when they are built."""

    @property
    def stable(self) -> str: ...

    @property
    def candidate(self) -> str | None: ...

    @property
    def candidate_share(self) -> float: ...

    @property
    def mode(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RoutingSpec:
    """A routing asked for by the settings."""

    stable: str
    candidate: str | None = None
    #: Percent of customers (0-100) the candidate scores.
    candidate_share: float = 0.0
    mode: str = "canary"

    def __post_init__(self) -> None:
        problems = split_problems(self.candidate or None, self.candidate_share, self.mode)
        if problems:
            raise ModelError("invalid routing: " + "; ".join(problems))


def routing_spec(settings: ServeSettings) -> RoutingSpec:
    """The routing the settings ask for; no stable version means the registry's newest."""
    stable = settings.model_version or ModelRegistry(settings.model_registry_uri).latest()
    return RoutingSpec(
        stable=stable,
        candidate=settings.candidate_version or None,
        candidate_share=settings.candidate_share,
    )


def customer_bucket(customer_id: str) -> int:
    """The customer's bucket in ``[0, 10000)``, the same in every process and run."""
    digest = blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Routing:
    stable: BatchingScorer
    candidate: BatchingScorer | None = None
    candidate_share: float = 0.0
    mode: str = "canary"
    #: Buckets below this go to the candidate (0 in shadow mode: the stable model answers).
    _answer_cutoff: int = 0
    #: Buckets below this are also scored by the candidate, in shadow mode only.
    _shadow_cutoff: int = 0

    @classmethod
    def build(
        cls,
        stable: BatchingScorer,
        candidate: BatchingScorer | None = None,
        candidate_share: float = 0.0,
        mode: str = "canary",
    ) -> Routing:
        cutoff = round(candidate_share * BUCKETS / 100) if candidate is not None else 0
        if mode == "shadow":
            return cls(stable, candidate, candidate_share, mode, 0, cutoff)
        return cls(stable, candidate, candidate_share, mode, cutoff, 0)

    def scorer_for(self, customer_id: str) -> BatchingScorer:
        """The model whose answer this customer gets."""
        if not self._answer_cutoff or self.candidate is None:
            return self.stable
        if customer_bucket(customer_id) < self._answer_cutoff:
            return self.candidate
        return self.stable

    def shadow_for(self, customer_id: str) -> BatchingScorer | None:
        """The candidate, when it scores this customer in the shadow of the stable model."""
        if not self._shadow_cutoff or self.candidate is None:
            return None
        return self.candidate if customer_bucket(customer_id) < self._shadow_cutoff else None

    def describe(self) -> dict[str, object]:
        return {
            "stable": self.stable.version,
            "candidate": self.candidate.version if self.candidate is not None else None,
            "candidate_share": self.candidate_share,
            "mode": self.mode,
        }


class ModelHolder:
    """The current :class:`Routing` of one worker, and the scorers it has loaded."""

    def __init__(self, registry_root: str, loader: ScorerLoader | None = None) -> None:
        self.registry_root = registry_root
        self._loader = loader
        self._loaded: dict[str, BatchingScorer] = {}
        self._routing: Routing | None = None

    @property
    def routing(self) -> Routing:
        routing = self._routing
        if routing is None:
            raise ModelError("no model is loaded yet")
        return routing

    @property
    def ready(self) -> bool:
        return self._routing is not None

    def apply(self, spec: RoutingRequest) -> Routing:
        """Load what ``spec`` needs, then publish it as the routing (blocking; see apply_async)."""
        stable = self._scorer(spec.stable)
        candidate = self._scorer(spec.candidate) if spec.candidate else None
        routing = Routing.build(stable, candidate, spec.candidate_share, spec.mode)
        self._routing = routing  # the one step that switches every later request
        keep = [version for version in (spec.stable, spec.candidate) if version]
        # requests still holding the old routing keep their scorers alive until they finish
        self._loaded = {version: self._loaded[version] for version in keep}
        return routing

    async def apply_async(self, spec: RoutingRequest) -> Routing:
        """:meth:`apply` with the loading off the event loop, so serving goes on meanwhile."""
        missing = [v for v in (spec.stable, spec.candidate) if v and v not in self._loaded]
        for version in missing:
            self._loaded[version] = await asyncio.to_thread(self._load, version)
        return self.apply(spec)

    def _scorer(self, version: str) -> BatchingScorer:
        scorer = self._loaded.get(version)
        if scorer is None:
            scorer = self._loaded[version] = self._load(version)
        return scorer

    def _load(self, version: str) -> BatchingScorer:
        loader = self._loader
        if loader is None:
            from fraudstack.scoring import load_scorer  # onnxruntime only where it is used

            loader = load_scorer
        feature_set = ModelRegistry(self.registry_root).metadata(version).feature_set_version
        if feature_set != FEATURE_SET_VERSION:
            raise ModelError(
                f"model {version} was trained on feature set {feature_set}; this service "
                f"computes {FEATURE_SET_VERSION}"
            )
        scorer = loader(self.registry_root, version)
        unknown = [name for name in scorer.feature_names if name not in FEATURE_NAMES]
        if unknown:
            raise ModelError(
                f"model {version} needs features this service does not compute: "
                f"{', '.join(unknown)}"
            )
        log.info("model %s loaded, scored by %s", version, getattr(scorer, "engine", "its loader"))
        return BatchingScorer(scorer)
