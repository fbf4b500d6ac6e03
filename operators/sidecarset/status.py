"""A SidecarSet's status: counts, rollbacks, conflicts and kstatus conditions (pure).

``Ready`` means nothing is left to do for now, ``Reconciling`` that a release
or an in-place update is under way, ``Stalled`` that a person must act (the
revision was rolled back somewhere, or a sidecar collides with an app).
``InPlaceUpdate`` says whether running pods outside Sluice can take the
current revision by an image change, or keep the old one until recreated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from operators.api.base import Condition
from operators.api.rollout import Phase
from operators.api.sidecarset import Conflict, RolledBack, SidecarSetStatus
from operators.foundation.conditions import merge_conditions
from operators.sidecarset.facts import PodFacts
from operators.sidecarset.upgrade import PodPlan, RolloutPlan

MAX_LISTED = 20  # rolled-back Rollouts and conflicts listed in the status; the counts say the rest


@dataclass(frozen=True)
class Observation:
    """Everything the status is made of, gathered by the shell in one pass."""

    generation: int
    revision: str
    rollouts: RolloutPlan
    pods: Sequence[PodFacts]  # every matched pod outside Sluice
    pod_plan: PodPlan
    conflicts: Sequence[Conflict]


def sidecarset_status(
    observed: Observation, previous: Sequence[Condition], now: datetime
) -> SidecarSetStatus:
    plan, revision = observed.rollouts, observed.revision
    rollouts = plan.matched
    updated_rollouts = plan.updated()
    releasing = plan.releasing()
    healthy = {r.key for r in rollouts if r.phase == Phase.HEALTHY}
    pods = observed.pods
    updated_pods = [p for p in pods if p.record is not None and p.record.revision == revision]
    status = SidecarSetStatus(
        observed_generation=observed.generation,
        revision=revision,
        matched_rollouts=len(rollouts),
        updated_rollouts=len(updated_rollouts),
        ready_rollouts=len(healthy),
        updated_ready_rollouts=sum(1 for r in updated_rollouts if r.key in healthy),
        releasing_rollouts=len(releasing),
        matched_pods=len(pods),
        updated_pods=len(updated_pods),
        ready_pods=sum(1 for p in pods if p.ready),
        updated_ready_pods=sum(1 for p in updated_pods if p.ready),
        rolled_back=[RolledBack(rollout=key, revision=revision) for key in plan.halted_by[:MAX_LISTED]],
        conflicts=list(observed.conflicts[:MAX_LISTED]),
    )
    status.matched = status.matched_rollouts + status.matched_pods
    status.updated = status.updated_rollouts + status.updated_pods
    status.ready = status.ready_rollouts + status.ready_pods

    stalled_reason, stalled_message = _stalled(observed)
    busy = bool(
        releasing or plan.chosen or observed.pod_plan.patch or any(p.restarting for p in updated_pods)
    )
    status.message = stalled_message or _progress_message(status, observed)
    reason = stalled_reason or ("Updating" if busy else "UpToDate")
    wanted = {
        "Ready": not stalled_reason and not busy,
        "Reconciling": busy and not stalled_reason,
        "Stalled": bool(stalled_reason),
    }
    conditions = merge_conditions(previous, wanted, reason, status.message, observed.generation, now)
    conditions += _in_place_condition(observed, previous, now)
    status.conditions = conditions
    return status


def _stalled(observed: Observation) -> tuple[str, str]:
    halted = observed.rollouts.halted_by
    if halted:
        return "RolledBack", (
            f"revision {observed.revision} was rolled back by analysis on Rollout {', '.join(halted)} "
            "and goes no further; fix the SidecarSet (a new revision), or retry with sluice.dev/retry"
        )
    if observed.conflicts:
        first = observed.conflicts[0]
        more = f" (and {len(observed.conflicts) - 1} more)" if len(observed.conflicts) > 1 else ""
        return "InjectionConflict", f"not injected into {first.target}: {first.message}{more}"
    return "", ""


def _progress_message(status: SidecarSetStatus, observed: Observation) -> str:
    text = (
        f"revision {observed.revision}: Rollouts {status.updated_rollouts}/{status.matched_rollouts} updated"
        f" ({status.releasing_rollouts} releasing), pods {status.updated_pods}/{status.matched_pods} updated"
    )
    if observed.pod_plan.need_recreate:
        text += f", {observed.pod_plan.need_recreate} pod(s) get it when recreated"
    return text


def _in_place_condition(
    observed: Observation, previous: Sequence[Condition], now: datetime
) -> list[Condition]:
    recreate = observed.pod_plan.need_recreate
    if recreate:
        reason = "NotImageOnly"
        message = (
            f"{recreate} running pod(s) keep their old sidecar revision until recreated: revision "
            f"{observed.revision} changes more than container images, which only new pods can take"
        )
    else:
        reason, message = "ImageOnly", f"running pods take revision {observed.revision} in place"
    return merge_conditions(
        previous, {"InPlaceUpdate": not recreate}, reason, message, observed.generation, now
    )
