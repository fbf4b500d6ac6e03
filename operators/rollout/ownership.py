"""Labels and owner checks for the objects a Rollout manages.

Ownership is decided by the ownerReference (the Rollout's uid), never by the
managed-by label alone: the label says "some Sluice made this", the uid says
"this Rollout made this", and two Rollouts must never fight over one object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from operators.api.refs import RolloutRef
from operators.api.rollout import KIND

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "sluice"
# Which side of the release a Deployment, Service or pod belongs to.
TRACK_LABEL = "sluice.dev/track"
# The pod template hash: a label on pods, an annotation on Deployments.
REVISION_LABEL = "sluice.dev/revision"
# On a blue-green preview Service: test traffic goes to it (the sandbox's simulator sends some).
PREVIEW_LABEL = "sluice.dev/preview"
# The Rollout's name, so an event on a managed object maps to its Rollout without a lookup.
ROLLOUT_LABEL = "sluice.dev/rollout"

Track = Literal["stable", "canary"]
STABLE: Track = "stable"
CANARY: Track = "canary"
TRACKS: tuple[Track, ...] = (STABLE, CANARY)


def managed_labels(ref: RolloutRef) -> dict[str, str]:
    """The labels every object managed for `ref` carries."""
    return {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: ref.name}


def managed_metadata(
    ref: RolloutRef, name: str, extra_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Metadata of an object managed for `ref`: name, namespace, labels, owner reference.

    The managed labels win over `extra_labels` with the same key: they are what
    the operator relies on to find its objects.
    """
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": {**(extra_labels or {}), **managed_labels(ref)},
        "ownerReferences": [ref.owner_reference()],
    }


def is_owned_by(obj: Mapping[str, Any], ref: RolloutRef) -> bool:
    """Whether `obj` has an ownerReference to this very Rollout (same uid, kind Rollout).

    Labels are ignored on purpose: an object labelled managed-by Sluice but owned
    by another Rollout (or by nothing) is not ours to overwrite.
    """
    return has_owner(obj, KIND, ref.uid)


def has_owner(obj: Mapping[str, Any], kind: str, uid: str) -> bool:
    """Whether `obj` has an ownerReference to the object of this kind and uid."""
    metadata = obj.get("metadata") or {}
    references = metadata.get("ownerReferences") or []
    return any(
        isinstance(owner, Mapping) and owner.get("uid") == uid and owner.get("kind") == kind
        for owner in references
    )


def conflict_message(kind: str, name: str, namespace: str) -> str:
    """The error a Rollout reports when an object it needs exists and belongs to someone else."""
    return (
        f"{kind} {namespace}/{name} exists and is not managed by this Rollout; "
        f"rename the Rollout or delete the {kind} {namespace}/{name} so Sluice can create its own"
    )
