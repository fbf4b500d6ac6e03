"""What the operator's handlers share: configuration, clients and wake-up flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.rollout.reconciler import RolloutReconciler
from operators.rollout.wakeups import Wakeups


@dataclass
class OperatorContext:
    reconciler: RolloutReconciler
    wakeups: Wakeups = field(default_factory=Wakeups)
    # After an unexpected error, wait this long before trying the Rollout again.
    error_backoff: float = 5.0
