"""Waking a Rollout's release loop early when something it waits for changes.

Each Rollout has one loop (a kopf daemon) that sleeps until its next timed
decision. Watch events on the Rollout or on its Deployments set its wake-up
flag, so readiness and commands are acted on at once rather than at the
next timer tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


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


async def sleep_until_woken(flag: asyncio.Event, stopped: Awaitable[object], timeout: float) -> None:
    """Return after ``timeout`` seconds, when ``flag`` is set, or when ``stopped`` fires."""
    waiters = {asyncio.ensure_future(flag.wait()), asyncio.ensure_future(stopped)}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    flag.clear()
