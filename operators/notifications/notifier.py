"""The shell's one call: `Notifier.notify(...)` after a pass's status is written.

Everything that may wait (reading the Secrets, sending) runs on the sender's thread. A Rollout's
targets must be on the operator's `--notification-hosts`: whoever may create a Rollout writes its
Secret, and the operator posts from inside the cluster (as with metric hosts, no request goes to
a host it was not told to trust). The operator-wide Secret's targets are trusted as they are:
whoever runs the operator wrote that Secret, as they chose --prometheus-url.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from operators.metrics.base import ProviderError
from operators.metrics.credentials import SecretReader
from operators.metrics.hosts import AllowedHosts, HostPattern, endpoint_of
from operators.notifications.config import ConfigError, NotificationConfig, parse_config
from operators.notifications.message import Notification
from operators.notifications.sender import Sender
from operators.notifications.targets import request_for

logger = logging.getLogger(__name__)

HOSTS_FLAG = "--notification-hosts"
SECRET_FLAG = "--notifications-secret"
# Told on the Rollout (a Warning Event) when its notifications cannot be sent as configured.
PROBLEM_REASON = "NotificationRefused"

Report = Callable[[str], None]


def parse_secret_name(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` of --notifications-secret; raises ValueError saying what is wrong."""
    namespace, _, name = text.strip().partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"{SECRET_FLAG} {text!r} must be NAMESPACE/NAME")
    return namespace, name


@dataclass
class Notifier:
    secrets: SecretReader | None
    allowed: AllowedHosts = field(default_factory=AllowedHosts)
    # --notifications-secret: every Rollout's notifications go to its targets too.
    operator_secret: tuple[str, str] | None = None
    sender: Sender = field(default_factory=Sender)

    def notify(
        self,
        namespace: str,
        secret_name: str | None,
        notifications: Sequence[Notification],
        report: Report,
    ) -> None:
        """Queue the delivery of `notifications` to the Rollout's targets (its Secret `secret_name`
        in `namespace`) and the operator-wide ones; returns at once."""
        if not notifications or (secret_name is None and self.operator_secret is None):
            return
        found = list(notifications)
        self.sender.submit(lambda: self._deliver(namespace, secret_name, found, report))

    def _deliver(
        self, namespace: str, secret_name: str | None, notifications: list[Notification], report: Report
    ) -> None:
        if self.operator_secret is not None:
            config = self._config(*self.operator_secret, report=None)
            if config is not None:
                self._send(config, notifications, report=None)
        if secret_name is not None:
            config = self._config(namespace, secret_name, report=report)
            if config is not None:
                self._send(config, notifications, report=report, checked=True)

    def _config(self, namespace: str, name: str, report: Report | None) -> NotificationConfig | None:
        source = f'notification Secret "{name}" (namespace {namespace})'
        try:
            if self.secrets is None:
                raise ConfigError(f"cannot read {source}: no Secret reader")
            data = self.secrets.read(namespace, name)
            if data is None:
                raise ConfigError(f"{source} does not exist")
            return parse_config(data, source)
        except (ConfigError, ProviderError) as error:
            self._problem(str(error), report)
            return None

    def _send(
        self,
        config: NotificationConfig,
        notifications: list[Notification],
        report: Report | None,
        checked: bool = False,
    ) -> None:
        for target in config.targets:
            if checked and not self.allowed.allows(target.url):
                self._problem(self._refusal(target.kind, target.url), report)
                continue
            for notification in notifications:
                if config.wants(notification.kind):
                    self.sender.send(request_for(target, notification))

    def _refusal(self, kind: str, url: str) -> str:
        """Why a target is refused: names its host (not the URL, a credential) and the flag."""
        endpoint = endpoint_of(url)
        host = str(HostPattern(*endpoint)) if endpoint else "?"
        allowed = ", ".join(str(p) for p in self.allowed.patterns) or "none"
        return (
            f"notification target {kind} at host {host} is not an allowed notification host "
            f"(allowed: {allowed}); run the operator with {HOSTS_FLAG} {host} to allow it"
        )

    def _problem(self, message: str, report: Report | None) -> None:
        logger.warning("notifications: %s", message)
        if report is not None:
            report(message)
