"""What a pass did, as notifications: a pure function of the status before, the status after and
the Events of the pass.

Notifications are derived from what the plan says happened (its Events and its new history
entries) and from phase and condition changes between the status read and the status written, so
each transition is told once: the pass after sees the written status as `before`, and a pass whose
status write fails sends nothing (the shell sends only once the status is written).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from operators.api.notifications import NotificationKind
from operators.api.rollout import Outcome, Phase, RolloutStatus
from operators.foundation.clock import format_time
from operators.notifications.message import FailedMetric, Notification
from operators.rollout.engine import EventNote

# Events of the engine told as they are (the reason names the notification's kind).
_FROM_EVENTS = {
    "ReleaseStarted": NotificationKind.RELEASE_STARTED,
    "Promoted": NotificationKind.PROMOTED,
    "RolledBack": NotificationKind.ROLLED_BACK,
    "Aborted": NotificationKind.ABORTED,
}
_STEPS = {"step", "stage"}
_ROLLBACKS = {NotificationKind.ROLLED_BACK, NotificationKind.ABORTED}


def notifications_of(
    namespace: str,
    name: str,
    before: RolloutStatus,
    after: RolloutStatus,
    events: Sequence[EventNote],
    now: datetime,
    steps: int | None = None,
) -> list[Notification]:
    """The notifications of one pass, in the order things happened."""

    def note(kind: NotificationKind, message: str) -> Notification:
        failed = _failed_metrics(after) if kind in _ROLLBACKS else ()
        return Notification(
            kind=kind,
            namespace=namespace,
            rollout=name,
            message=message,
            time=format_time(now),
            revision=after.canary_revision or after.stable_revision,
            stable_revision=after.stable_revision,
            phase=after.phase.value if after.phase else None,
            step=after.current_step_index,
            steps=steps,
            canary_weight=after.canary_weight,
            failed_metrics=failed,
        )

    found: list[Notification] = []
    for event in events:
        kind = _FROM_EVENTS.get(event.reason)
        if kind is not None:
            found.append(note(kind, event.message))
    started = any(n.kind == NotificationKind.RELEASE_STARTED for n in found)
    # A step done is a history entry "step" (a blue-green stage entered: "stage"); the entries of
    # this pass are the ones `before` had not.
    old = {(e.time, e.action, e.message) for e in before.history}
    for entry in reversed(after.history):  # the history is newest first
        if entry.action in _STEPS and (entry.time, entry.action, entry.message) not in old:
            message = f"{entry.message} (canary {after.canary_weight}%)"
            found.append(note(NotificationKind.STEP_ADVANCED, message))
    rolled_back = any(n.kind in _ROLLBACKS for n in found)
    newly_stalled = _stalled(after) and not _stalled(before)
    if newly_stalled and not rolled_back:
        found.append(note(NotificationKind.STALLED, after.message or "the release cannot go on"))
    elif after.phase == Phase.PAUSED and (before.phase != Phase.PAUSED or started) and not newly_stalled:
        found.append(note(NotificationKind.PAUSED, after.message or "paused"))
    return found


def _stalled(status: RolloutStatus) -> bool:
    return any(c.type == "Stalled" and c.status == "True" for c in status.conditions)


def _failed_metrics(status: RolloutStatus) -> tuple[FailedMetric, ...]:
    """The gating metrics of the last check that did not pass: the failing metric and its value."""
    check = status.analysis.last_check
    if check is None:
        return ()
    return tuple(
        FailedMetric(name=m.name, outcome=m.outcome.value, value=m.value, message=m.message)
        for m in check.metrics
        if m.outcome != Outcome.PASSED and not m.dry_run
    )
