"""The shell of a SidecarSet: read the cluster, update pods in place, write the status, say who is next.

One call of :meth:`SidecarSetReconciler.reconcile` is one pass of a
SidecarSet's loop. Rollouts take sidecar changes in their own loops (the
effective template); this pass only reports on them, and names the Rollouts
whose turn has come so the kopf layer can wake them at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from operators.api.base import API_VERSION, describe_validation_error
from operators.api.sidecarset import KIND, Conflict, SidecarSetSpec, SidecarSetStatus
from operators.foundation.clock import utc_now
from operators.foundation.cluster import Cluster, KubeError, object_path
from operators.foundation.conditions import merge_conditions
from operators.foundation.events import post_event_or_log
from operators.foundation.keys import ObjectKey
from operators.foundation.status import ReadStatus, read_status, write_status
from operators.sidecarset.facts import PodFacts, RolloutFacts, pod_active, pod_facts
from operators.sidecarset.fleet import (
    SidecarSetObject,
    list_sidecarsets,
    namespace_labels,
    parse_sidecarset,
    read_rollouts,
)
from operators.sidecarset.inject import Sidecar, inject, sidecar_from_spec
from operators.sidecarset.inplace import image_patch
from operators.sidecarset.selection import managed_by_sluice, matches, namespace_matches, selector_query
from operators.sidecarset.status import Observation, sidecarset_status
from operators.sidecarset.upgrade import plan_pods, plan_rollouts

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
# While pods are being updated in place, look again this soon (pod events wake the loop sooner).
IN_PLACE_POLL_SECONDS = 2.0


def sidecarset_key(name: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, "", name)


@dataclass
class Pass:
    """What a pass asks of the kopf layer: when to look again (None: gone), and which Rollouts to wake."""

    requeue_after: float | None
    wake: list[tuple[str, str]] = field(default_factory=list)


class SidecarSetReconciler:
    def __init__(self, cluster: Cluster, clock: Callable[[], datetime] = utc_now) -> None:
        self.cluster = cluster
        self.clock = clock

    def reconcile(self, name: str) -> Pass:
        """One pass. A write refused with 409 raises: the loop tries again soon (`reconcile_loop`)."""
        body = self.cluster.get(sidecarset_key(name))
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return Pass(None)
        read = read_status(SidecarSetStatus, body)
        if read.repaired:
            self._event(body, "StatusRepaired", read.repair_message(KIND), self.clock())
        previous = read.status
        try:
            sidecarset = parse_sidecarset(body)
        except ValidationError as error:
            self._report_invalid(body, read, f"invalid SidecarSet: {describe_validation_error(error)}")
            return Pass(RESYNC_SECONDS)
        spec = sidecarset.spec
        sidecar = sidecar_from_spec(name, spec)
        labels_by_namespace = namespace_labels(self.cluster)
        fleet = read_rollouts(self.cluster, labels_by_namespace)
        rollout_plan = plan_rollouts(name, spec, sidecar.revision, fleet)
        pods = self._matched_pods(spec, labels_by_namespace)
        facts = [pod_facts(pod, name) for pod in pods]
        pod_plan = plan_pods(name, spec, sidecar.revision, sidecar.image_free, facts)
        patched = self._update_in_place(pod_plan.patch, pods, sidecar)
        conflicts = [
            *rollout_conflicts(sidecar, rollout_plan.matched, list_sidecarsets(self.cluster)),
            *pod_conflicts(sidecar, pods),
        ]
        observation = Observation(
            generation=sidecarset.generation,
            revision=sidecar.revision,
            rollouts=rollout_plan,
            pods=facts,
            pod_plan=pod_plan,
            conflicts=conflicts,
        )
        now = self.clock()
        status = sidecarset_status(observation, previous.conditions, now)
        self._announce(body, previous, status, now)
        write_status(self.cluster, sidecarset_key(name), read, status)
        busy = patched or pod_plan.unavailable or any(p.restarting for p in facts)
        waiting = sorted(rollout_plan.chosen)
        return Pass(
            IN_PLACE_POLL_SECONDS if busy else RESYNC_SECONDS,
            wake=[(key.split("/", 1)[0], key.split("/", 1)[1]) for key in waiting],
        )

    # ---- reading ---------------------------------------------------------------------------------

    def _matched_pods(
        self, spec: SidecarSetSpec, labels_by_namespace: Mapping[str, Mapping[str, str]]
    ) -> list[dict[str, Any]]:
        """Running pods outside Sluice that the SidecarSet matches (the API server filters by labels)."""
        pods = self.cluster.list_objects("v1", "Pod", None, selector_query(spec.selector))
        return [
            pod
            for pod in pods
            if pod_active(pod)
            and not managed_by_sluice(pod["metadata"].get("labels") or {})
            and namespace_matches(
                spec,
                pod["metadata"].get("namespace", ""),
                labels_by_namespace.get(pod["metadata"].get("namespace", ""), {}),
            )
        ]

    # ---- acting ----------------------------------------------------------------------------------

    def _update_in_place(
        self, chosen: Sequence[PodFacts], pods: Sequence[Mapping[str, Any]], sidecar: Sidecar
    ) -> int:
        by_key = {f"{p['metadata'].get('namespace')}/{p['metadata'].get('name')}": p for p in pods}
        patched = 0
        for facts in chosen:
            pod = by_key[facts.key]
            ops = image_patch(pod, sidecar)
            if not ops:
                continue
            key = ObjectKey("v1", "Pod", facts.namespace, facts.name)
            try:
                self.cluster.request("PATCH", object_path(key), ops, "application/json-patch+json")
                patched += 1
            except KubeError as error:
                # Changed or gone since it was read (the test op failed): the next pass reads it again.
                logger.info("in-place update of pod %s skipped: %s", facts.key, error)
        return patched

    def _announce(
        self, body: Mapping[str, Any], before: SidecarSetStatus, after: SidecarSetStatus, now: datetime
    ) -> None:
        """One Event per new rollback and per new conflict, not one per pass."""
        seen = {(r.rollout, r.revision) for r in before.rolled_back}
        for rolled in after.rolled_back:
            if (rolled.rollout, rolled.revision) not in seen:
                self._event(
                    body,
                    "RolledBack",
                    f"revision {rolled.revision} was rolled back on Rollout "
                    f"{rolled.rollout}; it goes no further",
                    now,
                )
        known = {(c.target, c.message) for c in before.conflicts}
        for conflict in after.conflicts:
            if (conflict.target, conflict.message) not in known:
                self._event(body, "InjectionConflict", f"{conflict.target}: {conflict.message}", now)

    def _report_invalid(
        self, body: Mapping[str, Any], read: ReadStatus[SidecarSetStatus], message: str
    ) -> None:
        now = self.clock()
        before = read.status
        generation = int(body["metadata"].get("generation") or 0)
        after = before.model_copy(deep=True)
        after.observed_generation = generation
        after.message = message
        wanted = {"Ready": False, "Reconciling": False, "Stalled": True}
        after.conditions = merge_conditions(
            before.conditions, wanted, "InvalidSpec", message, generation, now
        )
        if before.message != message:
            self._event(body, "InvalidSpec", message, now)
        write_status(self.cluster, sidecarset_key(body["metadata"]["name"]), read, after)

    def _event(self, body: Mapping[str, Any], reason: str, message: str, now: datetime) -> None:
        post_event_or_log(self.cluster, body, "Warning", reason, message, now)


def rollout_conflicts(
    sidecar: Sidecar, rollouts: Sequence[RolloutFacts], sidecarsets: Sequence[SidecarSetObject]
) -> list[Conflict]:
    """Matched Rollouts the current revision cannot go into (beside every other matching SidecarSet)."""
    conflicts = []
    for rollout in rollouts:
        labels = (rollout.template.get("metadata") or {}).get("labels") or {}
        others = [
            sidecar_from_spec(s.name, s.spec)
            for s in sidecarsets
            if s.name != sidecar.name and matches(s.spec, labels, rollout.namespace, rollout.namespace_labels)
        ]
        problem = inject(rollout.template, [*others, sidecar]).conflicts.get(sidecar.name)
        if problem:
            conflicts.append(Conflict(target=f"Rollout {rollout.key}", message=problem))
    return conflicts


def pod_conflicts(sidecar: Sidecar, pods: Sequence[Mapping[str, Any]]) -> list[Conflict]:
    """Matched pods without the sidecars because they would collide with the pod's own."""
    conflicts = []
    for pod in pods:
        problem = inject(pod, [sidecar]).conflicts.get(sidecar.name)
        if problem:
            meta = pod["metadata"]
            conflicts.append(
                Conflict(target=f"Pod {meta.get('namespace')}/{meta.get('name')}", message=problem)
            )
    return conflicts
