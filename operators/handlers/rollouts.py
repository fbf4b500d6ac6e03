"""kopf wiring for Rollouts: translate events into reconciler calls, nothing more.

One daemon per Rollout runs its release loop; watch events on the Rollout and
on the Deployments it owns (found by their ``sluice.dev/rollout`` label) only
wake that loop. Keeping a single writer per Rollout means no two handlers ever
race on its status or its traffic.
"""

from __future__ import annotations

import kopf

from operators.api.rollout import KIND, PLURAL
from operators.handlers.wiring import Kind, Owned, register_kind
from operators.rollout.ownership import MANAGED_BY, MANAGED_BY_LABEL, ROLLOUT_LABEL
from operators.traffic.registry import PROVIDERS as TRAFFIC_PROVIDERS

_MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}

# Everything a Rollout manages: a change by anyone else (a scale, a deleted Service, a hand-edited
# route) wakes its loop at once, and the loop puts it back within the same second.
ROLLOUTS = Kind(
    kind=KIND,
    plural=PLURAL,
    parts=lambda context: (context.reconciler.reconcile, context.wakeups),
    # Adopted objects (a user's route, Service, Deployment) are handed back before the Rollout goes.
    finalize=lambda context: context.reconciler.hand_back,
    owned=(
        Owned("apps", "v1", "deployments", "Deployment", ROLLOUT_LABEL, _MANAGED, server_side=True),
        Owned("", "v1", "services", "Service", ROLLOUT_LABEL, _MANAGED, server_side=True),
        # The revision history: only ever written by the loop itself, so its events wake nothing.
        Owned(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            ROLLOUT_LABEL,
            _MANAGED,
            server_side=True,
            wakes=False,
        ),
        *(
            Owned(group, version, plural, kind, ROLLOUT_LABEL, _MANAGED, server_side=True)
            for provider in TRAFFIC_PROVIDERS.values()
            for group, version, plural, kind in provider.resources
        ),
    ),
)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Rollout handlers to ``registry`` (a fresh one per operator run)."""
    register_kind(registry, ROLLOUTS)
