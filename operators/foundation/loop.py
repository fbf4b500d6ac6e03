"""The release loops of Rollouts and Applications, and waking them early when something changes.

Each Rollout and each Application has one loop (a kopf daemon) that
reconciles, then sleeps until its next timed decision. Watch events on the
resource or on what it owns set its wake-up flag, so readiness, commands and
status changes are acted on at once rather than at the next timer tick.

A loop reconciles only what its process may write (its `Gate`): objects of its
shard, while it leads. Every replica runs every loop of its shard; a follower's
loops wait for leadership, so a takeover starts them all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from operators.foundation.cluster import KubeError
from operators.foundation.leadership import ALWAYS_LEADING, Leadership, NotLeading
from operators.foundation.shard import Shard
from operators.foundation.telemetry import RECONCILE_DURATION, RECONCILE_ERRORS


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


@dataclass(frozen=True)
class Gate:
    """What this process may reconcile: the objects of its shard, while it leads."""

    leadership: Leadership = ALWAYS_LEADING
    shard: Shard = field(default_factory=Shard)

    def owns(self, namespace: str, name: str) -> bool:
        return self.shard.owns(namespace, name)


OPEN = Gate()
# Where run_operator puts the Gate in kopf's memo (each object's memo is a copy of the operator's).
GATE_KEY = "gate"


def gate_of(memo: Mapping[str, Any]) -> Gate:
    gate = memo.get(GATE_KEY)
    return gate if isinstance(gate, Gate) else OPEN


async def sleep_until_woken(
    flag: asyncio.Event, stopped: Awaitable[object], timeout: float, *others: Awaitable[object]
) -> None:
    """Return after ``timeout`` seconds, when ``flag`` is set, or when ``stopped`` (or any of
    ``others``) is done."""
    waiters = {asyncio.ensure_future(flag.wait()), asyncio.ensure_future(stopped)}
    waiters |= {asyncio.ensure_future(other) for other in others}
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
    gate: Gate = OPEN,
) -> None:
    """A daemon's body: reconcile, then sleep until the next wanted pass or a wake-up; until gone.

    ``reconcile`` is synchronous (the kubernetes client is), so it runs in a
    worker thread. One loop per object is its only writer: no two handlers
    ever race on its status or on what it owns. Passes run only while ``gate``
    allows: another shard's object is left alone for good, and a follower
    waits for leadership before each pass (a sleep ends when leadership moves).
    """
    if not gate.owns(namespace, name):
        # Another shard's. The daemon stays (idle) rather than being filtered out, so that kopf in
        # every shard wants the same finalizer on the object: a process with no daemon for it
        # would remove the finalizer the owner's kopf adds, and they would take turns forever.
        await stopped.wait()
        return
    leadership = gate.leadership
    flag = wakeups.register(namespace, name)
    RECONCILE_ERRORS.labels(kind)  # at 0 from the first pass: "no errors" is a series, not a gap
    try:
        while not stopped:
            if not leadership.leading():
                await _first(leadership.wait_leading(), stopped.wait())
                flag.clear()  # the first pass as the leader reads everything anyway
                continue
            started = time.monotonic()
            try:
                delay = await asyncio.to_thread(reconcile, namespace, name)
            except NotLeading:  # leadership lost mid-pass: the pass stopped at its next write
                logger.info("%s %s/%s: no longer the leader; this pass stopped", kind, namespace, name)
                continue
            except KubeError as error:
                if error.status != 409:
                    logger.exception("reconciling %s %s/%s failed: %s", kind, namespace, name, error)
                    RECONCILE_ERRORS.labels(kind).inc()
                    delay = error_backoff
                else:
                    # A write decided on an out-of-date copy (or one that lost a race) was refused:
                    # decide again soon, on what is there now.
                    logger.debug("%s %s/%s: %s", kind, namespace, name, error)
                    delay = RETRY_AFTER_CONFLICT
            except Exception as error:  # keep the loop alive; the next pass starts from the cluster again
                logger.exception("reconciling %s %s/%s failed: %s", kind, namespace, name, error)
                RECONCILE_ERRORS.labels(kind).inc()
                delay = error_backoff
            RECONCILE_DURATION.labels(kind).observe(time.monotonic() - started)
            if delay is None:
                return
            await sleep_until_woken(flag, stopped.wait(), delay, leadership.transition().wait())
    finally:
        wakeups.forget(namespace, name)


async def _first(*awaitables: Awaitable[object]) -> None:
    """Return when the first of `awaitables` is done; cancel the others."""
    waiters = {asyncio.ensure_future(awaitable) for awaitable in awaitables}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# After a write lost a race (409), look again soon rather than at the next resync.
RETRY_AFTER_CONFLICT = 1.0
