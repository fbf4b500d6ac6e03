"""Analysis beside the release loop, never in it.

A check takes as long as its slowest query (up to that query's timeout). Run
inside a reconcile pass, it would hold that Rollout's loop for as long: an
abort, a deleted Deployment or a drifted route would wait for a hung
Prometheus. So a check runs in a pool of its own: the pass that finds one due
starts it and goes on; the pass after it finishes (woken by `on_done`)
collects its result. At most one check per Rollout is in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from operators.api.rollout import Check

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name

# Checks are mostly waiting on the network: many may be in flight on few cores.
DEFAULT_WORKERS = 32


class BackgroundChecks:
    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sluice-analysis")
        self._running: dict[Key, Future[Check]] = {}
        self._lock = threading.Lock()
        # Called (from the pool's thread) when a check finishes: the operator wakes the Rollout's loop.
        self.on_done: Callable[[str, str], None] = lambda namespace, name: None

    def collect_or_start(self, key: Key, due: bool, start: Callable[[], Check]) -> Check | None:
        """A finished check to count now; else start one when `due`. None while one is running."""
        with self._lock:
            future = self._running.get(key)
            if future is not None:
                if not future.done():
                    return None
                del self._running[key]
                return _result(key, future)
            if not due:
                return None
            future = self._pool.submit(start)
            self._running[key] = future
        future.add_done_callback(lambda _: self.on_done(*key))
        return None

    def running(self, key: Key) -> bool:
        with self._lock:
            return key in self._running

    def forget(self, key: Key) -> None:
        """The Rollout is gone: drop its check (a running one finishes unheard)."""
        with self._lock:
            self._running.pop(key, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _result(key: Key, future: Future[Check]) -> Check | None:
    try:
        return future.result()
    except Exception:  # run_check never raises; a bug there must not stop the release loop
        logger.exception("analysis check of Rollout %s/%s failed", *key)
        return None
