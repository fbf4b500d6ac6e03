"""Who hears about a Rollout's releases: `spec.notifications`, and the kinds of notification.

The targets' addresses are credentials (a Slack or Teams webhook URL lets anyone post), so the
spec only names a Secret in the Rollout's namespace; operators/notifications/config.py reads it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from operators.api.base import ApiModel


class NotificationKind(StrEnum):
    """What happened to a release; the Secret's `events` key may pick some."""

    RELEASE_STARTED = "ReleaseStarted"
    STEP_ADVANCED = "StepAdvanced"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    STALLED = "Stalled"


class NotificationSecretRef(ApiModel):
    name: str = Field(min_length=1, description="A Secret in the Rollout's namespace.")


class Notifications(ApiModel):
    secret_ref: NotificationSecretRef = Field(
        description="The Secret with the targets: keys `slack`, `teams`, `webhook`, `cloudevents` "
        "(each a URL whose host must be one of the operator's --notification-hosts), optional "
        "`events` (comma-separated kinds: ReleaseStarted, StepAdvanced, Paused, Promoted, "
        "RolledBack, Aborted, Stalled; default all) and `cloudeventsMode` (structured or binary)."
    )
