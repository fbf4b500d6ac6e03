"""Reading the state of an observed Deployment: pure helpers over its dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REVISION_ANNOTATION = "sluice.dev/revision"


def revision_of(deployment: Mapping[str, Any] | None) -> str | None:
    """The Sluice revision a Deployment was last rendered with."""
    if not deployment:
        return None
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    value = annotations.get(REVISION_ANNOTATION)
    return str(value) if value else None


def ready_replicas(deployment: Mapping[str, Any] | None) -> int:
    if not deployment:
        return 0
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def template_of(deployment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not deployment:
        return None
    template = deployment.get("spec", {}).get("template")
    return dict(template) if template else None


def is_rolled_out(deployment: Mapping[str, Any] | None, revision: str, replicas: int) -> bool:
    """True once the Deployment runs ``replicas`` ready pods of ``revision`` and nothing older.

    The Deployment controller must have seen the latest spec (observedGeneration),
    every replica must be updated to it, and all of them ready: the same test
    ``kubectl rollout status`` makes.
    """
    if not deployment or revision_of(deployment) != revision:
        return False
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    if int(spec.get("replicas", 1)) != replicas:
        return False
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    if replicas == 0:
        return True
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    return updated >= replicas and total <= updated and ready_replicas(deployment) >= replicas
