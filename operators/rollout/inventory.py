"""Which objects a Rollout manages, so the operator reads all of them before deciding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.traffic.base import ObjectKey, provider_for


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
    provider = provider_for(spec)
    if provider is not None:
        keys += provider.object_keys(ref, spec)
    keys += [deployment_key(ref, ref.name), deployment_key(ref, ref.canary_name)]
    return keys


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata", {})
    return ObjectKey(
        str(obj.get("apiVersion")), str(obj.get("kind")), meta.get("namespace") or "", str(meta.get("name"))
    )
