"""What the operator's handlers share: configuration, clients and wake-up flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.application.reconciler import ApplicationReconciler
from operators.foundation.cache import WatchCache
from operators.foundation.loop import Wakeups
from operators.rollout.reconciler import RolloutReconciler
from operators.sidecarset.reconciler import SidecarSetReconciler
from operators.sidecarset.webhook import PodInjector


@dataclass
class OperatorContext:
    reconciler: RolloutReconciler
    applications: ApplicationReconciler
    sidecarsets: SidecarSetReconciler
    pod_injector: PodInjector
    # What the watches delivered: the reconcilers' reads come from here (via CachedCluster).
    cache: WatchCache = field(default_factory=WatchCache)
    wakeups: Wakeups = field(default_factory=Wakeups)
    sidecarset_wakeups: Wakeups = field(default_factory=Wakeups)
    # Applications and Rollouts may share names: each kind has its own flags.
    application_wakeups: Wakeups = field(default_factory=Wakeups)
    # After an unexpected error, wait this long before trying the Rollout again.
    error_backoff: float = 5.0
