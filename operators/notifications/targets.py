"""Each target's HTTP request for a notification: Slack, Microsoft Teams, a JSON webhook, CloudEvents.

Slack and Teams are a JSON body each, built here: no chat library (see the docs on why not
apprise). CloudEvents requests come from the CloudEvents SDK, so that attributes and headers
follow the HTTP binding exactly, in structured or binary mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from operators.notifications.config import Target
from operators.notifications.message import Notification

JSON = "application/json"
CLOUDEVENT_TYPE_PREFIX = "dev.sluice.rollout."


@dataclass(frozen=True)
class HttpRequest:
    """A POST ready to send (and to send again, unchanged, when retried)."""

    target: Target
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return self.target.url


def request_for(target: Target, notification: Notification) -> HttpRequest:
    if target.kind == "slack":
        return _json(target, slack_payload(notification))
    if target.kind == "teams":
        return _json(target, teams_payload(notification))
    if target.kind == "webhook":
        return _json(target, notification.to_json())
    event = cloud_event(notification)
    message = to_binary_event(event) if target.cloudevents_mode == "binary" else to_structured_event(event)
    return HttpRequest(target, dict(message.headers), message.body)


def _json(target: Target, payload: dict[str, Any]) -> HttpRequest:
    return HttpRequest(target, {"Content-Type": JSON}, json.dumps(payload).encode())


def facts(notification: Notification) -> list[tuple[str, str]]:
    """The (label, value) lines every chat message shows under its text."""
    n = notification
    lines = [("Revision", n.revision or "-"), ("Stable", n.stable_revision or "-"), ("Phase", n.phase or "-")]
    if n.steps:
        lines.append(("Step", f"{n.step or 0}/{n.steps}"))
    lines.append(("Canary weight", f"{n.canary_weight}%"))
    for metric in n.failed_metrics:
        value = "n/a" if metric.value is None else f"{metric.value:.6g}"
        detail = f" ({metric.message})" if metric.message else ""
        lines.append((f"Metric {metric.name}", f"{value} {metric.outcome}{detail}"))
    return lines


def slack_payload(notification: Notification) -> dict[str, Any]:
    """An incoming webhook's message: `text` (the notification's fallback), and Block Kit blocks."""
    icon = ":warning:" if notification.is_warning else ":white_check_mark:"
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in facts(notification)]
    return {
        "text": f"{notification.title}: {notification.message}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": notification.title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {notification.message}"}},
            # Slack takes at most 10 fields in a section.
            *(
                {"type": "section", "fields": fields[start : start + 10]}
                for start in range(0, len(fields), 10)
            ),
        ],
    }


def teams_payload(notification: Notification) -> dict[str, Any]:
    """An Adaptive Card message, as Teams workflows ("When a Teams webhook request is received")
    and the older incoming webhooks both accept."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": notification.title,
                "weight": "Bolder",
                "size": "Medium",
                "color": "Attention" if notification.is_warning else "Good",
            },
            {"type": "TextBlock", "text": notification.message, "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": value} for label, value in facts(notification)],
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def cloud_event(notification: Notification) -> CloudEvent:
    """type `dev.sluice.rollout.rolledback` (the kind, lower case), the Rollout as source and subject."""
    return CloudEvent(
        attributes={
            "type": CLOUDEVENT_TYPE_PREFIX + notification.kind.value.lower(),
            "source": (
                f"/apis/sluice.dev/v1alpha1/namespaces/{notification.namespace}/rollouts/{notification.rollout}"
            ),
            "subject": notification.rollout,
            "datacontenttype": JSON,
        },
        data=notification.to_json(),
    )
