"""Identity of a Rollout or an Application, as the parts that render and own objects need it."""

from __future__ import annotations

from dataclasses import dataclass

from operators.api import application, rollout
from operators.api.base import API_VERSION


def controller_reference(kind: str, name: str, uid: str) -> dict[str, object]:
    """The ownerReference that lets Kubernetes garbage-collect what a Sluice resource creates."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


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
        return controller_reference(rollout.KIND, self.name, self.uid)


@dataclass(frozen=True)
class ApplicationRef:
    """Which Application a Rollout belongs to."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, object]:
        return controller_reference(application.KIND, self.name, self.uid)
