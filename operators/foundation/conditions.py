"""Kubernetes-style conditions, merged so that lastTransitionTime moves only when a truth flips."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from operators.foundation.clock import format_time
from operators.foundation.model import Condition


def merge_conditions(
    previous: Sequence[Condition],
    wanted: dict[str, bool],
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Conditions with the given truth values, keeping lastTransitionTime where nothing flipped."""
    before = {c.type: c for c in previous}
    result = []
    for kind, truth in wanted.items():
        status = "True" if truth else "False"
        old = before.get(kind)
        since = old.last_transition_time if old and old.status == status else format_time(now)
        result.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return result
