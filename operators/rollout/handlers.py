"""kopf wiring for Rollouts: translate events into reconciler calls, nothing more.

One daemon per Rollout runs its release loop; watch events on the Rollout and
on the Deployments it owns only wake that loop. Keeping a single writer per
Rollout means no two handlers ever race on its status or its traffic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from operators.api.base import GROUP, VERSION
from operators.api.rollout import PLURAL
from operators.context import OperatorContext
from operators.rollout.ownership import MANAGED_BY, MANAGED_BY_LABEL, ROLLOUT_LABEL
from operators.rollout.wakeups import sleep_until_woken


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Rollout handlers to ``registry`` (a fresh one per operator run)."""
    kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)(release_loop)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(rollout_changed)
    kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=registry)(
        deployment_changed
    )


async def release_loop(
    *, name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace is not None  # Rollouts are namespaced
    context: OperatorContext = memo["context"]
    flag = context.wakeups.register(namespace, name)
    try:
        while not stopped:
            try:
                delay = await asyncio.to_thread(context.reconciler.reconcile, namespace, name)
            except Exception as error:  # keep the loop alive; the next pass starts from the cluster again
                logger.exception("reconciling Rollout %s/%s failed: %s", namespace, name, error)
                delay = context.error_backoff
            if delay is None:
                return
            await sleep_until_woken(flag, stopped.wait(), delay)
    finally:
        context.wakeups.forget(namespace, name)


async def rollout_changed(*, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    memo["context"].wakeups.wake(namespace or "", name)


async def deployment_changed(*, labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any) -> None:
    owner = labels.get(ROLLOUT_LABEL)
    if owner:
        memo["context"].wakeups.wake(namespace or "", owner)
