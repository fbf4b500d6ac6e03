"""When a part `sluice install` applied is ready, and in words why not yet: pure decisions on live objects.

A CRD once ``Established`` (its resource is served), a namespace once ``Active`` (not being
deleted), a Deployment once its controller has seen the current spec and every desired replica
is updated and available (as `kubectl rollout status` decides); anything else as soon as it is
applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Readiness:
    ready: bool
    # Ready: what it is ("established", "available (2/2)"); not ready: why not, for the timeout message.
    state: str


def describe(obj: Mapping[str, Any]) -> str:
    """A part as progress lines name it: ``crd rollouts.sluice.dev``, ``deployment sluice-system/x``."""
    kind = str(obj.get("kind", "")).lower()
    meta = obj.get("metadata") or {}
    name = f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    return f"{'crd' if kind == 'customresourcedefinition' else kind} {name}"


def readiness(obj: Mapping[str, Any]) -> Readiness:
    """Whether the live object ``obj`` is ready."""
    match obj.get("kind"):
        case "CustomResourceDefinition":
            return crd_readiness(obj)
        case "Namespace":
            return namespace_readiness(obj)
        case "Deployment":
            return deployment_readiness(obj)
        case _:
            return Readiness(True, "applied")


def crd_readiness(crd: Mapping[str, Any]) -> Readiness:
    conditions = _conditions(crd)
    established = conditions.get("Established") or {}
    if established.get("status") == "True":
        return Readiness(True, "established")
    names = conditions.get("NamesAccepted") or {}
    if names.get("status") == "False":  # e.g. another CRD already has its plural or kind
        return Readiness(False, f"its names are not accepted: {names.get('message') or names.get('reason')}")
    return Readiness(False, f"not Established yet{_condition_detail(established)}")


def namespace_readiness(namespace: Mapping[str, Any]) -> Readiness:
    phase = (namespace.get("status") or {}).get("phase")
    if phase == "Terminating" or (namespace.get("metadata") or {}).get("deletionTimestamp"):
        return Readiness(False, "it is being deleted (an earlier uninstall?); install again once it is gone")
    if phase in (None, "Active"):
        return Readiness(True, "active")
    return Readiness(False, f"phase {phase}")


def deployment_readiness(deployment: Mapping[str, Any]) -> Readiness:
    """As `kubectl rollout status`: the current generation observed, all replicas updated, none old
    left, all available."""
    generation = (deployment.get("metadata") or {}).get("generation")
    status = deployment.get("status") or {}
    conditions = _conditions(deployment)
    desired = (deployment.get("spec") or {}).get("replicas")
    desired = 1 if desired is None else int(desired)
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return Readiness(False, f"its controller has not yet seen generation {generation}")
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Readiness(False, f"its rollout is stuck: {progressing.get('message')}")
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if updated < desired:
        return Readiness(False, f"{updated} of {desired} replicas updated{_condition_detail(progressing)}")
    if total > updated:
        return Readiness(False, f"{total - updated} old replicas are still terminating")
    if available < desired:
        return Readiness(
            False,
            f"{available} of {desired} replicas available{_condition_detail(conditions.get('Available'))}",
        )
    return Readiness(True, f"available ({available}/{desired})")


def deletion_state(obj: Mapping[str, Any]) -> str:
    """Why an object asked to go is still there: what it waits for."""
    meta = obj.get("metadata") or {}
    if not meta.get("deletionTimestamp"):
        return "it is still there, not marked for deletion"
    waits = [f"finalizers {', '.join(meta['finalizers'])}"] if meta.get("finalizers") else []
    waits += [
        f"{c.get('type')}: {c.get('message') or c.get('reason')}"
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("type") in ("Terminating", "NamespaceContentRemaining", "NamespaceFinalizersRemaining")
        and c.get("status") == "True"
    ]
    return f"being deleted since {meta['deletionTimestamp']}" + (
        f", waiting for {'; '.join(waits)}" if waits else ""
    )


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []}


def _condition_detail(condition: Mapping[str, Any] | None) -> str:
    """``: <message>`` of a condition that says something, else nothing."""
    message = (condition or {}).get("message") or (condition or {}).get("reason")
    return f": {message}" if message else ""
