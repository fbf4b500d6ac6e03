"""Delivery off the release's path: a queue and one daemon thread, retries with backoff.

A pass only puts work on the queue (never waits, never blocks: a full queue drops the newest and
says so in the log), so a slow or dead receiver can delay other notifications but never a release.
A request that fails (no connection, a timeout, a 5xx or 429 answer) is sent again after 1s, 2s,
4s...; a 3xx or 4xx answer will not change and is not retried. Redirects are not followed: the
allowed host is the one the request goes to.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from operators.notifications.targets import HttpRequest

logger = logging.getLogger(__name__)

Task = Callable[[], None]
# (status code, or None when no answer came) of one POST.
Post = Callable[[HttpRequest, float], int | None]


def post_with_requests(request: HttpRequest, timeout: float) -> int | None:
    try:
        answer = requests.post(
            request.url, data=request.body, headers=request.headers, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as error:
        logger.info("notification to %s: %s", request.target.kind, type(error).__name__)
        return None
    return answer.status_code


def retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


@dataclass
class Sender:
    post: Post = post_with_requests
    attempts: int = 4
    backoff: float = 1.0  # seconds before the second attempt; doubled for each next one
    timeout: float = 5.0
    capacity: int = 1000
    clock: Callable[[], float] = time.monotonic
    delivered: int = 0  # counters, for logs and tests
    failed: int = 0
    _queue: list[tuple[float, int, Task]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _busy: int = 0

    def submit(self, task: Task) -> bool:
        """Run `task` on the sender's thread soon; False (and a log line) when the queue is full."""
        return self._at(self.clock(), task)

    def send(self, request: HttpRequest) -> bool:
        return self.submit(lambda: self._attempt(request, 1))

    def idle(self) -> bool:
        with self._wake:
            return not self._queue and not self._busy

    def _at(self, when: float, task: Task) -> bool:
        with self._wake:
            if len(self._queue) >= self.capacity:
                logger.error("notification queue full (%d): a notification is dropped", self.capacity)
                return False
            heapq.heappush(self._queue, (when, next(self._order), task))
            if self._thread is None:  # started by the first notification: none in most operators
                self._thread = threading.Thread(target=self._run, name="sluice-notifications", daemon=True)
                self._thread.start()
            self._wake.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue or self._queue[0][0] > self.clock():
                    wait = self._queue[0][0] - self.clock() if self._queue else None
                    self._wake.wait(wait)
                _, _, task = heapq.heappop(self._queue)
                self._busy += 1
            try:
                task()
            except Exception:  # a bug in one delivery must not stop the others
                logger.exception("notification task failed")
            finally:
                with self._wake:
                    self._busy -= 1

    def _attempt(self, request: HttpRequest, attempt: int) -> None:
        status = self.post(request, self.timeout)
        kind = request.target.kind
        if status is not None and 200 <= status < 300:
            self.delivered += 1
            return
        answer = "no answer" if status is None else f"HTTP {status}"
        if retryable(status) and attempt < self.attempts:
            delay = self.backoff * 2 ** (attempt - 1)
            logger.warning("notification to %s: %s; attempt %d in %gs", kind, answer, attempt + 1, delay)
            self._at(self.clock() + delay, lambda: self._attempt(request, attempt + 1))
            return
        self.failed += 1
        logger.error("notification to %s not delivered after %d attempt(s): %s", kind, attempt, answer)
