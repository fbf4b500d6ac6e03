"""Analysis beside the release loop, never in it.

A check takes as long as its slowest query (up to that query's timeout). Run
inside a reconcile pass, it would hold that Rollout's loop for as long: an
abort, a deleted Deployment or a drifted route would wait for a hung
Prometheus. So the pass that finds a check due only starts it (`start`
returns a future, `check.start_check`) and goes on; the pass after it finishes
(woken by `on_done`) collects its result. At most one check per Rollout is in
flight. Nothing here holds a thread while a check waits: the queries run in
the analysis' query pool or the fan-in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from operators.api.rollout import Check

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class BackgroundChecks:
    def __init__(self) -> None:
        self._running: dict[Key, Future[Check]] = {}
        self._lock = threading.Lock()
        self._closed = False
        # Called (from the thread that finished it) when a check finishes: the operator wakes
        # the Rollout's loop.
        self.on_done: Callable[[str, str], None] = lambda namespace, name: None

    def collect_or_start(self, key: Key, due: bool, start: Callable[[], Future[Check]]) -> Check | None:
        """A finished check to count now; else start one when `due`. None while one is running."""
        with self._lock:
            future = self._running.get(key)
            if future is not None:
                if not future.done():
                    return None
                del self._running[key]
                return _result(key, future)
            if not due or self._closed:
                return None
            # Reserved before starting, outside the lock: starting renders the queries, and
            # other Rollouts' passes must not wait for that.
            slot: Future[Check] = Future()
            self._running[key] = slot
        try:
            started = start()
        except Exception as err:  # start_check never raises; a bug there is logged when collected
            slot.set_exception(err)
        else:
            started.add_done_callback(lambda done: _copy(done, slot))
        slot.add_done_callback(lambda _: self.on_done(*key))
        return None

    def running(self, key: Key) -> bool:
        with self._lock:
            return key in self._running

    def forget(self, key: Key) -> None:
        """The Rollout is gone: drop its check (a running one finishes unheard)."""
        with self._lock:
            self._running.pop(key, None)

    def close(self) -> None:
        """Start no more checks; those in flight are dropped (the fan-in and pool end theirs)."""
        with self._lock:
            self._closed = True
            running, self._running = list(self._running.values()), {}
        for future in running:
            future.cancel()


def _copy(source: Future[Check], target: Future[Check]) -> None:
    try:
        if source.cancelled():
            target.cancel()
        elif (err := source.exception()) is not None:
            target.set_exception(err)
        else:
            target.set_result(source.result())
    except InvalidStateError:  # cancelled by close() meanwhile: nobody is listening any more
        pass


def _result(key: Key, future: Future[Check]) -> Check | None:
    try:
        return future.result()
    except Exception:  # start_check never fails; a bug there must not stop the release loop
        logger.exception("analysis check of Rollout %s/%s failed", *key)
        return None
