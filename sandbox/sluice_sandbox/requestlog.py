"""
The sandbox API server's request log: every HTTP request it answers, for tests and benchmarks.

Tests use it to prove what a client did not do (no GET for an object its watches delivered),
benchmarks to count a client's requests per step or per quiet minute. Clients are told apart
by their ``User-Agent``: the operator's own client sends ``sluice-operator/...``, kopf
``kopf/...``, the kubernetes client ``OpenAPI-Generator/...``, kubectl ``kubectl/...``.

It is cheap enough to stay on: a record is a small frozen tuple appended to a bounded deque
under a lock (records are appended on the sandbox's loop and read from tests' threads), and
counters keep counting after the oldest records have been dropped.
"""

import collections
import dataclasses
import threading
from collections.abc import Iterable

DEFAULT_LIMIT = 100_000
CLIENT_GONE = 499  # the status recorded when the client left before an answer (as nginx logs it)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request the API server answered."""

    at: float  # time.monotonic() when it arrived (one clock for the whole process, all threads)
    method: str
    path: str
    query: str  # the raw query string, without the "?"
    user_agent: str  # "" when the client sent none
    status: int  # of the response; a watch's when its stream started

    @property
    def is_watch(self) -> bool:
        """Whether it asked for a watch-stream (``?watch=true``, or the legacy ``/watch/`` path)."""
        return "/watch/" in self.path or any(
            param in ("watch=true", "watch=1") for param in self.query.split("&")
        )


class RequestLog:
    """
    The latest ``limit`` requests, oldest first, and counters since the last :meth:`clear`.

    ``user_agent`` arguments select by prefix (``"sluice-operator"``, ``"kopf/"``); ``since``
    and ``until`` by arrival time (``time.monotonic()``, from any thread), both inclusive.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._lock = threading.Lock()
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=limit)
        self._total = 0
        self._by_user_agent: collections.Counter[str] = collections.Counter()

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._total += 1
            self._by_user_agent[record.user_agent] += 1

    def snapshot(
        self, *, user_agent: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[RequestRecord]:
        """The records kept (oldest first) that match all the given criteria."""
        with self._lock:
            records = list(self._records)
        return list(_select(records, user_agent, since, until))

    def count(
        self, *, user_agent: str | None = None, since: float | None = None, until: float | None = None
    ) -> int:
        """How many of the records kept match (see :meth:`snapshot`)."""
        return len(self.snapshot(user_agent=user_agent, since=since, until=until))

    def clear(self) -> None:
        """Forget every record and reset the counters (e.g. between a benchmark's phases)."""
        with self._lock:
            self._records.clear()
            self._total = 0
            self._by_user_agent.clear()

    @property
    def total(self) -> int:
        """Requests recorded since the last clear, including those no longer kept."""
        with self._lock:
            return self._total

    @property
    def dropped(self) -> int:
        """Requests recorded since the last clear that the bounded log no longer keeps."""
        with self._lock:
            return self._total - len(self._records)

    def counts_by_user_agent(self) -> dict[str, int]:
        """Requests since the last clear per exact User-Agent, including those no longer kept."""
        with self._lock:
            return dict(self._by_user_agent)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def _select(
    records: Iterable[RequestRecord], user_agent: str | None, since: float | None, until: float | None
) -> Iterable[RequestRecord]:
    for record in records:
        if user_agent is not None and not record.user_agent.startswith(user_agent):
            continue
        if since is not None and record.at < since:
            continue
        if until is not None and record.at > until:
            continue
        yield record
