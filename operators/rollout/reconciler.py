"""The imperative shell around the engine: read, decide, apply, report.

One call of :meth:`RolloutReconciler.reconcile` reads the Rollout and every
object it manages, runs analysis when due, asks the pure engine for a plan and
applies it. It is synchronous (the ``kubernetes`` client is), so the kopf
daemon runs it in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from operators.analysis.background import BackgroundChecks
from operators.analysis.check import MetricSources, start_check, validate_metrics
from operators.analysis.templates import QueryContext
from operators.api.base import describe_validation_error
from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, RolloutSpec, RolloutStatus
from operators.foundation.cache import CachedCluster
from operators.foundation.clock import utc_now
from operators.foundation.cluster import Cluster, KubeError, ResourceNotInstalled
from operators.foundation.diff import apply_body, covers
from operators.foundation.events import post_event_or_log
from operators.foundation.keys import ObjectKey, key_of
from operators.foundation.loop import RETRY_AFTER_CONFLICT
from operators.foundation.status import ReadStatus, read_status, write_status
from operators.notifications.notifier import PROBLEM_REASON, Notifier
from operators.rollout import engine
from operators.rollout.adoption import hand_back
from operators.rollout.bluegreen_stages import analyses_of, analysis_of
from operators.rollout.handback import TRAFFIC_KINDS, hand_back_traffic
from operators.rollout.hook_runner import HookRunner, hook_problems
from operators.rollout.inventory import (
    managed_keys,
    rollout_key,
    stable_deployment_key,
    stable_service_key,
    workload_key,
)
from operators.rollout.metric_templates import with_templates
from operators.rollout.notify import notifications_of
from operators.rollout.ownership import CANARY, ROLLOUT_LABEL, STABLE, is_owned_by
from operators.rollout.render import pod_template_revision, service_name
from operators.rollout.revisions import API_VERSION as REVISION_API_VERSION
from operators.rollout.revisions import KIND as REVISION_KIND
from operators.rollout.revisions import beyond_limit, recorded_template, revision_key, revision_record
from operators.rollout.telemetry import RolloutTelemetry
from operators.rollout.templates import Effective, EffectiveTemplates
from operators.rollout.workload import template_of

logger = logging.getLogger(__name__)

# Events that tell what a pass's writes to objects did (not its status): see reconcile().
WRITE_NOTES = frozenset({"Adopted", "AdoptedDriftRestored"})

# While adopted objects are handed back: how often to look whether the user's pods are ready.
HANDBACK_POLL_SECONDS = 1.0


class RolloutReconciler:
    def __init__(
        self,
        cluster: Cluster,
        metrics: MetricSources,
        clock: Callable[[], datetime] = utc_now,
        sidecars: EffectiveTemplates | None = None,
        checks: BackgroundChecks | None = None,
        hooks: HookRunner | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.cluster = cluster
        # The metric providers, their default addresses and the hosts they may be sent to.
        self.metrics = metrics
        self.clock = clock
        # Analysis runs beside the passes, so a hung query never delays an abort.
        self.checks = checks or BackgroundChecks()
        # Lifecycle hooks run beside the passes too, sent to the same allowed hosts as queries; job
        # hooks' Jobs by the same runner as job metrics'.
        self.hooks = hooks or HookRunner(metrics.allowed, jobs=metrics.jobs)
        # Adds the sidecars of matching SidecarSets to the template; None: spec.template as is.
        self.sidecars = sidecars
        # Tells the Rollout's and the operator-wide notification targets; None: no notifications.
        self.notifier = notifier
        # Traffic kinds the API server does not serve (no CRD): there is nothing to hand back.
        self._uninstalled: set[tuple[str, str]] = set()
        # The operator's own metrics of each Rollout (phase, weight, checks, releases finished).
        self.telemetry = RolloutTelemetry()

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass. Returns seconds until the next wanted pass; None once the Rollout is gone."""
        body = self.cluster.get_current(rollout_key(namespace, name))
        if body is None:
            self.checks.forget((namespace, name))
            self.hooks.forget((namespace, name))
            self.telemetry.forget(namespace, name)
            return None
        now = self.clock()
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        read = read_status(RolloutStatus, body)
        if read.repaired:
            self._event(body, "Warning", "StatusRepaired", read.repair_message(KIND), now)
        status = read.status
        try:
            spec = RolloutSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            message = f"invalid Rollout: {describe_validation_error(error)}"
            return self._report_blocked(body, read, generation, "InvalidSpec", message, now)

        ref = RolloutRef(name=name, namespace=namespace, uid=str(meta.get("uid")))
        objects: dict[ObjectKey, dict[str, Any] | None] = {}
        workload = workload_key(ref, spec)
        adoptable = {workload, stable_service_key(ref, spec)}
        for key in managed_keys(ref, spec):
            try:
                objects[key] = (
                    self._read_adoptable(key, recheck_absent=key == workload)
                    if key in adoptable
                    else self.cluster.get(key)
                )
            except ResourceNotInstalled as error:
                message = (
                    f"cannot manage traffic: {error.message}; "
                    f"is the {key.kind} CRD ({key.api_version}) installed?"
                )
                return self._report_blocked(body, read, generation, "ProviderMissing", message, now)

        released = self._released_spec(ref, spec, objects)
        effective = (
            self.sidecars.effective(ref, body, released, objects)
            if self.sidecars
            else Effective(released.template or {})
        )
        effective_template = effective.template
        revision = effective.revision or pod_template_revision(effective_template)
        context = self._query_context(ref, spec, status, revision)
        analysis = analysis_of(spec, status)
        # Templates are resolved now: a check started below keeps them, a changed one is the next's.
        metrics, problems = (
            with_templates(self.cluster, namespace, analysis.metrics) if analysis else ([], [])
        )
        problems += validate_metrics(metrics, context, self.metrics)
        # The analyses not in force yet (post-promotion's) are checked too: a typo there must stop
        # the release before it starts, not once the stable already runs the new version.
        for later in analyses_of(spec):
            if later is not analysis:
                later_metrics, later_problems = with_templates(self.cluster, namespace, later.metrics)
                problems += later_problems + validate_metrics(later_metrics, context, self.metrics)
        problems += hook_problems(spec, self.metrics.allowed)
        check = None
        if analysis and not problems:
            due = engine.analysis_due(spec, status, now)
            min_requests = analysis.min_requests
            check = self.checks.collect_or_start(
                (namespace, name), due, lambda: start_check(metrics, context, self.metrics, now, min_requests)
            )
        observed = engine.Observed(
            ref=ref,
            generation=generation,
            annotations=meta.get("annotations") or {},
            effective_template=effective_template,
            revision=effective.revision,
            objects=objects,
            check=check,
            problems=problems,
            stable_record=self._stable_record(ref, spec, status, objects),
            previous_record=self._previous_record(ref, status),
            hook_answers=self.hooks.collect_or_start(ref, spec, status.hooks) if not problems else [],
        )
        plan = engine.reconcile(spec, status, observed, now)
        applied = False
        try:
            self._record_revisions(ref, plan, now)
            self._apply(plan.objects, objects)
            applied = True
            if generation != read.status.observed_generation:
                # Only a spec change can stop naming an adopted route: a list then, none on a quiet
                # pass. Past the cache: a list would mark the kind as complete there, and a user's
                # route (no label of ours until adopted) would read as missing.
                self._hand_back_traffic(body, ref, keep=objects.keys(), now=now)
            write_status(self.cluster, key_of(body), read, plan.status)
            self.telemetry.record(namespace, name, read.status, plan.status)
        except KubeError as error:
            if error.status == 409:
                if applied:
                    # The objects were written, the status lost a race: what the writes did is told
                    # now, as the next pass finds it done and would not tell it.
                    for note in plan.events:
                        if note.reason in WRITE_NOTES:
                            self._event(body, note.type, note.reason, note.message, now)
                # Decided on a copy that is out of date (or lost a race): decide again on what is there.
                return RETRY_AFTER_CONFLICT
            message = f"could not apply the plan: {error.message}"
            return self._report_blocked(body, read, generation, "ApplyFailed", message, now)
        for note in plan.events:
            self._event(body, note.type, note.reason, note.message, now)
        steps = len(spec.strategy.canary.effective_steps()) if spec.strategy.canary is not None else None
        self._notify(body, status, plan.status, plan.events, now, steps)
        logger.debug("Rollout %s/%s: pass done, next in %ss", namespace, name, plan.requeue_after)
        return plan.requeue_after

    def _read_adoptable(self, key: ObjectKey, *, recheck_absent: bool) -> dict[str, Any] | None:
        """An object Sluice may adopt (the user's Deployment, the stable Service), read for no request
        once the watches deliver it.

        Before Sluice marks a user's object with its labels, no watch delivers it (they select
        Sluice's label), and a cache that listed the kind says it does not exist without asking:
        what the cache does not know is asked of the API server (and remembered if a watch covers
        it). A user's Deployment known to be missing is asked for again (`recheck_absent`): created
        later without Sluice's labels, no watch would tell.
        """
        if not isinstance(self.cluster, CachedCluster):
            return self.cluster.get(key)
        known, cached = self.cluster.cache.lookup(key)
        if known and (cached is not None or not recheck_absent):
            return cached
        body = Cluster.get(self.cluster, key)  # past CachedCluster.get, which may answer "absent"
        self.cluster.cache.remember(key, body)
        return body

    def _released_spec(
        self, ref: RolloutRef, spec: RolloutSpec, objects: dict[ObjectKey, dict[str, Any] | None]
    ) -> RolloutSpec:
        """The spec with the template to release: with workloadRef, the user's Deployment's."""
        key = workload_key(ref, spec)
        if key is None:
            return spec
        return spec.model_copy(update={"template": template_of(objects.get(key)) or {}})

    def hand_back(self, namespace: str, name: str) -> float | None:
        """Before the Rollout goes (its finalizer): adopted objects handed back, then its metrics removed.

        None when done, else seconds to wait. (Its loop stopped when it was marked for deletion.)
        """
        wait = self._hand_back(namespace, name)
        if wait is None:
            self.telemetry.forget(namespace, name)
        return wait

    def _hand_back(self, namespace: str, name: str) -> float | None:
        """Give adopted objects back before the Rollout goes: None when done, else seconds to wait.

        Reads past the cache: the last steps take Sluice's labels off, and the watches stop
        delivering the objects then.
        """
        body = Cluster.get(self.cluster, rollout_key(namespace, name))
        if body is None:
            return None
        # Routes first, in one step: their traffic goes back to the stable Service alone.
        ref = RolloutRef(name=name, namespace=namespace, uid=str(body["metadata"].get("uid")))
        self._hand_back_traffic(body, ref, keep=(), now=self.clock())
        adoption = read_status(RolloutStatus, body).status.adoption
        if adoption is None:
            return None
        keys = {
            "deployment": ObjectKey("apps/v1", "Deployment", namespace, adoption.deployment or ""),
            "service": ObjectKey("v1", "Service", namespace, adoption.service or ""),
        }
        live = {key: Cluster.get(self.cluster, key) if key.name else None for key in keys.values()}
        step = hand_back(ref, adoption, live[keys["deployment"]], live[keys["service"]])
        for obj in step.objects:
            self.cluster.apply(apply_body(obj, live.get(key_of(obj))))
        now = self.clock()
        if step.waiting is not None:
            logger.info("Rollout %s/%s: %s", namespace, name, step.waiting)
            return HANDBACK_POLL_SECONDS
        handed = [f"{key.kind} {namespace}/{key.name}" for key in keys.values() if key.name]
        self._event(body, "Normal", "HandedBack", f"handed back {' and '.join(handed)}, serving", now)
        return None

    def _hand_back_traffic(
        self,
        body: dict[str, Any],
        ref: RolloutRef,
        keep: Collection[ObjectKey],
        now: datetime,
    ) -> None:
        """Give back the traffic objects this Rollout adopted and no longer routes with (not in `keep`).

        Found by the Rollout's label, which adopted objects carry.
        """
        for api_version, kind in TRAFFIC_KINDS:
            if (api_version, kind) in self._uninstalled:
                continue
            selector = f"{ROLLOUT_LABEL}={ref.name}"
            try:
                # Past the cache (CachedCluster.list_objects), on purpose: see the callers.
                live = Cluster.list_objects(self.cluster, api_version, kind, ref.namespace, selector)
            except ResourceNotInstalled:
                # Nothing of a kind the API server does not serve was ever adopted: ask no more.
                self._uninstalled.add((api_version, kind))
                continue
            by_key = {key_of(obj): obj for obj in live}
            for handed in hand_back_traffic(ref.name, live, keep):
                key = key_of(handed)
                self.cluster.apply(apply_body(handed, by_key.get(key)))
                message = f"{key.kind} {key.namespace}/{key.name} handed back as its owner wrote it"
                self._event(body, "Normal", "HandedBack", message, now)

    def _stable_record(
        self,
        ref: RolloutRef,
        spec: RolloutSpec,
        status: RolloutStatus,
        objects: dict[ObjectKey, dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """The stable revision's recorded template, read only when its Deployment is missing."""
        if objects.get(stable_deployment_key(ref, spec)) is not None or not status.stable_revision:
            return None
        return recorded_template(self.cluster.get(revision_key(ref, status.stable_revision)))

    def _previous_record(self, ref: RolloutRef, status: RolloutStatus) -> dict[str, Any] | None:
        """While a promoted release is verified: the template to roll the stable back to."""
        if status.post_promotion is None:
            return None
        return recorded_template(self.cluster.get(revision_key(ref, status.post_promotion.previous_revision)))

    def _record_revisions(self, ref: RolloutRef, plan: engine.Plan, now: datetime) -> None:
        """Keep the revisions the plan names in the history (before the objects that use them)."""
        new = {
            revision: template
            for revision, template in plan.records.items()
            # Recorded before (the watch delivered it), and a revision never changes.
            if self.cluster.get(revision_key(ref, revision)) is None
        }
        if not new:
            return
        for revision, template in new.items():
            try:
                self.cluster.create(revision_record(ref, revision, template, int(now.timestamp())))
            except KubeError as error:
                if error.status != 409:  # AlreadyExists: recorded before, and a revision never changes
                    raise
        listed = self.cluster.list_objects(
            REVISION_API_VERSION, REVISION_KIND, ref.namespace, f"{ROLLOUT_LABEL}={ref.name}"
        )
        ours = [record for record in listed if is_owned_by(record, ref)]
        for old in beyond_limit(ours, keep=list(plan.records)):
            self.cluster.delete(key_of(old))

    def _query_context(
        self, ref: RolloutRef, spec: RolloutSpec, status: RolloutStatus, revision: str
    ) -> QueryContext:
        analysis = analysis_of(spec, status)
        # After promotion the new version is the stable one: `canary.*` in queries then names it there.
        verifying = engine.verifying_after_promotion(status)
        return QueryContext(
            namespace=ref.namespace,
            rollout_name=ref.name,
            canary_service=service_name(ref, spec, STABLE if verifying else CANARY),
            stable_service=service_name(ref, spec, STABLE),
            canary_revision=status.canary_revision or revision,
            stable_revision=status.stable_revision or "",
            interval=analysis.interval if analysis else "60s",
            rollout_uid=ref.uid,
        )

    def _apply(self, desired: list[dict[str, Any]], live: dict[ObjectKey, dict[str, Any] | None]) -> None:
        """Apply what is missing or differs (server-side, our fields only); no write for the rest."""
        for obj in desired:
            current = live.get(key_of(obj))
            if current is None or not covers(current, obj):
                self.cluster.apply(apply_body(obj, current))

    def _report_blocked(
        self,
        body: dict[str, Any],
        read: ReadStatus[RolloutStatus],
        generation: int,
        reason: str,
        message: str,
        now: datetime,
    ) -> float:
        blocked = engine.blocked_status(read.status, generation, reason, message, now)
        try:
            write_status(self.cluster, key_of(body), read, blocked)
        except KubeError as error:
            if error.status == 409:
                return RETRY_AFTER_CONFLICT
            raise
        meta = body["metadata"]
        self.telemetry.record(meta["namespace"], meta["name"], read.status, blocked)
        if read.status.message != message:
            self._event(body, "Warning", reason, message, now)
        self._notify(body, read.status, blocked, [], now)
        return engine.RESYNC_SECONDS

    def _notify(
        self,
        body: dict[str, Any],
        before: RolloutStatus,
        after: RolloutStatus,
        events: list[engine.EventNote],
        now: datetime,
        steps: int | None = None,
    ) -> None:
        """Tell the notification targets what this pass did (once its status is written)."""
        if self.notifier is None:
            return
        meta = body["metadata"]
        found = notifications_of(meta["namespace"], meta["name"], before, after, events, now, steps)
        # Read from the body, not the model: a Rollout blocked by an invalid spec is told too.
        ref = ((body.get("spec") or {}).get("notifications") or {}).get("secretRef") or {}
        secret = ref.get("name") if isinstance(ref, dict) else None

        def report(message: str) -> None:
            self._event(body, "Warning", PROBLEM_REASON, message, self.clock())

        self.notifier.notify(meta["namespace"], secret if isinstance(secret, str) else None, found, report)

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str, now: datetime) -> None:
        post_event_or_log(self.cluster, body, kind, reason, message, now)
