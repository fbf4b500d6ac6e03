"""Query fan-in: one grouped query answers the same metric for many Rollouts.

When many Rollouts use the same built-in template against the same
Prometheus, querying once per Rollout makes Prometheus' load grow with the
number of Rollouts. Instead, the requests for one *group* (same provider,
address, provider block, timeout, and grouped query text: so the same
template, interval and args) that arrive within a short gather window are
sent as ONE grouped query (`templates.GroupedQuery`), and each requester gets
the value of its own series: None when its series is absent, which is "no
data", exactly as its own query would have said. Load then grows with the
number of templates in use (at most one query per group per window), not with
the number of Rollouts.

A batch is evaluated at one time T (Prometheus' ``time`` parameter): the later
of the moment it is sent and every member's due time, so no check's window
ends earlier than it asked for, and every member of a batch is judged on the
same instant.

Nobody waits in a thread: a requester gets a `Future`, resolved from the query
pool (`pool.query_pool`) when the batch's answer comes back; one thread per
operator only closes the windows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from operators.analysis.pool import query_pool
from operators.analysis.templates import GroupedQuery
from operators.metrics.base import GroupingProvider, ProviderError

logger = logging.getLogger(__name__)

# Long enough to gather the checks of Rollouts released together (their passes run
# one after another), short beside any analysis interval (1s at least).
DEFAULT_WINDOW = 0.5

Answer = Future[float | None]


@dataclass(frozen=True)
class GroupKey:
    """What requests must share to be answered by one query."""

    provider: str  # the provider's field, e.g. "prometheus"
    address: str
    config: str  # the metric's provider block, as JSON
    query: str  # the grouped query, with the batch's label values still placeholders
    timeout: float


@dataclass
class _Member:
    series: tuple[str, ...]
    due: float  # Unix seconds
    answer: Answer


@dataclass
class _Batch:
    key: GroupKey
    provider: GroupingProvider
    config: object
    grouped: GroupedQuery
    deadline: float  # on the monotonic clock
    members: list[_Member] = field(default_factory=list)


def _config_key(config: object) -> str:
    # A block bound to credentials (`metrics.credentials.Bound`) keys by their digest: metrics
    # with other credentials or headers are never answered by one query.
    group_key = getattr(config, "group_key", None)
    if callable(group_key):
        return str(group_key())
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        return json.dumps(dump(mode="json"), sort_keys=True)
    return repr(config)


class QueryFanIn:
    """Coalesces grouped queries; thread-safe. One per operator (`MetricSources.fanin`).

    `clock` gives evaluation times (Unix seconds), `monotonic` measures windows;
    with `background=False` no thread closes windows and the caller calls
    `flush_due()` or `flush()` (unit tests, with their own clocks and executor).
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.window = window
        self._executor = executor
        self._clock = clock
        self._monotonic = monotonic
        self._background = background
        self._open: dict[GroupKey, _Batch] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._batches_sent = 0
        self._requests = 0

    @property
    def batches_sent(self) -> int:
        """Grouped queries sent so far."""
        with self._cond:
            return self._batches_sent

    @property
    def requests(self) -> int:
        """Requests answered (or to be answered) by them."""
        with self._cond:
            return self._requests

    def request(
        self,
        provider: GroupingProvider,
        config: Any,
        address: str,
        grouped: GroupedQuery,
        timeout: float,
        due: float,
    ) -> Answer:
        """The value of `grouped.series` in its group's next batch; None when that series is absent.

        The future fails with the provider's ProviderError when the batch's query has no answer.
        """
        key = GroupKey(provider.field, address, _config_key(config), grouped.text, timeout)
        answer: Answer = Future()
        with self._cond:
            if self._closed:
                answer.set_exception(ProviderError("the operator is stopping"))
                return answer
            batch = self._open.get(key)
            if batch is None:
                batch = _Batch(key, provider, config, grouped, self._monotonic() + self.window)
                self._open[key] = batch
                self._cond.notify()
            batch.members.append(_Member(grouped.series, due, answer))
            self._requests += 1
            if self._background and self._thread is None:
                # Started on first use, so that building an operator's sources starts no thread.
                self._thread = threading.Thread(target=self._run, name="sluice-fanin", daemon=True)
                self._thread.start()
        return answer

    def flush_due(self) -> float | None:
        """Send every batch whose window has closed; seconds until the next one closes (None: none open)."""
        with self._cond:
            ready, wait = self._take_ready()
        for batch in ready:
            self._dispatch(batch)
        return wait

    def flush(self) -> None:
        """Send every open batch now."""
        with self._cond:
            ready, self._open = list(self._open.values()), {}
        for batch in ready:
            self._dispatch(batch)

    def close(self) -> None:
        """Stop the window thread; requests still gathering are cancelled (their checks are dropped)."""
        with self._cond:
            self._closed = True
            pending, self._open = list(self._open.values()), {}
            self._cond.notify_all()
            thread = self._thread
        for batch in pending:
            for member in batch.members:
                member.answer.cancel()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _take_ready(self) -> tuple[list[_Batch], float | None]:
        """(batches whose window has closed, taken out; seconds until the next closes). Holds the lock."""
        now = self._monotonic()
        ready = [batch for batch in self._open.values() if batch.deadline <= now]
        for batch in ready:
            del self._open[batch.key]
        deadline = min((batch.deadline for batch in self._open.values()), default=None)
        return ready, None if deadline is None else max(0.0, deadline - now)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    ready, wait = self._take_ready()
                    if ready:
                        break
                    self._cond.wait(wait)
            for batch in ready:
                self._dispatch(batch)

    def _dispatch(self, batch: _Batch) -> None:
        # The query runs in the pool, never in the window thread: a slow Prometheus must not
        # hold back the other groups' batches.
        try:
            (self._executor or query_pool()).submit(self._send, batch)
        except RuntimeError:  # the pool is shut down: the interpreter is exiting
            for member in batch.members:
                member.answer.cancel()

    def _send(self, batch: _Batch) -> None:
        # A member whose requester gave up (cancelled) is left out; nobody left, no query.
        members = [m for m in batch.members if m.answer.set_running_or_notify_cancel()]
        if not members:
            return
        at = max(self._clock(), *(member.due for member in members))
        query = batch.grouped.for_batch(member.series for member in members)
        with self._cond:
            self._batches_sent += 1
        try:
            key = batch.key
            series = batch.provider.query_series(batch.config, key.address, query, key.timeout, at)
        except Exception as err:  # ProviderError, or a provider's bug: each check says so
            for member in members:
                member.answer.set_exception(err)
            return
        values: dict[tuple[str | None, ...], float] = {}
        for labels, value in series:
            values[tuple(labels.get(label) for label in batch.grouped.labels)] = value
        for member in members:
            member.answer.set_result(values.get(member.series))
