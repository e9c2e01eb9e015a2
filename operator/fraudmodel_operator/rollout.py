"""The rollout state machine: from a FraudModel's spec, its last status and the gate figures to
its next status. Pure: no Kubernetes, Redis or Prometheus, so every transition is unit-tested.

Everything is derived from the spec and the status the operator wrote last, so a restarted
operator carries on where the last one stopped (idempotent on restart); the only clock is the
``now`` passed in. What the status records of a rollout, under ``status.rollout``::

    key           what the rollout is about: stable, candidate, mode and steps. A spec whose key
                  differs starts the rollout again from step 1; editing only the gates does not.
    stepStartedAt when the current step began (RFC 3339, UTC)
    outcome       "" while walking the steps, else Promoted, RolledBack or Paused (final until
                  the key changes: to retry a rolled-back candidate, change its steps, or remove
                  and re-add it)
    message       why the outcome happened (the failed gate, or the rejected candidate's fault)
    lastGateCheck the last gate figures and verdict

The machine, for a spec with a candidate and rollout steps::

                 key changed                    gates pass, more steps
        (any) ───────────────► step 1 ──┐    ┌──────────────────────┐
                                        ▼    │                      │
                          [step n runs durationSeconds] ──► judge gates
                                  ▲                          │   │   │
                                  └──── not enough data ─────┘   │   └── gates pass, last step
                                        (wait, judge again)      │         ──► Promoted
                                                                 └── a gate fails
                                               onGateFailure: rollback ──► RolledBack
                                               onGateFailure: pause    ──► Paused

        (any but Promoted) ── the registry rejects the candidate ───────────► RolledBack
                              (at once, whatever onGateFailure says)

Without steps the split is the spec's own (``candidateShare`` of customers to the candidate) and
no gate is judged; without a candidate the stable version serves everyone. A registry problem (a
version that is missing, built for another feature set or failing its hash check) or a routing
that cannot be published makes the FraudModel Degraded and freezes everything else: the split
and the rollout state stay as they were, and so does what the inference service serves.

One registry problem ends a rollout instead: a candidate whose files fail their hash check
(:attr:`~fraudmodel_operator.resource.Problem.rejects_candidate`). No inference worker loads
it, so it would never get the traffic its gates wait for, and a published version never
changes, so waiting cannot mend it: the rollout is RolledBack at once, the stable version
scoring everyone. Even with ``onGateFailure: pause``: a share of customers cannot be paused on
a version nobody serves. A promoted candidate is not taken back by the machine, though: that
one is Degraded, for a person to decide.

Phases: Serving, Progressing, Promoted, RolledBack, Paused, Degraded. Conditions: Ready (the
routing this FraudModel asks for is the one published), Progressing (a rollout is walking its
steps), Degraded (something needs a person: a missing version, a failed gate, a rejected
candidate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fraudmodel_operator.resource import (
    DEGRADED,
    DEGRADED_CONDITION,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    READY,
    ROLLED_BACK,
    SERVING,
    Condition,
    GateReport,
    Problem,
    RolloutState,
    Spec,
    Split,
    Status,
    Step,
    Verdict,
    format_time,
)


@dataclass(frozen=True, slots=True)
class Transition:
    """Something a person should see in ``kubectl describe``: posted as an Event."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    transitions: tuple[Transition, ...] = ()

    @property
    def routing(self) -> Split | None:
        """The split to publish: None when Degraded, which leaves the published one alone."""
        return None if self.status.phase == DEGRADED else self.status.split


# -- the machine -------------------------------------------------------------------------------


def current_step(spec: Spec, previous: Status) -> Step | None:
    """The step being walked, if a rollout of this very spec is under way."""
    state = _this_rollout(spec, previous)
    if spec.candidate is None or state is None or state.outcome:
        return None
    return spec.steps[state.step - 1]


def gates_due(spec: Spec, previous: Status, now: float) -> bool:
    """True when the current step has run its course and its gates must be judged."""
    step, state = current_step(spec, previous), previous.rollout
    return (
        step is not None
        and state is not None
        and now - state.step_started_at >= step.duration_seconds
    )


def decide(
    spec: Spec,
    previous: Status,
    *,
    generation: int,
    now: float,
    problem: Problem | None = None,
    gates: GateReport | None = None,
) -> Decision:
    """The next status. ``gates`` is the verdict on the current step, when :func:`gates_due`;
    a ``problem`` freezes everything (Degraded), unless it rejects a rollout's candidate."""
    if problem is not None and _rejects(spec, previous, problem):
        return _reject(spec, previous, generation, now, problem)
    if problem is not None:
        return _degraded(previous, generation, now, problem)
    if spec.candidate is None:
        split = Split(spec.stable, mode=spec.mode)
        return _settled(
            previous,
            generation,
            now,
            split,
            ready=f"{spec.stable} scores every customer",
            progressing=("NoCandidate", "no candidate version to roll out"),
        )
    if not spec.steps:
        split = Split(spec.stable, spec.candidate, spec.candidate_share, spec.mode)
        return _settled(
            previous,
            generation,
            now,
            split,
            ready=_describe(split),
            progressing=("ManualSplit", "candidateShare is set by hand: no rollout steps"),
        )
    return _rollout(spec, previous, generation, now, gates)


def _rollout(
    spec: Spec, previous: Status, generation: int, now: float, gates: GateReport | None
) -> Decision:
    transitions: list[Transition] = []
    state = _this_rollout(spec, previous)
    steps = len(spec.steps)
    if state is None:
        state = RolloutState(key=spec.rollout_key, step=1, step_started_at=int(now))
        transitions.append(
            Transition("RolloutStarted", f"rolling {spec.candidate} out: {_steps(spec)}")
        )
    elif gates_due(spec, previous, now):
        report = gates or GateReport(Verdict.WAIT, "the gates have not been judged yet")
        checked = report.to_dict(now)
        if report.verdict is Verdict.PASS and state.step < steps:
            state = RolloutState(
                key=state.key,
                step=state.step + 1,
                step_started_at=int(now),
                last_gate_check=checked,
            )
            share = spec.steps[state.step - 1].share
            transitions.append(
                Transition(
                    "StepAdvanced",
                    f"step {state.step} of {steps}: {spec.candidate} scores {share}% "
                    f"({report.message})",
                )
            )
        elif report.verdict is Verdict.PASS:
            message = f"{spec.candidate} passed the gates of all {steps} steps"
            state = replace(state, outcome=PROMOTED, message=message, last_gate_check=checked)
            transitions.append(Transition("Promoted", message))
        elif report.verdict is Verdict.FAIL:
            outcome = ROLLED_BACK if spec.on_gate_failure == "rollback" else PAUSED
            message = f"step {state.step} of {steps}: {report.message}"
            state = replace(state, outcome=outcome, message=message, last_gate_check=checked)
            transitions.append(Transition(outcome, message, warning=True))
        else:
            state = replace(state, last_gate_check=checked)
    return Decision(_rollout_status(spec, state, previous, generation, now), tuple(transitions))


def _rejects(spec: Spec, previous: Status, problem: Problem) -> bool:
    """Whether ``problem`` ends the rollout rather than freezing it: it rejects the candidate of
    a rollout that has not promoted it. A promoted candidate scores everyone; taking it away is
    for a person, so that problem stays an ordinary one."""
    if not (problem.rejects_candidate and spec.candidate and spec.steps):
        return False
    state = _this_rollout(spec, previous)
    return state is None or state.outcome != PROMOTED


def _reject(
    spec: Spec, previous: Status, generation: int, now: float, rejection: Problem
) -> Decision:
    """RolledBack at once, whatever ``onGateFailure`` says: no worker loads the candidate, so
    its step's share cannot be held (as a pause would) and its gates would wait forever. Said
    once; the next looks find the rollout RolledBack already and keep it so."""
    steps = len(spec.steps)
    state = _this_rollout(spec, previous) or RolloutState(
        key=spec.rollout_key, step=1, step_started_at=int(now)
    )
    transitions: tuple[Transition, ...] = ()
    if state.outcome != ROLLED_BACK:
        message = f"step {state.step} of {steps}: {spec.candidate} rejected: {rejection.message}"
        state = replace(state, outcome=ROLLED_BACK, message=message)
        transitions = (Transition(ROLLED_BACK, message, warning=True),)
    status = _rollout_status(spec, state, previous, generation, now, rejection)
    return Decision(status, transitions)


def _this_rollout(spec: Spec, previous: Status) -> RolloutState | None:
    """The rollout state in ``previous`` if it is about this very spec, else None."""
    state = previous.rollout
    if (
        not spec.steps
        or state is None
        or state.key != spec.rollout_key
        or state.step > len(spec.steps)
    ):
        return None
    return state


def _rollout_status(
    spec: Spec,
    state: RolloutState,
    previous: Status,
    generation: int,
    now: float,
    rejection: Problem | None = None,
) -> Status:
    """The status of ``state``. A ``rejection`` (the registry still rejects the candidate) is
    what the Degraded condition of a RolledBack rollout reports, instead of a failed gate."""
    assert spec.candidate is not None
    steps = len(spec.steps)
    if state.outcome == PROMOTED:
        split = Split(spec.candidate)  # the candidate answers for everyone: no shadow left
        conditions = _conditions(
            previous,
            now,
            ready=("True", PROMOTED, f"{spec.candidate} scores every customer"),
            progressing=(
                "False",
                PROMOTED,
                f"{state.message}; make it permanent with stableVersion: {spec.candidate} "
                "and no candidateVersion",
            ),
            degraded=("False", "AsExpected", ""),
        )
        return Status(PROMOTED, generation, split, state, conditions)
    if state.outcome in (ROLLED_BACK, PAUSED):
        if state.outcome == ROLLED_BACK:
            split = Split(spec.stable, mode=spec.mode)
            ready = f"rolled back: {spec.stable} scores every customer"
        else:
            split = Split(spec.stable, spec.candidate, spec.steps[state.step - 1].share, spec.mode)
            ready = f"paused: {_describe(split)}"
        degraded = (
            ("True", rejection.reason, rejection.message)
            if rejection is not None
            else ("True", "GateFailed", state.message)
        )
        conditions = _conditions(
            previous,
            now,
            ready=("True", state.outcome, ready),
            progressing=("False", state.outcome, state.message),
            degraded=degraded,
        )
        return Status(state.outcome, generation, split, state, conditions)

    step = spec.steps[state.step - 1]
    split = Split(spec.stable, spec.candidate, step.share, spec.mode)
    ends = state.step_started_at + step.duration_seconds
    if now < ends:
        progressing = (
            "StepRunning",
            f"step {state.step} of {steps} runs until {format_time(ends)}",
        )
    else:
        waiting = (state.last_gate_check or {}).get("message") or "judging the gates"
        progressing = ("WaitingForGates", f"step {state.step} of {steps}: {waiting}")
    conditions = _conditions(
        previous,
        now,
        ready=("True", "RollingOut", f"step {state.step} of {steps}: {_describe(split)}"),
        progressing=("True", *progressing),
        degraded=("False", "AsExpected", ""),
    )
    return Status(PROGRESSING, generation, split, state, conditions)


def _settled(
    previous: Status,
    generation: int,
    now: float,
    split: Split,
    *,
    ready: str,
    progressing: tuple[str, str],
) -> Decision:
    conditions = _conditions(
        previous,
        now,
        ready=("True", SERVING, ready),
        progressing=("False", *progressing),
        degraded=("False", "AsExpected", ""),
    )
    transitions: tuple[Transition, ...] = ()
    if previous.split != split:
        transitions = (Transition("RoutingChanged", ready),)
    return Decision(Status(SERVING, generation, split, None, conditions), transitions)


def _degraded(previous: Status, generation: int, now: float, problem: Problem) -> Decision:
    kept = "the published routing is left as it was"
    conditions = _conditions(
        previous,
        now,
        ready=("False", problem.reason, f"{problem.message}; {kept}"),
        progressing=("False", problem.reason, "nothing moves until this is fixed"),
        degraded=("True", problem.reason, problem.message),
    )
    status = replace(
        previous, phase=DEGRADED, observed_generation=generation, conditions=conditions
    )
    transitions: tuple[Transition, ...] = ()
    before = previous.condition(DEGRADED_CONDITION)
    if before is None or before.message != problem.message:
        transitions = (Transition(problem.reason, problem.message, warning=True),)
    return Decision(status, transitions)


def _conditions(
    previous: Status,
    now: float,
    *,
    ready: tuple[str, str, str],
    progressing: tuple[str, str, str],
    degraded: tuple[str, str, str],
) -> tuple[Condition, ...]:
    """The three conditions; a condition's lastTransitionTime moves only when its status does."""
    result = []
    for kind, (state, reason, message) in (
        (READY, ready),
        (PROGRESSING, progressing),
        (DEGRADED_CONDITION, degraded),
    ):
        before = previous.condition(kind)
        since = (
            before.last_transition_time
            if before is not None and before.status == state and before.last_transition_time
            else format_time(now)
        )
        result.append(Condition(kind, state, reason, message, since))
    return tuple(result)


def _describe(split: Split) -> str:
    if split.candidate is None or not split.share:
        return f"{split.stable} scores every customer"
    if split.mode == "shadow":
        return (
            f"{split.stable} answers for every customer, {split.candidate} shadow-scores "
            f"{split.share}% of them"
        )
    return f"{split.candidate} scores {split.share}% of customers, {split.stable} the rest"


def _steps(spec: Spec) -> str:
    return ", ".join(f"{s.share}% for {s.duration_seconds}s" for s in spec.steps)
