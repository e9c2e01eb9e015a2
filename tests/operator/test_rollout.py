"""The rollout state machine, transition by transition (pure: no server involved)."""

from __future__ import annotations

from typing import Any

from fraudmodel_operator.resource import (
    DEGRADED,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    SERVING,
    GateReport,
    Problem,
    Spec,
    Split,
    Status,
    Verdict,
    format_time,
)
from fraudmodel_operator.rollout import Decision, decide, gates_due

T0 = 1_768_471_200  # 2026-01-15T10:00:00Z
STEPS = [{"share": 5, "durationSeconds": 60}, {"share": 25, "durationSeconds": 120}]
PASS = GateReport(Verdict.PASS, "gates passed", {"latencyP99Ratio": 1.0})
WAIT = GateReport(Verdict.WAIT, "v2 scored 3 requests in the last 60s; the gates need 100")
FAIL = GateReport(Verdict.FAIL, "v2 failed its gates: p99 latency x3.00 > x1.5")
CORRUPT = Problem(
    "ArtifactCorrupt",
    "candidate version v2 cannot be loaded: model v2: model.onnx has sha256 0a1b, "
    "metadata.json says 2c3d",
    rejects_candidate=True,
)


def spec(**fields: Any) -> Spec:
    return Spec.from_dict({"stableVersion": "v1", **fields})


def rollout_spec(**fields: Any) -> Spec:
    return spec(**{"candidateVersion": "v2", "rollout": {"steps": STEPS}, **fields})


def conditions(status: Status) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def step(the_spec: Spec, previous: Status, now: float, gates: GateReport | None = None) -> Decision:
    return decide(the_spec, previous, generation=1, now=now, gates=gates)


def test_without_a_candidate_stable_serves_everyone() -> None:
    decision = step(spec(), Status(), T0)
    status = decision.status
    assert status.phase == SERVING and status.split == Split("v1")
    assert conditions(status) == {
        "Ready": ("True", "Serving"),
        "Progressing": ("False", "NoCandidate"),
        "Degraded": ("False", "AsExpected"),
    }
    assert [t.reason for t in decision.transitions] == ["RoutingChanged"]
    assert step(spec(), status, T0 + 5).transitions == ()  # nothing changed, nothing to say


def test_a_manual_split_is_the_specs_share() -> None:
    status = step(spec(candidateVersion="v2", candidateShare=30), Status(), T0).status
    assert status.split == Split("v1", "v2", 30, "canary")
    assert conditions(status)["Progressing"] == ("False", "ManualSplit")
    shadow = step(spec(candidateVersion="v2", candidateShare=30, mode="shadow"), status, T0)
    assert shadow.status.split == Split("v1", "v2", 30, "shadow")


def test_a_rollout_starts_at_step_one_and_waits_for_its_duration() -> None:
    the_spec = rollout_spec()
    decision = step(the_spec, Status(), T0)
    status = decision.status
    assert status.phase == PROGRESSING and status.split == Split("v1", "v2", 5)
    assert status.rollout is not None and status.rollout.step == 1
    assert conditions(status)["Progressing"] == ("True", "StepRunning")
    assert [t.reason for t in decision.transitions] == ["RolloutStarted"]
    assert not gates_due(the_spec, status, T0 + 59)
    assert gates_due(the_spec, status, T0 + 60)
    # before the end of the step nothing moves, whatever figures are passed in
    assert step(the_spec, status, T0 + 30, PASS).status.rollout == status.rollout


def test_passing_gates_advance_then_promote() -> None:
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    second = step(the_spec, first, T0 + 61, PASS)
    assert second.status.split == Split("v1", "v2", 25)
    assert second.status.rollout is not None
    assert (second.status.rollout.step, second.status.rollout.step_started_at) == (2, T0 + 61)
    assert [t.reason for t in second.transitions] == ["StepAdvanced"]
    assert not gates_due(the_spec, second.status, T0 + 61 + 119)

    promoted = step(the_spec, second.status, T0 + 61 + 120, PASS)
    assert promoted.status.phase == PROMOTED
    assert promoted.status.split == Split("v2")  # the candidate answers for everyone
    assert conditions(promoted.status) == {
        "Ready": ("True", PROMOTED),
        "Progressing": ("False", PROMOTED),
        "Degraded": ("False", "AsExpected"),
    }
    assert [t.reason for t in promoted.transitions] == ["Promoted"]
    # final: later looks change nothing
    assert step(the_spec, promoted.status, T0 + 999).status == promoted.status


def test_not_enough_traffic_waits_instead_of_failing() -> None:
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    waiting = step(the_spec, first, T0 + 70, WAIT)
    assert waiting.status.phase == PROGRESSING and waiting.status.split == first.split
    assert waiting.status.rollout is not None and waiting.status.rollout.step == 1
    progressing = waiting.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "WaitingForGates"
    assert "the gates need 100" in progressing.message
    assert waiting.transitions == ()
    assert gates_due(the_spec, waiting.status, T0 + 71)  # judged again on the next look


def test_a_failing_gate_rolls_back_and_stays_rolled_back() -> None:
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    failed = step(the_spec, first, T0 + 60, FAIL)
    status = failed.status
    assert status.phase == ROLLED_BACK and status.split == Split("v1")
    assert conditions(status) == {
        "Ready": ("True", ROLLED_BACK),
        "Progressing": ("False", ROLLED_BACK),
        "Degraded": ("True", "GateFailed"),
    }
    degraded = status.condition("Degraded")
    assert degraded is not None and "p99 latency x3.00" in degraded.message
    assert [(t.reason, t.warning) for t in failed.transitions] == [(ROLLED_BACK, True)]
    assert not gates_due(the_spec, status, T0 + 1000)
    assert step(the_spec, status, T0 + 1000).status == status

    # a new candidate is a new rollout
    again = step(rollout_spec(candidateVersion="v3"), status, T0 + 2000).status
    assert again.phase == PROGRESSING and again.split == Split("v1", "v3", 5)


def test_pause_keeps_the_share_of_the_failed_step() -> None:
    the_spec = rollout_spec(onGateFailure="pause")
    first = step(the_spec, Status(), T0).status
    second = step(the_spec, first, T0 + 60, PASS).status
    paused = step(the_spec, second, T0 + 180, FAIL).status
    assert paused.phase == PAUSED and paused.split == Split("v1", "v2", 25)
    assert conditions(paused)["Degraded"] == ("True", "GateFailed")
    assert paused.to_dict()["currentStep"] == 2


def test_editing_the_gates_keeps_the_rollout_going_editing_the_steps_restarts_it() -> None:
    first = step(rollout_spec(), Status(), T0).status
    stricter = step(rollout_spec(gates={"maxLatencyP99Ratio": 1.1}), first, T0 + 10).status
    assert stricter.rollout == first.rollout
    steps = [{"share": 10, "durationSeconds": 60}]
    restarted = step(rollout_spec(rollout={"steps": steps}), first, T0 + 10).status
    assert restarted.rollout is not None and restarted.rollout.step_started_at == T0 + 10
    assert restarted.split == Split("v1", "v2", 10)


def test_a_problem_freezes_split_and_rollout() -> None:
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    problem = Problem("VersionNotFound", "candidate version v2 is not in the model registry")
    blocked = decide(the_spec, first, generation=2, now=T0 + 90, problem=problem)
    status = blocked.status
    assert status.phase == DEGRADED and status.observed_generation == 2
    assert status.split == first.split and status.rollout == first.rollout
    assert conditions(status) == {
        "Ready": ("False", "VersionNotFound"),
        "Progressing": ("False", "VersionNotFound"),
        "Degraded": ("True", "VersionNotFound"),
    }
    assert [t.reason for t in blocked.transitions] == ["VersionNotFound"]
    again = decide(the_spec, status, generation=2, now=T0 + 91, problem=problem)
    assert again.transitions == ()  # said once
    # fixed: the rollout carries on where it was, its step already over
    resumed = step(the_spec, status, T0 + 92, PASS).status
    assert resumed.phase == PROGRESSING and resumed.split == Split("v1", "v2", 25)


def test_a_first_problem_publishes_nothing() -> None:
    problem = Problem("VersionNotFound", "stable version v1 is not in the model registry")
    status = decide(spec(), Status(), generation=1, now=T0, problem=problem).status
    assert status.split is None
    assert status.to_dict()["stableVersion"] is None


def test_the_status_survives_a_round_trip_through_the_api() -> None:
    """What a restarted operator reads back decides exactly as the memory it lost would have."""
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    waiting = step(the_spec, first, T0 + 60, WAIT).status
    stored = Status.from_dict(waiting.to_dict())
    assert stored == waiting
    assert (
        step(the_spec, stored, T0 + 70, PASS).status
        == step(the_spec, waiting, T0 + 70, PASS).status
    )
    assert Status.from_dict({"rollout": "garbage", "conditions": [{"no": "type"}]}) == Status()


def test_a_condition_keeps_its_transition_time_until_it_flips() -> None:
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    later = step(the_spec, first, T0 + 30).status
    ready = later.condition("Ready")
    assert ready is not None and ready.last_transition_time == format_time(T0)
    failed = step(the_spec, later, T0 + 60, FAIL).status
    degraded = failed.condition("Degraded")
    assert degraded is not None and degraded.last_transition_time == format_time(T0 + 60)
    progressing = failed.condition("Progressing")
    assert progressing is not None and progressing.last_transition_time == format_time(T0 + 60)


def test_shadow_rollout_publishes_shadow_and_promotes_to_plain_serving() -> None:
    the_spec = rollout_spec(mode="shadow")
    first = step(the_spec, Status(), T0).status
    assert first.split == Split("v1", "v2", 5, "shadow")
    second = step(the_spec, first, T0 + 60, PASS).status
    promoted = step(the_spec, second, T0 + 180, PASS).status
    assert promoted.split == Split("v2", None, 0, "canary")


def test_a_rejected_candidate_is_rolled_back_at_once_and_stays_so() -> None:
    """Even with onGateFailure: pause, and before its step is over: no worker loads it."""
    the_spec = rollout_spec(onGateFailure="pause")
    first = step(the_spec, Status(), T0).status
    rejected = decide(the_spec, first, generation=1, now=T0 + 30, problem=CORRUPT)
    status = rejected.status
    assert status.phase == ROLLED_BACK and status.split == Split("v1")
    assert rejected.routing == Split("v1")  # published, as any rollback
    assert conditions(status) == {
        "Ready": ("True", ROLLED_BACK),
        "Progressing": ("False", ROLLED_BACK),
        "Degraded": ("True", "ArtifactCorrupt"),
    }
    degraded = status.condition("Degraded")
    assert degraded is not None and degraded.message == CORRUPT.message
    assert status.rollout is not None and status.rollout.step == 1
    assert status.rollout.message == f"step 1 of 2: v2 rejected: {CORRUPT.message}"
    assert [(t.reason, t.warning, t.message) for t in rejected.transitions] == [
        (ROLLED_BACK, True, status.rollout.message)
    ]
    assert not gates_due(the_spec, status, T0 + 1000)

    # the next looks, and a restarted operator's, find it rolled back: nothing more to say
    for previous in (status, Status.from_dict(status.to_dict())):
        again = decide(the_spec, previous, generation=1, now=T0 + 1000, problem=CORRUPT)
        assert again.status == status and again.transitions == ()


def test_a_candidate_rejected_from_the_start_never_starts_its_rollout() -> None:
    serving = step(spec(), Status(), T0).status
    rejected = decide(rollout_spec(), serving, generation=2, now=T0 + 5, problem=CORRUPT)
    assert rejected.status.phase == ROLLED_BACK and rejected.status.split == Split("v1")
    assert [t.reason for t in rejected.transitions] == [ROLLED_BACK]


def test_a_rejection_after_a_failed_gate_keeps_the_rollback_and_names_the_fault() -> None:
    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    failed = step(the_spec, first, T0 + 60, FAIL).status
    rejected = decide(the_spec, failed, generation=1, now=T0 + 70, problem=CORRUPT)
    assert rejected.status.rollout == failed.rollout and rejected.transitions == ()
    assert conditions(rejected.status)["Degraded"] == ("True", "ArtifactCorrupt")


def test_without_steps_or_once_promoted_a_rejection_only_degrades() -> None:
    """A split set by hand, or a promoted candidate, is not the machine's to take back."""
    manual = spec(candidateVersion="v2", candidateShare=30)
    serving = step(manual, Status(), T0).status
    blocked = decide(manual, serving, generation=2, now=T0 + 5, problem=CORRUPT)
    assert blocked.status.phase == DEGRADED and blocked.status.split == serving.split
    assert blocked.routing is None  # what is published stays
    assert conditions(blocked.status)["Degraded"] == ("True", "ArtifactCorrupt")

    the_spec = rollout_spec()
    first = step(the_spec, Status(), T0).status
    second = step(the_spec, first, T0 + 60, PASS).status
    promoted = step(the_spec, second, T0 + 180, PASS).status
    blocked = decide(the_spec, promoted, generation=1, now=T0 + 200, problem=CORRUPT)
    assert blocked.status.phase == DEGRADED and blocked.status.split == Split("v2")
    assert blocked.status.rollout == promoted.rollout
