"""Adopting what already runs: a user's Deployment (workloadRef) and Service, and handing them back.

Pure decisions over what the shell read. An adopted object is never owned
(no ownerReference: garbage collection would delete the user's object with
the Rollout). Sluice marks it with the annotation ``sluice.dev/adopted-by:
<rollout>`` and its managed labels (so the operator's label-selected watches
deliver it and its events wake the Rollout), and writes only the few fields it
takes over, by server-side apply: the Deployment's ``spec.replicas`` and the
Service's ``spec.selector``.

Adoption moves traffic without a failed request, one step per pass, each
waiting for the previous one to be true in the cluster:

1. record what is taken over (``status.adoption``) and mark the objects;
2. start Sluice's stable Deployment with the user's template: its pods keep the
   template's labels, so the user's Service already sends them traffic next to
   the original pods; wait until all are ready;
3. move the Service's selector to Sluice's stable pods only (already serving);
4. scale the user's Deployment to 0.

Handback, when the Rollout is deleted, runs the other way: the user's
Deployment back to its recorded replicas, wait until they are ready, then the
Service's recorded selector back and the marks off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, AdoptionPhase, AdoptionStatus, RolloutSpec
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    conflict_message,
    is_owned_by,
    managed_labels,
)
from operators.rollout.workload import ready_replicas

ADOPTED_BY = "sluice.dev/adopted-by"


def adopted_by(obj: Mapping[str, Any] | None) -> str | None:
    """The Rollout that adopted `obj`, or None."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ADOPTED_BY)
    return str(value) if value else None


def owned_by_a_rollout(obj: Mapping[str, Any]) -> bool:
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(owner, Mapping) and owner.get("kind") == KIND for owner in references)


def is_adoptable(obj: Mapping[str, Any], ref: RolloutRef) -> bool:
    """A user's object this Rollout may take over: no Rollout owns it, no other Rollout adopted it.

    An object labelled managed by Sluice that is not this Rollout's adoption was made by some
    Sluice (a Rollout since deleted, another installation): it is a conflict, never adopted.
    """
    if is_owned_by(obj, ref) or owned_by_a_rollout(obj):
        return False
    by = adopted_by(obj)
    if by is not None:
        return by == ref.name
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) != MANAGED_BY


def adoption_problem(kind: str, obj: Mapping[str, Any], ref: RolloutRef) -> str:
    """Why `obj` cannot be adopted by `ref` (is_adoptable said no)."""
    meta = obj.get("metadata") or {}
    where = f"{kind} {meta.get('namespace', ref.namespace)}/{meta.get('name')}"
    by = adopted_by(obj)
    if by is not None and by != ref.name:
        return (
            f"{where} is already adopted by Rollout {by} ({ADOPTED_BY}={by}); "
            f"a workload is released by one Rollout at a time: delete Rollout {by} first"
        )
    return conflict_message(kind, str(meta.get("name")), str(meta.get("namespace", ref.namespace)))


def missing_workload_message(key: ObjectKey, detail: str) -> str:
    return (
        f"{key.kind} {key.namespace}/{key.name} not found: {detail}; workloadRef names a Deployment "
        "in the Rollout's namespace: create it, or correct workloadRef.name"
    )


def _mark(ref: RolloutRef, key: ObjectKey) -> dict[str, Any]:
    """The fields every adopted object carries: Sluice's labels and the adopted-by annotation."""
    return {
        "apiVersion": key.api_version,
        "kind": key.kind,
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": managed_labels(ref),
            "annotations": {ADOPTED_BY: ref.name},
        },
    }


def _unmarked(key: ObjectKey, spec: dict[str, Any]) -> dict[str, Any]:
    """What Sluice applies last on handback: the field it gives back, and no mark (server-side
    apply removes the labels and annotation Sluice's field manager no longer sends)."""
    return {
        "apiVersion": key.api_version,
        "kind": key.kind,
        "metadata": {"name": key.name, "namespace": key.namespace},
        "spec": spec,
    }


def _replicas(obj: Mapping[str, Any] | None) -> int:
    return int(((obj or {}).get("spec") or {}).get("replicas", 1))


def _selector(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("spec") or {}).get("selector") or {})


def _describe(labels: Mapping[str, str]) -> str:
    return ",".join(f"{name}={value}" for name, value in sorted(labels.items())) or "(none)"


@dataclass
class Adoption:
    """One pass's adoption decisions."""

    status: AdoptionStatus | None = None
    # Bodies to apply to adopted objects (in place of the stable Service Sluice would render).
    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    # Reasons nothing may be touched, and the condition reason that sums them up.
    problems: list[str] = field(default_factory=list)
    reason: str = "ObjectConflict"
    # While adopting: what the adoption waits for (the Rollout's message); None once adopted.
    waiting: str | None = None
    # False until step 1 is true in the cluster: Sluice's own objects wait for the record.
    render_own: bool = True
    # (reason, message) of the Events to post.
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def service_adopted(self) -> bool:
        return self.status is not None and self.status.service is not None


def adopt(
    ref: RolloutRef,
    spec: RolloutSpec,
    before: AdoptionStatus | None,
    workload: tuple[ObjectKey, Mapping[str, Any] | None] | None,
    service: tuple[ObjectKey, Mapping[str, Any] | None] | None,
    stable_selector: Mapping[str, str],
    stable_ready: bool,
) -> Adoption:
    """What to do this pass about the user's Deployment (`workload`) and stable Service (`service`).

    `workload` and `service` are (key, live object or None); None when the spec names no
    workload, or has no Service. `stable_selector` selects Sluice's stable pods only;
    `stable_ready` says whether all of them are ready.
    """
    result = Adoption()
    deployment_key, deployment = workload if workload is not None else (None, None)
    service_key, live_service = service if service is not None else (None, None)
    if deployment_key is not None:
        if deployment is None:
            result.problems.append(missing_workload_message(deployment_key, "no such Deployment"))
            result.reason = "WorkloadNotFound"
        elif not is_adoptable(deployment, ref):
            result.problems.append(adoption_problem("Deployment", deployment, ref))
    takes_service = live_service is not None and not is_owned_by(live_service, ref)
    if live_service is not None and takes_service and not is_adoptable(live_service, ref):
        result.problems.append(adoption_problem("Service", live_service, ref))
    if result.problems or (deployment_key is None and not takes_service):
        return result

    status = before.model_copy(deep=True) if before is not None else AdoptionStatus()
    if deployment_key is not None and status.deployment is None:
        status.deployment, status.replicas = deployment_key.name, _replicas(deployment)
    if service_key is not None and takes_service and status.service is None:
        status.service, status.service_selector = service_key.name, _selector(live_service)
    result.status = status

    marked = before is not None and all(
        adopted_by(obj) == ref.name for obj in (deployment, live_service if takes_service else None) if obj
    )
    if not marked:
        status.phase = AdoptionPhase.STARTING
        result.render_own = False
        result.waiting = "adopting: recording and marking what it takes over"
    elif status.phase == AdoptionPhase.STARTING:
        if stable_ready:
            status.phase = AdoptionPhase.SERVICE_MOVED
            result.waiting = "adopting: Sluice's stable pods are ready, moving the Service to them"
        else:
            result.waiting = (
                "adopting: waiting for Sluice's stable pods to be ready next to the original ones"
            )
    elif status.phase == AdoptionPhase.SERVICE_MOVED:
        if not takes_service or _selector(live_service) == dict(stable_selector):
            status.phase = AdoptionPhase.ADOPTED
            if deployment_key is not None:
                result.waiting = f"adopting: scaling Deployment {deployment_key.name} to 0"
        else:
            result.waiting = "adopting: waiting for the Service to select Sluice's stable pods"
    elif deployment_key is not None and before is not None and before.phase == AdoptionPhase.ADOPTED:
        replicas = _replicas(deployment)
        if replicas != 0:
            result.notes.append(
                (
                    "AdoptedDriftRestored",
                    f"Deployment {deployment_key.namespace}/{deployment_key.name} was scaled to {replicas} "
                    "by someone else (a GitOps tool re-applying it?): scaled back to 0, Sluice's stable "
                    "Deployment serves it",
                )
            )

    moved = status.phase in (AdoptionPhase.SERVICE_MOVED, AdoptionPhase.ADOPTED)
    if service_key is not None and takes_service:
        body = _mark(ref, service_key)
        if moved:
            body["spec"] = {"selector": dict(stable_selector)}
            live = _selector(live_service)
            if (
                before is not None
                and before.phase != AdoptionPhase.STARTING
                and live != dict(stable_selector)
            ):
                result.notes.append(
                    (
                        "AdoptedDriftRestored",
                        f"Service {service_key.namespace}/{service_key.name} was changed to select "
                        f"{_describe(live)} (a GitOps tool re-applying it?): its selector is back to "
                        f"Sluice's stable pods, {_describe(stable_selector)}",
                    )
                )
        result.objects[service_key] = body
    if deployment_key is not None:
        body = _mark(ref, deployment_key)
        if status.phase == AdoptionPhase.ADOPTED:
            body["spec"] = {"replicas": 0}
        result.objects[deployment_key] = body
    return result


@dataclass
class Handback:
    """One step of handing adopted objects back: what to apply, and what it then waits for."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    # None once these objects are applied: the handback is then complete.
    waiting: str | None = None


def hand_back(
    ref: RolloutRef,
    adoption: AdoptionStatus | None,
    deployment: Mapping[str, Any] | None,
    service: Mapping[str, Any] | None,
) -> Handback:
    """The next step of giving the adopted Deployment and Service back as they were.

    The Deployment first gets its replicas back (still marked) and must have them
    all ready before the Service selects its pods again; then the Service's
    selector and the removal of both marks go in one step. An object the user
    deleted meanwhile is skipped.
    """
    result = Handback()
    if adoption is None:
        return result
    if adoption.deployment is not None and deployment is not None:
        key = ObjectKey("apps/v1", "Deployment", ref.namespace, adoption.deployment)
        replicas = adoption.replicas if adoption.replicas is not None else 1
        meta = deployment.get("metadata") or {}
        seen = int((deployment.get("status") or {}).get("observedGeneration") or 0)
        ready = ready_replicas(deployment)
        if _replicas(deployment) != replicas or seen < int(meta.get("generation") or 0) or ready < replicas:
            body = {**_mark(ref, key), "spec": {"replicas": replicas}}
            waiting = f"handing back Deployment {ref.namespace}/{key.name}: {ready}/{replicas} ready"
            return Handback(objects=[body], waiting=waiting)
        result.objects.append(_unmarked(key, {"replicas": replicas}))
    if adoption.service is not None and service is not None:
        key = ObjectKey("v1", "Service", ref.namespace, adoption.service)
        result.objects.insert(0, _unmarked(key, {"selector": dict(adoption.service_selector or {})}))
    return result
