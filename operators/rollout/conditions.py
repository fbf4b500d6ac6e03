"""kstatus conditions, as Argo CD, Flux and `kubectl wait` read them.

``Ready`` says the Rollout is healthy at the generation observed;
``Reconciling`` that work is under way; ``Stalled`` that it cannot go on
without a person (a bad spec, a conflict, a rollback, or a route its Gateway
refuses: the release then holds, and goes on by itself once it is accepted).
``Progressing`` and ``Degraded`` mirror the phase for people used to Deployments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from operators.api.base import Condition
from operators.api.rollout import Phase
from operators.foundation.conditions import merge_conditions

RELEASING = {Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED}
STUCK = {Phase.DEGRADED, Phase.ABORTED}


def rollout_conditions(
    phase: Phase,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Condition],
    now: datetime,
    stalled: bool = False,
) -> list[Condition]:
    """The five conditions for a phase; ``stalled`` forces Stalled (bad spec, conflicts)."""
    is_stalled = stalled or phase in STUCK
    wanted = {
        "Ready": phase == Phase.HEALTHY and not stalled,
        "Reconciling": phase in RELEASING and not stalled,
        "Stalled": is_stalled,
        "Progressing": phase in {Phase.INITIALIZING, Phase.PROGRESSING} and not stalled,
        "Degraded": is_stalled,
    }
    return merge_conditions(previous, wanted, reason, message, generation, now)
