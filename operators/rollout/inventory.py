"""Which objects a Rollout manages, so the operator reads all of them before deciding."""

from __future__ import annotations

from operators.api.base import API_VERSION
from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, RolloutSpec
from operators.foundation.keys import ObjectKey
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
    keys = [service_key(ref, ref.name), service_key(ref, ref.canary_name)] if spec.service else []
    routing = routing_of(ref, spec)
    if routing is not None:
        keys += routing.keys()
    keys += [deployment_key(ref, ref.name), deployment_key(ref, ref.canary_name)]
    return keys


def rollout_key(namespace: str, name: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, namespace, name)
