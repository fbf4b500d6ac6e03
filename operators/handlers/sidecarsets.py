"""kopf wiring for SidecarSets: a status loop per SidecarSet, wake-ups, and the pod webhook.

- A SidecarSet change wakes every Rollout (its effective template may change)
  and the SidecarSet's own loop.
- A Rollout or pod change wakes every SidecarSet loop (counts, the next
  Rollout's turn, pods back to ready during an in-place update).
- Each loop names the Rollouts whose turn has come; they are woken at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from operators.api.base import API_VERSION, GROUP, VERSION
from operators.api.rollout import PLURAL as ROLLOUTS
from operators.api.sidecarset import KIND, PLURAL
from operators.foundation.cache import Watched
from operators.foundation.loop import gate_of, reconcile_loop
from operators.handlers.context import OperatorContext
from operators.handlers.wiring import observe
from operators.sidecarset.webhook import INJECTED_LABEL, WEBHOOK_ID, mutate_pod

# What the SidecarSet handlers' watches deliver into the cache.
WATCHED = (Watched(API_VERSION, KIND, cluster_scoped=True), Watched("v1", "Namespace", cluster_scoped=True))
# The pods watch's server-side selector: kopf's own filter alone would still receive every pod.
POD_SELECTOR = f"{INJECTED_LABEL}=true"

# A burst of pod or Rollout events coalesces into one pass per this many seconds.
MIN_PASS_INTERVAL = 1.0


def register(registry: kopf.OperatorRegistry, *, webhook: bool) -> None:
    """Add the SidecarSet handlers; `webhook` also adds the Pod CREATE admission handler."""
    kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)(status_loop)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(sidecarset_changed)
    kopf.on.event(GROUP, VERSION, ROLLOUTS, registry=registry)(something_changed)
    # Only injected pods are sent at all (the server-side selector in `POD_SELECTOR`).
    kopf.on.event("v1", "pods", labels={INJECTED_LABEL: "true"}, registry=registry)(something_changed)
    # Namespaces' labels decide which SidecarSets apply: read from the cache, like the rest.
    kopf.on.event("v1", "namespaces", registry=registry)(namespace_changed)
    if webhook:
        kopf.on.mutate(
            "v1",
            "pods",
            id=WEBHOOK_ID,
            operations=["CREATE"],
            ignore_failures=True,
            side_effects=False,
            registry=registry,
        )(mutate_pod)


async def status_loop(
    *, name: str, stopped: kopf.DaemonStopped, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    context: OperatorContext = memo["context"]
    loop = asyncio.get_running_loop()
    last_pass = [0.0]

    def reconcile(_namespace: str, name: str) -> float | None:
        # Runs in a worker thread: coalesce bursts of events, and wake Rollouts on the loop's thread.
        time.sleep(max(0.0, last_pass[0] + MIN_PASS_INTERVAL - time.monotonic()))
        last_pass[0] = time.monotonic()
        result = context.sidecarsets.reconcile(name)
        for namespace, rollout in result.wake:
            loop.call_soon_threadsafe(context.wakeups.wake, namespace, rollout)
        return result.requeue_after

    await reconcile_loop(
        KIND,
        reconcile,
        context.sidecarset_wakeups,
        "",
        name,
        stopped,
        logger,
        context.error_backoff,
        gate=gate_of(memo),
    )


async def sidecarset_changed(*, name: str, event: Any, memo: Any, **_: Any) -> None:
    context: OperatorContext = memo["context"]
    observe(context, event)
    context.sidecarset_wakeups.wake("", name)
    context.wakeups.wake_all()


async def namespace_changed(*, event: Any, memo: Any, **_: Any) -> None:
    observe(memo["context"], event)


async def something_changed(*, memo: Any, **_: Any) -> None:
    memo["context"].sidecarset_wakeups.wake_all()
