"""The imperative shell around the engine: read, decide, apply, report.

One call of :meth:`RolloutReconciler.reconcile` reads the Rollout and every
object it manages, runs analysis when due, asks the pure engine for a plan and
applies it. It is synchronous (the ``kubernetes`` client is), so the kopf
daemon runs it in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from operators.analysis.check import run_check, validate_queries
from operators.analysis.provider import MetricsProvider
from operators.analysis.templates import QueryContext
from operators.api.base import API_VERSION, describe_validation_error
from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, RolloutSpec, RolloutStatus
from operators.kube.client import Cluster, KubeError, ResourceNotInstalled
from operators.kube.diff import covers, replacement
from operators.kube.events import post_event_or_log
from operators.rollout import engine
from operators.rollout.inventory import key_of, managed_keys
from operators.rollout.render import pod_template_revision
from operators.sidecarset.rollouts import Effective, RolloutSidecars
from operators.traffic.base import ObjectKey

logger = logging.getLogger(__name__)

# After a write lost a race (409), look again soon rather than at the next resync.
RETRY_AFTER_CONFLICT = 1.0


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


def rollout_key(namespace: str, name: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, namespace, name)


class RolloutReconciler:
    def __init__(
        self,
        cluster: Cluster,
        metrics: MetricsProvider,
        prometheus_url: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        sidecars: RolloutSidecars | None = None,
    ) -> None:
        self.cluster = cluster
        self.metrics = metrics
        self.prometheus_url = prometheus_url
        self.clock = clock
        # Adds the sidecars of matching SidecarSets to the template; None: spec.template as is.
        self.sidecars = sidecars

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass. Returns seconds until the next wanted pass; None once the Rollout is gone."""
        body = self.cluster.get_current(rollout_key(namespace, name))
        if body is None:
            return None
        now = self.clock()
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        status = RolloutStatus.model_validate(body.get("status") or {})
        try:
            spec = RolloutSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            message = f"invalid Rollout: {describe_validation_error(error)}"
            return self._report_blocked(body, status, generation, "InvalidSpec", message, now)

        ref = RolloutRef(name=name, namespace=namespace, uid=str(meta.get("uid")))
        try:
            objects = {key: self.cluster.get(key) for key in managed_keys(ref, spec)}
        except ResourceNotInstalled as error:
            message = f"cannot manage traffic: {error.message}; is the Gateway API (HTTPRoute CRD) installed?"
            return self._report_blocked(body, status, generation, "ProviderMissing", message, now)

        effective = (
            self.sidecars.effective(ref, body, spec, objects) if self.sidecars else Effective(spec.template)
        )
        effective_template = effective.template
        revision = effective.revision or pod_template_revision(effective_template)
        context = self._query_context(ref, spec, status, revision)
        analysis = spec.strategy.canary.analysis
        problems = validate_queries(analysis.metrics, context) if analysis else []
        check = None
        if analysis and not problems and engine.analysis_due(spec, status, now):
            check = run_check(analysis.metrics, context, self.metrics, self.prometheus_url, now)
        observed = engine.Observed(
            ref=ref,
            generation=generation,
            annotations=meta.get("annotations") or {},
            effective_template=effective_template,
            revision=effective.revision,
            objects=objects,
            check=check,
            problems=problems,
        )
        plan = engine.reconcile(spec, status, observed, now)
        try:
            self._apply(plan.objects, objects)
        except KubeError as error:
            if error.status == 409:
                return RETRY_AFTER_CONFLICT
            message = f"could not apply the plan: {error.message}"
            return self._report_blocked(body, status, generation, "ApplyFailed", message, now)
        self._write_status(body, status, plan.status)
        for note in plan.events:
            self._event(body, note.type, note.reason, note.message, now)
        return plan.requeue_after

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
            args={},
        )

    def _apply(self, desired: list[dict[str, Any]], live: dict[ObjectKey, dict[str, Any] | None]) -> None:
        """Create what is missing, replace what differs, leave the rest alone (no write at all)."""
        for obj in desired:
            current = live.get(key_of(obj))
            if current is None:
                self.cluster.create(obj)
            elif not covers(current, obj):
                self.cluster.replace(replacement(current, obj))

    def _write_status(self, body: dict[str, Any], before: RolloutStatus, after: RolloutStatus) -> None:
        new = after.model_dump(by_alias=True, mode="json")
        if new == before.model_dump(by_alias=True, mode="json"):
            return
        # Nulls delete keys in a merge patch: a field the engine cleared must not linger.
        self.cluster.merge_patch(key_of(body), {"status": new}, subresource="status")

    def _report_blocked(
        self,
        body: dict[str, Any],
        status: RolloutStatus,
        generation: int,
        reason: str,
        message: str,
        now: datetime,
    ) -> float:
        blocked = engine.blocked_status(status, generation, reason, message, now)
        if status.message != message:
            self._event(body, "Warning", reason, message, now)
        self._write_status(body, status, blocked)
        return engine.RESYNC_SECONDS

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str, now: datetime) -> None:
        post_event_or_log(self.cluster, body, kind, reason, message, now)
