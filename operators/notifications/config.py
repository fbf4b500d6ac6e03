"""A notification Secret's data, read as targets.

The same format for a Rollout's Secret (`spec.notifications.secretRef`) and the operator-wide one
(`--notifications-secret NAMESPACE/NAME`), so `kubectl create secret generic` makes either::

    kubectl create secret generic release-alerts \\
      --from-literal=slack=https://hooks.slack.com/services/T000/B000/XXXX \\
      --from-literal=events=RolledBack,Aborted,Stalled

Keys: `slack`, `teams`, `webhook`, `cloudevents` (a URL each; at least one), `events` (the kinds to
send, comma-separated; default all) and `cloudeventsMode` (`structured`, the default, or `binary`).
Messages name the Secret and key, never a value: the URLs are credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from operators.api.notifications import NotificationKind

TargetKind = Literal["slack", "teams", "webhook", "cloudevents"]
TARGET_KEYS: tuple[TargetKind, ...] = ("slack", "teams", "webhook", "cloudevents")
EVENTS_KEY = "events"
CLOUDEVENTS_MODE_KEY = "cloudeventsMode"
CloudEventsMode = Literal["structured", "binary"]


class ConfigError(ValueError):
    """The Secret cannot be used; the message says which key is wrong and how."""


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    url: str
    cloudevents_mode: CloudEventsMode = "structured"

    def __repr__(self) -> str:  # the URL is a credential: never in a log line
        return f"Target({self.kind})"


@dataclass(frozen=True)
class NotificationConfig:
    targets: tuple[Target, ...]
    events: frozenset[NotificationKind] | None = None  # None: every kind

    def wants(self, kind: NotificationKind) -> bool:
        return self.events is None or kind in self.events


def parse_config(data: Mapping[str, bytes], source: str) -> NotificationConfig:
    """The targets of a Secret's decoded data; `source` names the Secret in messages."""
    known = {*TARGET_KEYS, EVENTS_KEY, CLOUDEVENTS_MODE_KEY}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{source} has unknown key(s) {', '.join(unknown)}; the keys are {', '.join(sorted(known))}"
        )
    mode_text = _text(data, CLOUDEVENTS_MODE_KEY, source) or "structured"
    if mode_text not in ("structured", "binary"):
        raise ConfigError(f'key "{CLOUDEVENTS_MODE_KEY}" of {source} must be structured or binary')
    mode: CloudEventsMode = "binary" if mode_text == "binary" else "structured"
    targets = []
    for kind in TARGET_KEYS:
        url = _text(data, kind, source)
        if url:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f'key "{kind}" of {source} is not an http:// or https:// URL')
            targets.append(Target(kind, url, mode))
    if not targets:
        raise ConfigError(f"{source} names no target: set one of the keys {', '.join(TARGET_KEYS)}")
    return NotificationConfig(tuple(targets), _events(_text(data, EVENTS_KEY, source), source))


def _events(text: str | None, source: str) -> frozenset[NotificationKind] | None:
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = {kind.value: kind for kind in NotificationKind}
    wrong = [name for name in names if name not in valid]
    if wrong:
        raise ConfigError(
            f'key "{EVENTS_KEY}" of {source} names unknown kind(s) {", ".join(wrong)}; '
            f"the kinds are {', '.join(valid)}"
        )
    return frozenset(valid[name] for name in names)


def _text(data: Mapping[str, bytes], key: str, source: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f'key "{key}" of {source} is not UTF-8 text') from None
    if any(c in text for c in "\r\n\0"):
        raise ConfigError(f'key "{key}" of {source} spans lines')
    return text
