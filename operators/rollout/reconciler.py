"""The imperative shell around the engine: read, decide, apply, report.

One call of :meth:`RolloutReconciler.reconcile` reads the Rollout and every
object it manages, runs analysis when due, asks the pure engine for a plan and
applies it. It is synchronous (the ``kubernetes`` client is), so the kopf
daemon runs it in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from operators.analysis.background import BackgroundChecks
from operators.analysis.check import MetricSources, start_check, validate_metrics
from operators.analysis.templates import QueryContext
from operators.api.base import describe_validation_error
from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, RolloutSpec, RolloutStatus
from operators.foundation.clock import utc_now
from operators.foundation.cluster import Cluster, KubeError, ResourceNotInstalled
from operators.foundation.diff import apply_body, covers
from operators.foundation.events import post_event_or_log
from operators.foundation.keys import ObjectKey, key_of
from operators.foundation.loop import RETRY_AFTER_CONFLICT
from operators.foundation.status import ReadStatus, read_status, write_status
from operators.rollout import engine
from operators.rollout.inventory import deployment_key, managed_keys, rollout_key
from operators.rollout.ownership import ROLLOUT_LABEL, is_owned_by
from operators.rollout.render import pod_template_revision
from operators.rollout.revisions import API_VERSION as REVISION_API_VERSION
from operators.rollout.revisions import KIND as REVISION_KIND
from operators.rollout.revisions import beyond_limit, recorded_template, revision_key, revision_record
from operators.rollout.templates import Effective, EffectiveTemplates

logger = logging.getLogger(__name__)


class RolloutReconciler:
    def __init__(
        self,
        cluster: Cluster,
        metrics: MetricSources,
        clock: Callable[[], datetime] = utc_now,
        sidecars: EffectiveTemplates | None = None,
        checks: BackgroundChecks | None = None,
    ) -> None:
        self.cluster = cluster
        # The metric providers, their default addresses and the hosts they may be sent to.
        self.metrics = metrics
        self.clock = clock
        # Analysis runs beside the passes, so a hung query never delays an abort.
        self.checks = checks or BackgroundChecks()
        # Adds the sidecars of matching SidecarSets to the template; None: spec.template as is.
        self.sidecars = sidecars

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass. Returns seconds until the next wanted pass; None once the Rollout is gone."""
        body = self.cluster.get_current(rollout_key(namespace, name))
        if body is None:
            self.checks.forget((namespace, name))
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
        for key in managed_keys(ref, spec):
            try:
                objects[key] = self.cluster.get(key)
            except ResourceNotInstalled as error:
                message = (
                    f"cannot manage traffic: {error.message}; "
                    f"is the {key.kind} CRD ({key.api_version}) installed?"
                )
                return self._report_blocked(body, read, generation, "ProviderMissing", message, now)

        effective = (
            self.sidecars.effective(ref, body, spec, objects) if self.sidecars else Effective(spec.template)
        )
        effective_template = effective.template
        revision = effective.revision or pod_template_revision(effective_template)
        context = self._query_context(ref, spec, status, revision)
        analysis = spec.strategy.canary.analysis
        problems = validate_metrics(analysis.metrics, context, self.metrics) if analysis else []
        check = None
        if analysis and not problems:
            due = engine.analysis_due(spec, status, now)
            metrics = analysis.metrics
            check = self.checks.collect_or_start(
                (namespace, name), due, lambda: start_check(metrics, context, self.metrics, now)
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
            stable_record=self._stable_record(ref, status, objects),
        )
        plan = engine.reconcile(spec, status, observed, now)
        try:
            self._record_revisions(ref, plan, now)
            self._apply(plan.objects, objects)
            write_status(self.cluster, key_of(body), read, plan.status)
        except KubeError as error:
            if error.status == 409:
                # Decided on a copy that is out of date (or lost a race): decide again on what is there.
                return RETRY_AFTER_CONFLICT
            message = f"could not apply the plan: {error.message}"
            return self._report_blocked(body, read, generation, "ApplyFailed", message, now)
        for note in plan.events:
            self._event(body, note.type, note.reason, note.message, now)
        logger.debug("Rollout %s/%s: pass done, next in %ss", namespace, name, plan.requeue_after)
        return plan.requeue_after

    def _stable_record(
        self, ref: RolloutRef, status: RolloutStatus, objects: dict[ObjectKey, dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """The stable revision's recorded template, read only when its Deployment is missing."""
        if objects.get(deployment_key(ref, ref.name)) is not None or not status.stable_revision:
            return None
        return recorded_template(self.cluster.get(revision_key(ref, status.stable_revision)))

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
        analysis = spec.strategy.canary.analysis
        return QueryContext(
            namespace=ref.namespace,
            rollout_name=ref.name,
            canary_service=ref.canary_name,
            stable_service=ref.name,
            canary_revision=status.canary_revision or revision,
            interval=analysis.interval if analysis else "60s",
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
        if read.status.message != message:
            self._event(body, "Warning", reason, message, now)
        return engine.RESYNC_SECONDS

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str, now: datetime) -> None:
        post_event_or_log(self.cluster, body, kind, reason, message, now)
