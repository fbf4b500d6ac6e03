"""Who takes a SidecarSet's new revision now: Rollouts (as a release) and other pods (in place).

Pure and level-triggered: every decision is a function of the SidecarSet and
of what the cluster shows (Rollouts' phases and the sidecar revisions their
stable and canary templates record; pods' records and readiness). Every
Rollout computes the same fleet-wide plan, so they agree on who goes next
without talking to each other: the waiting Rollouts are ordered by
namespace/name and the first ones get the free slots. A Rollout leaves the
waiting list only by starting the release or finishing it, so a plan made
from a slightly older view never lets more than maxUnavailable start.

Rules for Rollouts, in order (the first that applies decides):

1. no stable Deployment yet: the first deployment takes the current revision
   (unless injection is paused);
2. the stable already runs the current revision: keep it;
3. injection paused and the Rollout never had this SidecarSet: leave it out;
4. releasing it already: go on (unless a rollback elsewhere halted it; then
   the release is cancelled and the Rollout goes back to its stable);
5. updateStrategy.paused, or updateStrategy.selector does not select it: keep
   the old (paused freezes: releases under way go on, no new one starts);
6. its release of this revision was rolled back: stay so (Degraded, like any
   rolled-back release) unless its own template changed, then release that
   with the old sidecar;
7. a rollback of this revision anywhere halts it: everyone else keeps the old;
8. NotUpdate: the new revision rides along with a release of the app only;
9. RollingUpdate: among the first free slots after partition and
   maxUnavailable: take it; else keep the old and wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from operators.api.sidecarset import SidecarSetSpec, UpdateType, scaled
from operators.sidecarset.facts import ROLLED_BACK_PHASES, PodFacts, RolloutFacts
from operators.sidecarset.selection import matches, selected_for_update


class Choice(StrEnum):
    CURRENT = "current"  # the SidecarSet's revision now
    KEEP = "keep"  # whatever the stable runs (the old revision, or nothing)


@dataclass(frozen=True)
class Decision:
    choice: Choice
    reason: str


@dataclass(frozen=True)
class RolloutPlan:
    """The fleet-wide view for one SidecarSet revision."""

    name: str
    revision: str
    spec: SidecarSetSpec
    matched: tuple[RolloutFacts, ...]
    chosen: frozenset[str]  # keys of waiting Rollouts that may start the release now
    halted_by: tuple[str, ...]  # keys of Rollouts that rolled this revision back
    budget_note: str

    def releasing(self) -> list[RolloutFacts]:
        return [r for r in self.matched if r.releasing(self.name, self.revision)]

    def updated(self) -> list[RolloutFacts]:
        return [r for r in self.matched if r.updated(self.name, self.revision)]


def rollout_matches(spec: SidecarSetSpec, rollout: RolloutFacts) -> bool:
    return matches(spec, rollout.labels, rollout.namespace, rollout.namespace_labels)


def plan_rollouts(
    name: str, spec: SidecarSetSpec, revision: str, fleet: Sequence[RolloutFacts]
) -> RolloutPlan:
    matched = tuple(
        sorted((r for r in fleet if rollout_matches(spec, r)), key=lambda r: (r.namespace, r.name))
    )
    halted_by = tuple(r.key for r in matched if r.rolled_back(name, revision))
    strategy = spec.update_strategy
    # Only Rollouts already deployed take part: a first deployment is not a release.
    selected = [r for r in matched if r.has_stable and selected_for_update(spec, r.labels)]
    updated = [r for r in selected if r.updated(name, revision)]
    releasing = [r for r in selected if r.releasing(name, revision)]
    waiting = [r for r in selected if _may_start(r, name, revision)]
    total = len(selected)
    max_unavailable = max(1, scaled(strategy.max_unavailable, total, round_up=False))
    wanted = total - min(total, scaled(strategy.partition, total, round_up=True))
    budget = max(0, min(max_unavailable - len(releasing), wanted - len(updated) - len(releasing)))
    note = (
        f"{len(releasing)} of maxUnavailable {max_unavailable} Rollout(s) releasing revision {revision}, "
        f"{len(updated)} updated, partition keeps {total - wanted} on the old revision"
    )
    chosen = frozenset(r.key for r in waiting[:budget])
    return RolloutPlan(name, revision, spec, matched, chosen, halted_by, note)


def _may_start(rollout: RolloutFacts, name: str, revision: str) -> bool:
    """Waiting for a slot: not done, not under way, and not held by something a person must resolve."""
    return (
        not rollout.updated(name, revision)
        and not rollout.releasing(name, revision)
        and rollout.phase not in ROLLED_BACK_PHASES
        and not rollout.paused
    )


def needs_plan(name: str, revision: str, rollout: RolloutFacts) -> bool:
    """Whether deciding for `rollout` needs the fleet-wide plan (rules 1 and 2 do not)."""
    return rollout.has_stable and not rollout.updated(name, revision)


def decide(
    name: str,
    spec: SidecarSetSpec,
    revision: str,
    rollout: RolloutFacts,
    plan: RolloutPlan | None,
    *,
    app_release: bool,
) -> Decision:
    """Which revision of the SidecarSet `rollout`'s effective template carries (see the module rules).

    `plan` is needed whenever :func:`needs_plan` says so. `app_release`: the
    Rollout's own template differs from its stable one, i.e. it releases (or
    is about to release) something besides this sidecar.
    """
    strategy = spec.update_strategy
    if not rollout.has_stable:
        if spec.injection_strategy.paused:
            return Decision(Choice.KEEP, "injection paused")
        return Decision(Choice.CURRENT, "first deployment")
    if rollout.updated(name, revision):
        return Decision(Choice.CURRENT, "up to date")
    if plan is None:
        raise ValueError(f"deciding SidecarSet {name} for Rollout {rollout.key} needs the fleet-wide plan")
    if spec.injection_strategy.paused and name not in rollout.stable:
        return Decision(Choice.KEEP, "injection paused")
    if rollout.releasing(name, revision) and not plan.halted_by:
        return Decision(Choice.CURRENT, "releasing")
    if strategy.paused:
        return Decision(Choice.KEEP, "updates paused")
    if not selected_for_update(spec, rollout.labels):
        return Decision(Choice.KEEP, "not selected by updateStrategy.selector")
    if rollout.rolled_back(name, revision):
        if app_release:
            return Decision(
                Choice.KEEP, f"revision {revision} was rolled back here; the new release keeps the old"
            )
        return Decision(Choice.CURRENT, f"release of revision {revision} rolled back")
    if plan.halted_by:
        return Decision(
            Choice.KEEP, f"revision {revision} halted: rolled back on {', '.join(plan.halted_by)}"
        )
    if strategy.type == UpdateType.NOT_UPDATE:
        if app_release:
            return Decision(Choice.CURRENT, "NotUpdate: goes with the app's release")
        return Decision(Choice.KEEP, "NotUpdate: waits for the app's next release")
    if rollout.key in plan.chosen:
        return Decision(Choice.CURRENT, "its turn")
    return Decision(Choice.KEEP, f"waiting: {plan.budget_note}")


# ---- pods outside Sluice: in-place image updates -------------------------------------------------


@dataclass(frozen=True)
class PodPlan:
    patch: tuple[PodFacts, ...]  # pods whose sidecar images are replaced now
    updated: int
    # Pods on an older revision that differs in more than images: they get it when recreated.
    need_recreate: int
    unavailable: int
    note: str


def plan_pods(
    name: str, spec: SidecarSetSpec, revision: str, image_free: str, pods: Sequence[PodFacts]
) -> PodPlan:
    """Which pods to update in place this round.

    Only pods that carry an older revision with the same image-free revision
    (an image-only change) are candidates. Unavailable means not ready, or a
    sidecar still restarting into its new image; not-ready pods go first (they
    are unavailable already), then by namespace/name.
    """
    strategy = spec.update_strategy
    carrying = [p for p in pods if p.record is not None and selected_for_update(spec, p.labels)]
    updated = [p for p in carrying if p.record is not None and p.record.revision == revision]
    stale = [p for p in carrying if p.record is not None and p.record.revision != revision]
    in_place = [p for p in stale if p.record is not None and p.record.image_free == image_free]
    unavailable = sum(1 for p in carrying if not p.ready or p.restarting)
    total = len(carrying)
    max_unavailable = max(1, scaled(strategy.max_unavailable, total, round_up=False))
    wanted = total - min(total, scaled(strategy.partition, total, round_up=True))
    frozen = strategy.paused or strategy.type == UpdateType.NOT_UPDATE
    budget = 0 if frozen else max(0, min(max_unavailable - unavailable, wanted - len(updated)))
    order = sorted(in_place, key=lambda p: (p.ready, p.namespace, p.name))
    if frozen:
        note = "updates paused" if strategy.paused else "NotUpdate: running pods keep their sidecars"
    else:
        note = f"{unavailable} of maxUnavailable {max_unavailable} pod(s) unavailable"
    return PodPlan(
        patch=tuple(order[:budget]),
        updated=len(updated),
        need_recreate=len(stale) - len(in_place),
        unavailable=unavailable,
        note=note,
    )
