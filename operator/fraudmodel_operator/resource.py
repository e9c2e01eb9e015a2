"""The FraudModel resource as the operator reads and writes it: its spec, its status, and the
gate report kept in that status. Pure data and conversions (dicts as the API server stores them
to typed values and back); :mod:`fraudmodel_operator.rollout` holds the decisions.

Status fields this operator owns (everything is re-derived from them after a restart)::

    phase               Serving, Progressing, Promoted, RolledBack, Paused or Degraded
    observedGeneration  the spec generation this status answers
    stableVersion, candidateVersion, candidateShare, mode    the split now published
    currentStep         1-based rollout step (0 without a rollout)
    rollout             key, stepStartedAt, outcome, message, lastGateCheck
    conditions          Ready, Progressing, Degraded (reason, message, lastTransitionTime)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

SERVING, PROGRESSING, PROMOTED, ROLLED_BACK, PAUSED, DEGRADED = (
    "Serving",
    "Progressing",
    "Promoted",
    "RolledBack",
    "Paused",
    "Degraded",
)
READY, DEGRADED_CONDITION = "Ready", "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED_CONDITION)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# -- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    share: int
    duration_seconds: int


@dataclass(frozen=True, slots=True)
class Gates:
    """The CRD's ``spec.gates``, with the CRD's defaults."""

    max_latency_p99_ratio: float = 1.5
    max_error_rate_delta: float = 0.01
    max_score_drift: float = 0.2
    min_requests: int = 100


@dataclass(frozen=True, slots=True)
class Spec:
    """A FraudModel's spec as the machine reads it (the API server has validated it)."""

    stable: str
    candidate: str | None = None
    candidate_share: int = 0
    mode: str = "canary"
    steps: tuple[Step, ...] = ()
    gates: Gates = field(default_factory=Gates)
    on_gate_failure: str = "rollback"

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Spec:
        gates = spec.get("gates") or {}
        defaults = Gates()
        steps = (spec.get("rollout") or {}).get("steps") or []
        return cls(
            stable=str(spec["stableVersion"]),
            candidate=spec.get("candidateVersion") or None,
            candidate_share=int(spec.get("candidateShare", 0)),
            mode=str(spec.get("mode", "canary")),
            steps=tuple(Step(int(s["share"]), int(s["durationSeconds"])) for s in steps),
            gates=Gates(
                max_latency_p99_ratio=float(
                    gates.get("maxLatencyP99Ratio", defaults.max_latency_p99_ratio)
                ),
                max_error_rate_delta=float(
                    gates.get("maxErrorRateDelta", defaults.max_error_rate_delta)
                ),
                max_score_drift=float(gates.get("maxScoreDrift", defaults.max_score_drift)),
                min_requests=int(gates.get("minRequests", defaults.min_requests)),
            ),
            on_gate_failure=str(spec.get("onGateFailure", "rollback")),
        )

    @property
    def rollout_key(self) -> str:
        """What identifies a rollout: a change here starts it over."""
        steps = ",".join(f"{step.share}%/{step.duration_seconds}s" for step in self.steps)
        return f"{self.stable} -> {self.candidate} {self.mode} [{steps}]"


# -- gate figures ------------------------------------------------------------------------------


#: The figures a verdict carries (see :func:`fraudmodel_operator.gates.judge`); the status always
#: lists all of them, null when unknown, because a merge patch would keep an omitted old one.
FIGURES = (
    "windowSeconds",
    "stableRequests",
    "candidateRequests",
    "stableErrorRate",
    "candidateErrorRate",
    "stableP99Seconds",
    "candidateP99Seconds",
    "latencyP99Ratio",
    "errorRateDelta",
    "scoreDrift",
)


class Verdict(StrEnum):
    PASS = "Pass"
    WAIT = "Wait"  # not enough traffic or no figures yet: judge again later, never a failure
    FAIL = "Fail"


@dataclass(frozen=True, slots=True)
class GateReport:
    """The gates' verdict on one step, with the figures behind it (see :mod:`.gates`)."""

    verdict: Verdict
    message: str
    figures: Mapping[str, float | None] = field(default_factory=dict)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "message": self.message,
            "judgedAt": format_time(now),
            # JSON has no NaN: a figure that could not be computed is null
            "figures": {name: _finite(self.figures.get(name)) for name in FIGURES},
        }


# -- the status --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """What keeps the spec from being served: a condition reason and a message naming the
    culprit. It freezes the routing (Degraded) until someone, or something, fixes it.

    ``rejects_candidate`` marks a permanent fault of the candidate alone: its artifact fails its
    hash check. Published versions never change, so waiting cannot fix it; a rollout rolls such
    a candidate back instead of freezing (:func:`fraudmodel_operator.rollout.decide`).
    """

    reason: str
    message: str
    rejects_candidate: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """Who scores whom: what is (or is to be) published as the routing."""

    stable: str
    candidate: str | None = None
    share: int = 0
    mode: str = "canary"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str

    def to_dict(self) -> dict[str, str]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }


@dataclass(frozen=True, slots=True)
class RolloutState:
    key: str
    step: int  # 1-based
    step_started_at: int  # epoch seconds
    outcome: str = ""  # "", Promoted, RolledBack, Paused
    message: str = ""
    last_gate_check: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stepStartedAt": format_time(self.step_started_at),
            "outcome": self.outcome,
            "message": self.message,
            "lastGateCheck": dict(self.last_gate_check) if self.last_gate_check else None,
        }


@dataclass(frozen=True, slots=True)
class Status:
    phase: str = ""
    observed_generation: int = 0
    split: Split | None = None  # None until something was published
    rollout: RolloutState | None = None
    conditions: tuple[Condition, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The status fields this operator owns; absent ones are None (a merge patch drops them)."""
        split = self.split
        return {
            "phase": self.phase,
            "observedGeneration": self.observed_generation,
            "stableVersion": split.stable if split else None,
            "candidateVersion": split.candidate if split else None,
            "candidateShare": split.share if split else None,
            "mode": split.mode if split else None,
            "currentStep": self.rollout.step if self.rollout else 0,
            "rollout": self.rollout.to_dict() if self.rollout else None,
            "conditions": [condition.to_dict() for condition in self.conditions],
        }

    @classmethod
    def from_dict(cls, status: Mapping[str, Any] | None) -> Status:
        """Read back what :meth:`to_dict` wrote; anything unreadable counts as absent."""
        status = status or {}
        split = None
        if isinstance(status.get("stableVersion"), str):
            split = Split(
                stable=status["stableVersion"],
                candidate=status.get("candidateVersion") or None,
                share=_int(status.get("candidateShare")),
                mode=str(status.get("mode") or "canary"),
            )
        rollout = None
        raw = status.get("rollout")
        if isinstance(raw, Mapping) and isinstance(raw.get("key"), str):
            started = parse_time(raw.get("stepStartedAt"))
            step = _int(status.get("currentStep"))
            outcome = str(raw.get("outcome") or "")
            if started is not None and step >= 1:
                rollout = RolloutState(
                    key=raw["key"],
                    step=step,
                    step_started_at=started,
                    outcome=outcome,
                    message=str(raw.get("message") or ""),
                    last_gate_check=raw.get("lastGateCheck") or None,
                )
        conditions = tuple(
            Condition(
                type=str(item.get("type")),
                status=str(item.get("status")),
                reason=str(item.get("reason") or ""),
                message=str(item.get("message") or ""),
                last_transition_time=str(item.get("lastTransitionTime") or ""),
            )
            for item in status.get("conditions") or []
            if isinstance(item, Mapping) and item.get("type") in CONDITION_TYPES
        )
        return cls(
            phase=str(status.get("phase") or ""),
            observed_generation=_int(status.get("observedGeneration")),
            split=split,
            rollout=rollout,
            conditions=conditions,
        )

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


# -- time --------------------------------------------------------------------------------------


def format_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), UTC).strftime(_TIME_FORMAT)


def parse_time(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


def _finite(value: float | None) -> float | None:
    return round(value, 6) if value is not None and math.isfinite(value) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
