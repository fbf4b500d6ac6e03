"""A notification: one thing that happened to one release, in the terms every target shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.api.notifications import NotificationKind

# The kinds a person should look at: targets that colour their messages show these as warnings.
WARNINGS = frozenset({NotificationKind.ROLLED_BACK, NotificationKind.ABORTED, NotificationKind.STALLED})


@dataclass(frozen=True)
class FailedMetric:
    """A metric of the last analysis check that did not pass: why a release was rolled back."""

    name: str
    outcome: str
    value: float | None
    message: str = ""


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    namespace: str
    rollout: str
    message: str
    time: str
    revision: str | None = None
    stable_revision: str | None = None
    phase: str | None = None
    step: int | None = None  # steps done so far, of `steps`
    steps: int | None = None
    canary_weight: int = 0
    failed_metrics: tuple[FailedMetric, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        """`Rollout shop/web: RolledBack`: a chat message's first line."""
        return f"Rollout {self.namespace}/{self.rollout}: {self.kind.value}"

    @property
    def is_warning(self) -> bool:
        return self.kind in WARNINGS

    def to_json(self) -> dict[str, Any]:
        """The generic webhook's body and the CloudEvent's data."""
        return {
            "kind": self.kind.value,
            "namespace": self.namespace,
            "rollout": self.rollout,
            "message": self.message,
            "time": self.time,
            "revision": self.revision,
            "stableRevision": self.stable_revision,
            "phase": self.phase,
            "step": self.step,
            "steps": self.steps,
            "canaryWeight": self.canary_weight,
            "failedMetrics": [
                {"name": m.name, "outcome": m.outcome, "value": m.value, "message": m.message}
                for m in self.failed_metrics
            ],
        }
