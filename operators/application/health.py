"""An Application's health, from its components' Rollouts (pure).

What GitOps tools read: per component its phase, revision, canary weight,
readiness and message; overall `phase` (Running, Progressing, Degraded); and
kstatus conditions: `Reconciling` while any component is releasing, `Ready`
when every component is healthy at the generation it was last given, and
`Stalled` when a release was rolled back or cannot go on.

`Stalled`'s reason says what happened, never more: `RolledBack` (or `Aborted`) only
when a Rollout did roll back; a Rollout that is blocked gives its own reason
(`InvalidSpec`, `ObjectConflict`, `ProviderMissing`, `ApplyFailed`); a component
without a usable Rollout gives the reconciler's (`InvalidComponent`,
`RolloutConflict`, `ApplyFailed`); an invalid Application spec is `InvalidSpec`.

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
# The reason of a Rollout's phase when nothing else says why it is stuck: a Rollout that
# rolled back says so itself in its Stalled condition, but one written by an older operator may not.
STUCK_REASONS = {ComponentPhase.DEGRADED: "RolledBack", ComponentPhase.ABORTED: "Aborted"}
# When not even the phase tells (a Failed component with no reason given).
UNKNOWN_REASON = "ComponentFailed"


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
    status = _rollout_status(outcome.rollout)
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


def _rollout_status(rollout: Mapping[str, Any]) -> RolloutStatus:
    try:
        return RolloutStatus.model_validate(rollout.get("status") or {})
    except ValidationError:  # written by another version of the operator: wait for ours
        return RolloutStatus()


def _condition_true(status: RolloutStatus, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in status.conditions)


def stuck_reason(outcome: ComponentOutcome, component: ComponentStatus) -> str:
    """Why a stuck component is stuck, as a condition reason: from whoever knows best.

    The reconciler's reason when there is no usable Rollout (it could not be rendered or
    applied); else the reason of the Rollout's own Stalled condition (`RolledBack` and
    `Aborted` only if it did roll back, `InvalidSpec` or `ObjectConflict` if it is blocked);
    else, for a Rollout that gives none, what its phase means.
    """
    if outcome.error:
        return outcome.reason or UNKNOWN_REASON
    if outcome.rollout is not None:
        for condition in _rollout_status(outcome.rollout).conditions:
            if condition.type == "Stalled" and condition.status == "True" and condition.reason:
                return condition.reason
    return STUCK_REASONS.get(component.phase, UNKNOWN_REASON)


def application_status(
    previous: ApplicationStatus, generation: int, outcomes: Sequence[ComponentOutcome], now: datetime
) -> ApplicationStatus:
    components = [component_status(outcome) for outcome in outcomes]
    stuck = [(o, c) for o, c in zip(outcomes, components, strict=True) if c.phase in STUCK]
    releasing = [c for c in components if c.phase in RELEASING]
    ready = sum(1 for c in components if c.ready)
    if stuck:
        phase = ApplicationPhase.DEGRADED
        reason = stuck_reason(*stuck[0])
        message = _describe([c for _, c in stuck])
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
