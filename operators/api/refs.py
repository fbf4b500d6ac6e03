"""Identity of a Rollout as the parts that render and own objects need it."""

from __future__ import annotations

from dataclasses import dataclass

from operators.api.base import API_VERSION
from operators.api.rollout import KIND


@dataclass(frozen=True)
class RolloutRef:
    """Which Rollout an object belongs to: enough for names and owner references."""

    name: str
    namespace: str
    uid: str

    @property
    def canary_name(self) -> str:
        return f"{self.name}-canary"

    def owner_reference(self) -> dict[str, object]:
        """The ownerReference that lets Kubernetes garbage-collect what we create."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
