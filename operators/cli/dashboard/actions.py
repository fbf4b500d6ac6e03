"""The dashboard's buttons: the same writes as the CLI verbs, done with the user's credentials.

promote, abort and retry set the command annotations `sluice promote|abort|retry` set
(operators/cli/release.py; the operator acts once per distinct value); pause and resume set
spec.paused, as `kubectl patch` would.
"""

from __future__ import annotations

import time
from typing import Any

from operators.rollout.commands import Command

ACTIONS = ("promote", "abort", "retry", "pause", "resume")


class UnknownAction(ValueError):
    pass


def action_patch(action: str, value: str | None = None) -> dict[str, Any]:
    """The merge patch of the Rollout that asks for `action`. `value` marks a command as new
    (a fresh timestamp by default, as the CLI writes)."""
    if action == "pause":
        return {"spec": {"paused": True}}
    if action == "resume":
        return {"spec": {"paused": False}}
    if action not in ACTIONS:
        raise UnknownAction(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    command = Command(action)
    return {"metadata": {"annotations": {command.annotation: value or str(time.time_ns())}}}
