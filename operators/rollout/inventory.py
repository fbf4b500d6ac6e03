"""Which objects a Rollout manages, so the operator reads all of them before deciding."""

from __future__ import annotations

from operators.api.base import API_VERSION
from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, RolloutSpec
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import CANARY, STABLE, TRACKS
from operators.rollout.render import deployment_name, service_name
from operators.rollout.routing import routing_of


def deployment_key(ref: RolloutRef, name: str) -> ObjectKey:
    return ObjectKey("apps/v1", "Deployment", ref.namespace, name)


def service_key(ref: RolloutRef, name: str) -> ObjectKey:
    return ObjectKey("v1", "Service", ref.namespace, name)


def managed_keys(ref: RolloutRef, spec: RolloutSpec) -> list[ObjectKey]:
    """Deployments, Services and traffic objects of the Rollout, in the order they are applied.

    Services come first so routes never point at nothing for long; traffic comes
    before Deployments so weight leaves a canary before its pods go away.
    """
    services = [service_key(ref, service_name(ref, spec, track)) for track in TRACKS]
    keys = services if spec.service else []
    routing = routing_of(ref, spec)
    if routing is not None:
        keys += routing.keys()
    keys += [deployment_key(ref, deployment_name(ref, spec, track)) for track in TRACKS]
    workload = workload_key(ref, spec)
    if workload is not None:
        # Last: the adopted Deployment is scaled down only after Sluice's own are applied.
        keys.append(workload)
    return keys


def stable_deployment_key(ref: RolloutRef, spec: RolloutSpec) -> ObjectKey:
    return deployment_key(ref, deployment_name(ref, spec, STABLE))


def canary_deployment_key(ref: RolloutRef, spec: RolloutSpec) -> ObjectKey:
    return deployment_key(ref, deployment_name(ref, spec, CANARY))


def stable_service_key(ref: RolloutRef, spec: RolloutSpec) -> ObjectKey | None:
    return service_key(ref, service_name(ref, spec, STABLE)) if spec.service else None


def workload_key(ref: RolloutRef, spec: RolloutSpec) -> ObjectKey | None:
    """The user's Deployment named by `spec.workloadRef`, or None."""
    if spec.workload_ref is None:
        return None
    return ObjectKey(
        spec.workload_ref.api_version, spec.workload_ref.kind, ref.namespace, spec.workload_ref.name
    )


def rollout_key(namespace: str, name: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, namespace, name)
