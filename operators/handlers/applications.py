"""kopf wiring for Applications: translate events into reconciler calls, nothing more.

One daemon per Application renders its Rollouts and reports their health;
watch events on the Application and on the Rollouts it owns (found by their
``sluice.dev/application`` label) only wake it, so a Rollout's progress shows
on its Application at once.
"""

from __future__ import annotations

import kopf

from operators.api import rollout
from operators.api.application import KIND, PLURAL
from operators.api.base import GROUP, VERSION
from operators.application.render import APPLICATION_LABEL
from operators.handlers.wiring import Kind, Owned, register_kind

APPLICATIONS = Kind(
    kind=KIND,
    plural=PLURAL,
    parts=lambda context: (context.applications.reconcile, context.application_wakeups),
    owned=(
        Owned(
            GROUP, VERSION, rollout.PLURAL, rollout.KIND, APPLICATION_LABEL, {APPLICATION_LABEL: kopf.PRESENT}
        ),
    ),
)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Application handlers to ``registry`` (a fresh one per operator run)."""
    register_kind(registry, APPLICATIONS)
