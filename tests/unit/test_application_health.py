"""An Application's health from its Rollouts: per component, overall phase, kstatus conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operators.api.application import ApplicationStatus, ComponentPhase
from operators.api.rollout import RolloutStatus
from operators.application.health import (
    ComponentOutcome,
    application_status,
    component_status,
    invalid_status,
)
from operators.rollout.engine import blocked_status

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def rollout(
    phase: str | None,
    *,
    generation: int = 2,
    observed: int | None = 2,
    stalled: bool = False,
    reason: str = "ObjectConflict",
    **status: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "web", "generation": generation}, "status": dict(status)}
    if phase is not None:
        body["status"]["phase"] = phase
    if observed is not None:
        body["status"]["observedGeneration"] = observed
    if stalled:
        body["status"]["conditions"] = [{"type": "Stalled", "status": "True", "reason": reason}]
    return body


def outcome(phase: str | None = "Healthy", name: str = "web", **kwargs: Any) -> ComponentOutcome:
    return ComponentOutcome(name, rollout=rollout(phase, **kwargs))


def conditions(status: ApplicationStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions}


# ---- one component ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "phase", "ready"),
    [
        (outcome("Healthy"), ComponentPhase.HEALTHY, True),
        (outcome("Progressing"), ComponentPhase.PROGRESSING, False),
        (outcome("Paused"), ComponentPhase.PAUSED, False),
        (outcome("Initializing"), ComponentPhase.INITIALIZING, False),
        (outcome("Degraded"), ComponentPhase.DEGRADED, False),
        (outcome("Aborted"), ComponentPhase.ABORTED, False),
        # The Rollout has not looked at its new spec yet: its Healthy is about the old one.
        (outcome("Healthy", generation=3, observed=2), ComponentPhase.PENDING, False),
        (outcome(None, observed=None), ComponentPhase.PENDING, False),
        (ComponentOutcome("web"), ComponentPhase.PENDING, False),
        # Blocked (a conflict, a bad spec) while its phase still says how it was.
        (outcome("Healthy", stalled=True), ComponentPhase.FAILED, False),
        (outcome("Degraded", stalled=True), ComponentPhase.DEGRADED, False),
        (ComponentOutcome("web", error='component "web": boom'), ComponentPhase.FAILED, False),
    ],
    ids=[
        "healthy",
        "progressing",
        "paused",
        "initializing",
        "degraded",
        "aborted",
        "stale",
        "no-status",
        "no-rollout",
        "stalled",
        "stalled-degraded",
        "error",
    ],
)
def test_component_status(given: ComponentOutcome, phase: ComponentPhase, ready: bool) -> None:
    status = component_status(given)
    assert (status.name, status.phase, status.ready) == ("web", phase, ready)


def test_component_status_carries_revision_weight_and_message() -> None:
    releasing = component_status(
        outcome(
            "Progressing", stableRevision="aaa", canaryRevision="bbb", canaryWeight=20, message="step 1/3"
        )
    )
    assert (releasing.revision, releasing.canary_weight, releasing.message) == ("bbb", 20, "step 1/3")
    settled = component_status(outcome("Healthy", stableRevision="aaa"))
    assert (settled.revision, settled.canary_weight) == ("aaa", 0)


def test_a_stale_rollout_says_what_it_waits_for() -> None:
    status = component_status(outcome("Healthy", generation=3, observed=2))
    assert status.message == "waiting for Rollout web to take generation 3"


# ---- the Application ----------------------------------------------------------------------------------

HEALTHY_WORKER = outcome("Healthy", name="worker")


@pytest.mark.parametrize(
    ("outcomes", "phase", "ready", "reconciling", "stalled", "reason"),
    [
        ([outcome("Healthy"), HEALTHY_WORKER], "Running", "True", "False", "False", "Running"),
        ([], "Running", "True", "False", "False", "Running"),
        ([outcome("Progressing"), HEALTHY_WORKER], "Progressing", "False", "True", "False", "Progressing"),
        ([outcome("Paused"), HEALTHY_WORKER], "Progressing", "False", "True", "False", "Paused"),
        (
            [outcome("Healthy", generation=3), HEALTHY_WORKER],
            "Progressing",
            "False",
            "True",
            "False",
            "Progressing",
        ),
        ([outcome("Degraded"), HEALTHY_WORKER], "Degraded", "False", "False", "True", "RolledBack"),
        ([outcome("Aborted"), HEALTHY_WORKER], "Degraded", "False", "False", "True", "Aborted"),
        # Rolled back here, still releasing there: both conditions say so; the phase says the worse.
        (
            [outcome("Degraded"), outcome("Progressing", name="worker")],
            "Degraded",
            "False",
            "True",
            "True",
            "RolledBack",
        ),
        (
            [ComponentOutcome("web", error="x", reason="RolloutConflict"), HEALTHY_WORKER],
            "Degraded",
            "False",
            "False",
            "True",
            "RolloutConflict",
        ),
        ([outcome("Healthy", stalled=True)], "Degraded", "False", "False", "True", "ObjectConflict"),
    ],
    ids=[
        "all-healthy",
        "no-components",
        "releasing",
        "paused",
        "stale",
        "rolled-back",
        "aborted",
        "rolled-back-and-releasing",
        "conflict",
        "stalled-rollout",
    ],
)
def test_application_status(
    outcomes: list[ComponentOutcome], phase: str, ready: str, reconciling: str, stalled: str, reason: str
) -> None:
    status = application_status(ApplicationStatus(), 7, outcomes, NOW)
    assert status.phase == phase
    assert conditions(status) == {"Ready": ready, "Reconciling": reconciling, "Stalled": stalled}
    assert {c.reason for c in status.conditions} == {reason}
    assert status.observed_generation == 7
    assert all(c.observed_generation == 7 for c in status.conditions)


def blocked(reason: str, name: str = "web") -> ComponentOutcome:
    """A new Rollout the Rollout operator blocked (never released): its status as the engine writes it."""
    status = blocked_status(RolloutStatus(), 2, reason, f"{reason}: why", NOW)
    body = {"metadata": {"name": name, "generation": 2}, "status": status.to_api()}
    return ComponentOutcome(name, rollout=body)


@pytest.mark.parametrize(
    ("outcomes", "reason"),
    [
        # A Rollout that did roll back says so; so does the Application.
        ([outcome("Degraded", stalled=True, reason="RolledBack")], "RolledBack"),
        ([outcome("Aborted", stalled=True, reason="Aborted")], "Aborted"),
        # Written by an operator that set no Stalled reason: the phase is all there is to go by.
        ([outcome("Degraded")], "RolledBack"),
        # Blocked before it ever released: its phase says Degraded, but nothing was rolled back
        # (issue 9: these read RolledBack).
        ([blocked("InvalidSpec")], "InvalidSpec"),
        ([blocked("ObjectConflict")], "ObjectConflict"),
        ([blocked("ProviderMissing")], "ProviderMissing"),
        ([blocked("ApplyFailed")], "ApplyFailed"),
        # Blocked after an earlier rollback: what stops it now is the block.
        ([outcome("Degraded", stalled=True, reason="InvalidSpec")], "InvalidSpec"),
        ([outcome("Healthy", stalled=True, reason="InvalidSpec")], "InvalidSpec"),
        # No usable Rollout: the reconciler's reason.
        ([ComponentOutcome("web", error="x", reason="InvalidComponent")], "InvalidComponent"),
        ([ComponentOutcome("web", error="x", reason="RolloutConflict")], "RolloutConflict"),
        ([ComponentOutcome("web", error="x", reason="ApplyFailed")], "ApplyFailed"),
        ([ComponentOutcome("web", error="x")], "ComponentFailed"),
        # The first stuck component, in spec order, gives the reason.
        (
            [HEALTHY_WORKER, blocked("ObjectConflict", "cn-canary"), outcome("Degraded", name="cn")],
            "ObjectConflict",
        ),
    ],
    ids=[
        "rolled-back",
        "aborted",
        "rolled-back-without-reason",
        "blocked-invalid-spec",
        "blocked-object-conflict",
        "blocked-provider-missing",
        "blocked-apply-failed",
        "blocked-after-rollback",
        "blocked-while-healthy",
        "invalid-component",
        "rollout-conflict",
        "apply-failed",
        "error-without-reason",
        "first-stuck-decides",
    ],
)
def test_stalled_reason_says_what_happened(outcomes: list[ComponentOutcome], reason: str) -> None:
    status = application_status(ApplicationStatus(), 2, outcomes, NOW)
    assert conditions(status)["Stalled"] == "True"
    assert {c.reason for c in status.conditions} == {reason}


def test_counts_and_messages_name_the_components() -> None:
    status = application_status(
        ApplicationStatus(),
        1,
        [outcome("Degraded", message="rolled back revision bbb: error-rate=0.5 > max 0.1"), HEALTHY_WORKER],
        NOW,
    )
    assert (status.component_count, status.ready_components) == (2, "1/2")
    assert status.message == "web Degraded: rolled back revision bbb: error-rate=0.5 > max 0.1"
    assert [c.name for c in status.components] == ["web", "worker"]
    running = application_status(ApplicationStatus(), 1, [outcome("Healthy"), HEALTHY_WORKER], NOW)
    assert running.message == "2/2 components healthy"


def test_transition_times_move_only_when_a_condition_flips() -> None:
    first = application_status(ApplicationStatus(), 1, [outcome("Progressing")], NOW)
    later = NOW + timedelta(minutes=1)
    same = application_status(first, 1, [outcome("Progressing", message="step 2")], later)

    def times(status: ApplicationStatus) -> list[str | None]:
        return [c.last_transition_time for c in status.conditions]

    assert times(same) == times(first)
    done = application_status(same, 1, [outcome("Healthy")], later)
    flipped = {c.type: c.last_transition_time for c in done.conditions}
    assert flipped["Ready"] == flipped["Reconciling"] == "2026-01-02T03:05:05Z"
    assert flipped["Stalled"] == "2026-01-02T03:04:05Z"


def test_invalid_spec_is_stalled_and_keeps_the_components() -> None:
    before = application_status(ApplicationStatus(), 1, [outcome("Healthy")], NOW)
    status = invalid_status(before, 2, "invalid Application: spec.components.0.image: Field required", NOW)
    assert status.phase == "Degraded" and status.observed_generation == 2
    assert conditions(status) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    assert {c.reason for c in status.conditions} == {"InvalidSpec"}
    assert [c.name for c in status.components] == ["web"]
