"""kopf wiring for MetricTemplates and ClusterMetricTemplates: watched into the cache, nothing more.

The Rollouts read their templates from the watch cache when a check starts, so
a template needs no loop of its own. A change wakes every Rollout: one held for
want of a template (`unknown template`) goes on at once, and the others find
nothing to do (a pass from the cache, no request). Templates change rarely.
"""

from __future__ import annotations

from typing import Any

import kopf

from operators.api.base import API_VERSION, GROUP, VERSION
from operators.api.metrictemplate import CLUSTER_KIND, CLUSTER_PLURAL, KIND, PLURAL
from operators.foundation.cache import Watched
from operators.handlers.context import OperatorContext
from operators.handlers.wiring import observe

# What these handlers' watches deliver into the cache.
WATCHED = (Watched(API_VERSION, KIND), Watched(API_VERSION, CLUSTER_KIND, cluster_scoped=True))


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the template watches to ``registry`` (a fresh one per operator run)."""
    for plural in (PLURAL, CLUSTER_PLURAL):
        kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-changed", registry=registry)(template_changed)


async def template_changed(*, event: Any, memo: Any, **_: Any) -> None:
    context: OperatorContext = memo["context"]
    observe(context, event)
    context.wakeups.wake_all()
