"""An Application's health, from its components' Rollouts (pure).

What GitOps tools read: per component its phase, revision, canary weight,
readiness and message; overall `phase` (Running, Progressing, Degraded); and
kstatus conditions: `Reconciling` while any component is releasing, `Ready`
when every component is healthy at the generation it was last given, and
`Stalled` when a release was rolled back or cannot go on.

A Rollout that has not yet observed its latest spec counts as `Pending`
whatever its (stale) status says: right after a new image is committed, the
Application must not look Ready on the strength of the old release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from operators.api.application import (
    ApplicationPhase,
    ApplicationStatus,
    ComponentPhase,
    ComponentStatus,
)
from operators.api.rollout import RolloutStatus
from operators.foundation.conditions import merge_conditions

RELEASING = frozenset(
    {ComponentPhase.PENDING, ComponentPhase.INITIALIZING, ComponentPhase.PROGRESSING, ComponentPhase.PAUSED}
)
STUCK = frozenset({ComponentPhase.DEGRADED, ComponentPhase.ABORTED, ComponentPhase.FAILED})
# The condition reason a stuck component gives the Application, unless its outcome names one.
STUCK_REASONS = {ComponentPhase.DEGRADED: "RolledBack", ComponentPhase.ABORTED: "Aborted"}


@dataclass(frozen=True)
class ComponentOutcome:
    """What one pass learnt about a component: its live Rollout, or why it has none we can use."""

    name: str
    rollout: Mapping[str, Any] | None = None
    error: str = ""
    reason: str = ""  # the condition reason for `error`, e.g. InvalidComponent, RolloutConflict


def component_status(outcome: ComponentOutcome) -> ComponentStatus:
    name = outcome.name
    if outcome.error:
        return ComponentStatus(name=name, phase=ComponentPhase.FAILED, message=outcome.error)
    if outcome.rollout is None:
        return ComponentStatus(
            name=name, phase=ComponentPhase.PENDING, message=f"Rollout {name} not created yet"
        )
    generation = int((outcome.rollout.get("metadata") or {}).get("generation") or 0)
    try:
        status = RolloutStatus.model_validate(outcome.rollout.get("status") or {})
    except ValidationError:  # written by another version of the operator: wait for ours
        status = RolloutStatus()
    revision = status.canary_revision or status.stable_revision
    if status.phase is None or (status.observed_generation or 0) < generation:
        return ComponentStatus(
            name=name,
            phase=ComponentPhase.PENDING,
            revision=revision,
            canary_weight=status.canary_weight,
            message=f"waiting for Rollout {name} to take generation {generation}",
        )
    phase = ComponentPhase(status.phase.value)
    if phase not in STUCK and _condition_true(status, "Stalled"):
        phase = ComponentPhase.FAILED  # blocked (invalid spec, a conflict) while its phase is older
    return ComponentStatus(
        name=name,
        phase=phase,
        revision=revision,
        canary_weight=status.canary_weight,
        ready=phase == ComponentPhase.HEALTHY,
        message=status.message,
    )


def _condition_true(status: RolloutStatus, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in status.conditions)


def application_status(
    previous: ApplicationStatus, generation: int, outcomes: Sequence[ComponentOutcome], now: datetime
) -> ApplicationStatus:
    components = [component_status(outcome) for outcome in outcomes]
    reasons = {outcome.name: outcome.reason for outcome in outcomes}
    stuck = [c for c in components if c.phase in STUCK]
    releasing = [c for c in components if c.phase in RELEASING]
    ready = sum(1 for c in components if c.ready)
    if stuck:
        phase = ApplicationPhase.DEGRADED
        first = stuck[0]
        reason = reasons.get(first.name) or STUCK_REASONS.get(first.phase, "ComponentFailed")
        message = _describe(stuck)
    elif releasing:
        phase = ApplicationPhase.PROGRESSING
        paused = all(c.phase == ComponentPhase.PAUSED for c in releasing)
        reason = "Paused" if paused else "Progressing"
        message = _describe(releasing)
    else:
        phase, reason = ApplicationPhase.RUNNING, "Running"
        message = f"{ready}/{len(components)} components healthy"
    wanted = {
        "Ready": phase == ApplicationPhase.RUNNING,
        "Reconciling": bool(releasing),
        "Stalled": bool(stuck),
    }
    return ApplicationStatus(
        observed_generation=generation,
        phase=phase,
        component_count=len(components),
        ready_components=f"{ready}/{len(components)}",
        components=components,
        conditions=merge_conditions(previous.conditions, wanted, reason, message, generation, now),
        message=message,
    )


def invalid_status(
    previous: ApplicationStatus, generation: int, message: str, now: datetime
) -> ApplicationStatus:
    """An Application whose spec cannot be used: say why, and leave its components' last status."""
    wanted = {"Ready": False, "Reconciling": False, "Stalled": True}
    status = previous.model_copy(deep=True)
    status.observed_generation = generation
    status.phase = ApplicationPhase.DEGRADED
    status.message = message
    status.conditions = merge_conditions(previous.conditions, wanted, "InvalidSpec", message, generation, now)
    return status


def _describe(components: Sequence[ComponentStatus]) -> str:
    """``web Degraded: rolled back revision ...; worker Paused: ...``: each named, with its own words."""
    return "; ".join(
        f"{c.name} {c.phase.value}" + (f": {c.message}" if c.message else "") for c in components
    )
