"""Annotation commands: plain `kubectl annotate` is enough to drive a release.

Each command is acted on once per distinct value: the last value handled is
kept in ``status.handledCommands``, so re-applying the same manifest (as GitOps
tools do) never repeats an old command, and a new value always counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

ANNOTATION_PREFIX = "sluice.dev/"


class Command(StrEnum):
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"
    RESTART = "restart"

    @property
    def annotation(self) -> str:
        return ANNOTATION_PREFIX + self.value


@dataclass(frozen=True)
class PendingCommand:
    command: Command
    value: str


def pending_commands(annotations: Mapping[str, str], handled: Mapping[str, str]) -> list[PendingCommand]:
    """Commands whose annotation carries a value not acted on yet, in a fixed order.

    The order puts abort first: when a user both aborts and promotes, stopping
    is the safe reading.
    """
    order = [Command.ABORT, Command.RETRY, Command.PROMOTE_FULL, Command.PROMOTE, Command.RESTART]
    pending = []
    for command in order:
        value = annotations.get(command.annotation)
        if value is not None and handled.get(command.value) != value:
            pending.append(PendingCommand(command, str(value)))
    return pending
