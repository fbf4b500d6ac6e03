"""The release loops of Rollouts and Applications, and waking them early when something changes.

Each Rollout and each Application has one loop (a kopf daemon) that
reconciles, then sleeps until its next timed decision. Watch events on the
resource or on what it owns set its wake-up flag, so readiness, commands and
status changes are acted on at once rather than at the next timer tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import kopf


class Wakeups:
    def __init__(self) -> None:
        self._flags: dict[tuple[str, str], asyncio.Event] = {}

    def register(self, namespace: str, name: str) -> asyncio.Event:
        return self._flags.setdefault((namespace, name), asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        self._flags.pop((namespace, name), None)

    def wake(self, namespace: str, name: str) -> None:
        flag = self._flags.get((namespace, name))
        if flag is not None:
            flag.set()

    def wake_all(self) -> None:
        """Something every loop depends on changed (a SidecarSet, for Rollouts)."""
        for flag in self._flags.values():
            flag.set()


async def sleep_until_woken(flag: asyncio.Event, stopped: Awaitable[object], timeout: float) -> None:
    """Return after ``timeout`` seconds, when ``flag`` is set, or when ``stopped`` fires."""
    waiters = {asyncio.ensure_future(flag.wait()), asyncio.ensure_future(stopped)}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    flag.clear()


# One reconciliation pass: seconds until the next wanted pass, or None once the object is gone.
Reconcile = Callable[[str, str], float | None]


async def reconcile_loop(
    kind: str,
    reconcile: Reconcile,
    wakeups: Wakeups,
    namespace: str,
    name: str,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    error_backoff: float,
) -> None:
    """A daemon's body: reconcile, then sleep until the next wanted pass or a wake-up; until gone.

    ``reconcile`` is synchronous (the kubernetes client is), so it runs in a
    worker thread. One loop per object is its only writer: no two handlers
    ever race on its status or on what it owns.
    """
    flag = wakeups.register(namespace, name)
    try:
        while not stopped:
            try:
                delay = await asyncio.to_thread(reconcile, namespace, name)
            except Exception as error:  # keep the loop alive; the next pass starts from the cluster again
                logger.exception("reconciling %s %s/%s failed: %s", kind, namespace, name, error)
                delay = error_backoff
            if delay is None:
                return
            await sleep_until_woken(flag, stopped.wait(), delay)
    finally:
        wakeups.forget(namespace, name)


# After a write lost a race (409), look again soon rather than at the next resync.
RETRY_AFTER_CONFLICT = 1.0
