"""The imperative shell around an Application: render, apply its Rollouts, report their health.

One call of :meth:`ApplicationReconciler.reconcile` reads the Application and
the Rollouts it owns, renders the desired Rollouts (``render.py``), creates
what is missing, replaces what differs, deletes the Rollouts of removed
components, and writes the status ``health.py`` derives from the Rollouts.
Rollouts do the releasing; the Application only says what they should be and
how they are doing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from operators.api.application import (
    KIND,
    ApplicationPhase,
    ApplicationSpec,
    ApplicationStatus,
    ComponentPhase,
)
from operators.api.base import API_VERSION, describe_validation_error
from operators.api.refs import ApplicationRef
from operators.api.rollout import KIND as ROLLOUT_KIND
from operators.application import health
from operators.application.health import ComponentOutcome
from operators.application.render import APPLICATION_LABEL, Rendered, render_application
from operators.application.types import ComponentTypes
from operators.foundation.clock import utc_now
from operators.foundation.cluster import Cluster, KubeError
from operators.foundation.diff import apply_body, same_spec
from operators.foundation.events import post_event_or_log
from operators.foundation.keys import ObjectKey, key_of
from operators.foundation.loop import RETRY_AFTER_CONFLICT
from operators.foundation.status import ReadStatus, read_status, write_status
from operators.rollout.inventory import rollout_key
from operators.rollout.ownership import has_owner

logger = logging.getLogger(__name__)

# Rollout events wake the Application at once; this is only the safety net for missed events.
RESYNC_SECONDS = 30.0


def application_key(namespace: str, name: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, namespace, name)


def conflict_message(namespace: str, name: str) -> str:
    return (
        f"Rollout {namespace}/{name} exists and is not managed by this Application; "
        f"rename the component or delete that Rollout"
    )


class _Conflict(Exception):
    """The component's Rollout name is taken by a Rollout this Application does not own."""


class ApplicationReconciler:
    def __init__(
        self, cluster: Cluster, types: ComponentTypes, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.cluster = cluster
        self.types = types
        self.clock = clock

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass. Returns seconds until the next wanted pass; None once the Application is gone.

        A write refused with 409 raises: the loop tries again soon (`reconcile_loop`).
        """
        body = self.cluster.get_current(application_key(namespace, name))
        if body is None:
            return None
        now = self.clock()
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        read = read_status(ApplicationStatus, body)
        if read.repaired:
            post_event_or_log(self.cluster, body, "Warning", "StatusRepaired", read.repair_message(KIND), now)
        previous = read.status
        try:
            spec = ApplicationSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            message = f"invalid Application: {describe_validation_error(error)}"
            self._write_status(body, read, health.invalid_status(previous, generation, message, now), now)
            return RESYNC_SECONDS

        ref = ApplicationRef(name=name, namespace=namespace, uid=str(meta.get("uid")))
        rendered = render_application(ref, spec, self.types.catalog())
        owned = self._owned_rollouts(ref)
        try:
            outcomes = [self._outcome(ref, component.name, rendered, owned) for component in spec.components]
        except KubeError as failure:  # a 409: someone wrote a Rollout meanwhile; look again soon
            logger.debug("Application %s/%s: %s", namespace, name, failure)
            return RETRY_AFTER_CONFLICT
        self._remove_unlisted(body, owned, {component.name for component in spec.components}, now)
        status = health.application_status(previous, generation, outcomes, now)
        self._write_status(body, read, status, now)
        return RESYNC_SECONDS

    def _outcome(
        self, ref: ApplicationRef, name: str, rendered: Rendered, owned: Mapping[str, dict[str, Any]]
    ) -> ComponentOutcome:
        """Apply one component's Rollout; its live Rollout, or the error. Raises KubeError on a 409."""
        error = rendered.errors.get(name)
        if error:
            return ComponentOutcome(name, error=error, reason="InvalidComponent")
        try:
            live = self._apply(ref, rendered.rollouts[name], owned)
        except _Conflict:
            message = f'component "{name}": {conflict_message(ref.namespace, name)}'
            return ComponentOutcome(name, error=message, reason="RolloutConflict")
        except KubeError as failure:
            if failure.status == 409:
                raise
            message = f'component "{name}": the API server refused its Rollout: {failure.message}'
            return ComponentOutcome(name, error=message, reason="ApplyFailed")
        return ComponentOutcome(name, rollout=live)

    def _owned_rollouts(self, ref: ApplicationRef) -> dict[str, dict[str, Any]]:
        """The Rollouts this Application made (label to find them, owner uid to be sure), by name."""
        listed = self.cluster.list_objects(
            API_VERSION, ROLLOUT_KIND, ref.namespace, f"{APPLICATION_LABEL}={ref.name}"
        )
        return {item["metadata"]["name"]: item for item in listed if has_owner(item, KIND, ref.uid)}

    def _apply(
        self, ref: ApplicationRef, desired: dict[str, Any], owned: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply the Rollout when it is missing or differs; a Rollout we do not own is left alone."""
        name = desired["metadata"]["name"]
        live = owned.get(name) or self.cluster.get(rollout_key(ref.namespace, name))
        if live is not None and not has_owner(live, KIND, ref.uid):
            raise _Conflict(name)
        if live is not None and same_spec(live, desired):
            return live
        # Server-side apply: annotations others set (sluice.dev/promote, kopf's finalizer) are theirs
        # and survive; a spec field we rendered before and no longer render goes away.
        return self.cluster.apply(apply_body(desired, live))

    def _remove_unlisted(
        self, body: dict[str, Any], owned: Mapping[str, dict[str, Any]], listed: set[str], now: datetime
    ) -> None:
        """Delete the Rollouts of removed components; their workloads go with them (owner references)."""
        for name, rollout in owned.items():
            if name not in listed:
                self.cluster.delete(key_of(rollout))
                message = f"component {name} removed: Rollout {name} and its workload deleted"
                post_event_or_log(self.cluster, body, "Normal", "ComponentRemoved", message, now)

    def _write_status(
        self,
        body: dict[str, Any],
        before: ReadStatus[ApplicationStatus],
        after: ApplicationStatus,
        now: datetime,
    ) -> None:
        if not write_status(self.cluster, key_of(body), before, after):
            return
        for kind, reason, message in _news(before.status, after):
            post_event_or_log(self.cluster, body, kind, reason, message, now)


def _news(before: ApplicationStatus, after: ApplicationStatus) -> list[tuple[str, str, str]]:
    """Events worth posting: a component newly failing, and the Application changing phase."""
    news = []
    previous = {c.name: c for c in before.components}
    for component in after.components:
        old = previous.get(component.name)
        failing = component.phase == ComponentPhase.FAILED
        if failing and (old is None or old.message != component.message):
            news.append(("Warning", "ComponentFailed", component.message))
    if after.phase != before.phase and after.phase is not None:
        kind = "Warning" if after.phase == ApplicationPhase.DEGRADED else "Normal"
        news.append((kind, after.phase.value, after.message))
    return news
