"""Invariants checked continuously, in a thread, while the real operator runs a release.

Sluice's promise: no weight on a track without ready pods to serve it. :class:`TrafficInvariant`
polls every HTTPRoute of a namespace through the real ``kubernetes``-based client and, for each
backendRef with weight > 0, checks that the Service it names selects at least one ready pod. It
decides readiness exactly as the sandbox's traffic simulator does
(:func:`sluice_sandbox.traffic.selected_ready_pods`: the Service's selector, condition
Ready=True and not terminating, or, when there is no such pod, terminating pods still ready, as
Kubernetes routes to serving terminating endpoints), so what it flags is what the simulated
gateway answers 503.

A violation counts once it has lasted longer than a grace period (one reconcile: the routes,
Services and pods are read one after the other, so a single poll can catch a change halfway).
Its length is measured from the first poll that saw it to the last: a lower bound, so a slow
poll never makes a violation look longer than it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import urllib3

from operators.foundation.cluster import REQUEST_TIMEOUT, Cluster, KubeError
from sluice_sandbox.traffic import route_split, selected_ready_pods

GRACE_SECONDS = 1.5  # longer than one reconcile
POLL_SECONDS = 0.1
# A bound on the thread's life: a test's release has deadlines far shorter. Past it the check
# stops, and fails, rather than pass having watched only part of the block.
LIMIT_SECONDS = 900.0
JOIN_SECONDS = 3 * sum(REQUEST_TIMEOUT)  # the last poll's three requests, each bounded by the client
HTTPROUTE_API = "gateway.networking.k8s.io/v1"

# (route, backend Service "namespace/name")
BackendKey = tuple[str, str]


@dataclass(frozen=True)
class Violation:
    """A backend a route gave weight while its Service had no ready pod, for longer than the grace."""

    route: str
    backend: str  # the Service, "namespace/name"
    weight: int  # the highest weight the route gave it meanwhile
    start: float  # seconds since the check started, at the first poll that saw it
    end: float  # at the last poll that saw it
    ongoing: bool  # still so when the check ended

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def __str__(self) -> str:
        still = ", still at the end" if self.ongoing else ""
        return (
            f"HTTPRoute {self.route} gave weight {self.weight} to Service {self.backend} with no ready "
            f"pod for {self.seconds:.1f}s (from {self.start:.1f}s to {self.end:.1f}s{still})"
        )


@dataclass
class _Span:
    start: float
    end: float
    weight: int


class TrafficInvariant:
    """No weight on a backend without ready pods for longer than `grace`, in `namespace`.

    A context manager: while active, a thread polls every `interval` seconds; on exit it stops,
    and the exit fails (AssertionError) listing the violations, if there were any. When the block
    itself raised, the violations are added to that exception as a note instead.

    Give it a `cluster` of its own: it is used from the checker's thread.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        *,
        grace: float = GRACE_SECONDS,
        interval: float = POLL_SECONDS,
        limit: float = LIMIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._namespace = namespace
        self._grace = grace
        self._interval = interval
        self._limit = limit
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()  # the spans and violations, written by the thread
        self._open: dict[BackendKey, _Span] = {}
        self._found: list[Violation] = []
        self.polls = 0  # polls that read everything
        self.failed_polls = 0  # polls a request of which failed (they tell nothing)
        self._expired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-invariant-{namespace}", daemon=True)

    # ---- the context manager ----

    def __enter__(self) -> TrafficInvariant:
        self._started = self._clock()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=JOIN_SECONDS)
        problems = self._problems()
        if not problems:
            return
        report = "traffic invariant violated in namespace " + self._namespace + ":\n" + "\n".join(problems)
        if exc is not None:
            exc.add_note(report)  # the block's own failure comes first; this tells why, perhaps
            return
        raise AssertionError(report)

    def _problems(self) -> list[str]:
        problems = [f"- {violation}" for violation in self.violations()]
        if self._thread.is_alive():
            problems.append(f"- the checker did not stop within {JOIN_SECONDS}s")
        if self._expired:
            problems.append(f"- the check stopped after {self._limit}s: the block outlived it")
        if not self.polls:
            problems.append(f"- no poll read the routes, Services and pods ({self.failed_polls} failed)")
        return problems

    # ---- what it found ----

    def violations(self) -> list[Violation]:
        """The violations so far, in the order they started: those over, and those going on
        that already last longer than the grace (``ongoing``)."""
        with self._lock:
            ongoing = [self._violation(key, span, ongoing=True) for key, span in self._open.items()]
            found = [*self._found, *(v for v in ongoing if v is not None)]
        return sorted(found, key=lambda v: v.start)

    def _violation(self, key: BackendKey, span: _Span, *, ongoing: bool) -> Violation | None:
        if span.end - span.start <= self._grace:
            return None
        return Violation(key[0], key[1], span.weight, span.start, span.end, ongoing)

    # ---- the thread ----

    def _run(self) -> None:
        while True:
            self._poll()
            if self._stop.wait(self._interval):  # the pace of the polls, not a wait for a condition
                return
            if self._clock() - self._started > self._limit:
                self._expired = True
                return

    def _poll(self) -> None:
        at = self._clock() - self._started
        try:
            bad = self._starved_backends()
        except (KubeError, urllib3.exceptions.HTTPError, OSError):
            self.failed_polls += 1  # a slow or failed answer: the spans stay as they were
            return
        self.polls += 1
        with self._lock:
            for key, weight in bad.items():
                span = self._open.get(key)
                if span is None:
                    self._open[key] = _Span(at, at, weight)
                else:
                    span.end, span.weight = at, max(span.weight, weight)
            for key in [key for key in self._open if key not in bad]:
                violation = self._violation(key, self._open.pop(key), ongoing=False)
                if violation is not None:
                    self._found.append(violation)

    def _starved_backends(self) -> dict[BackendKey, int]:
        """(route, Service) -> weight of every backendRef with weight whose Service has no ready pod."""
        routes = self._cluster.list_objects(HTTPROUTE_API, "HTTPRoute", self._namespace)
        namespaces: dict[str, tuple[dict[str, Mapping[str, Any]], list[dict[str, Any]]]] = {}
        bad: dict[BackendKey, int] = {}
        for route in routes:
            name = route["metadata"]["name"]
            # One route at a time: its Services' weights, summed over its rules (Sluice writes one).
            for (namespace, service_name), (weight, _) in route_split([route], 1.0).items():
                if weight <= 0:
                    continue
                if namespace not in namespaces:
                    namespaces[namespace] = self._serving(namespace)
                services, pods = namespaces[namespace]
                service = services.get(service_name)
                if service is None or not selected_ready_pods(service, pods):
                    bad[(name, f"{namespace}/{service_name}")] = weight
        return bad

    def _serving(self, namespace: str) -> tuple[dict[str, Mapping[str, Any]], list[dict[str, Any]]]:
        services = self._cluster.list_objects("v1", "Service", namespace)
        pods = self._cluster.list_objects("v1", "Pod", namespace)
        return {service["metadata"]["name"]: service for service in services}, pods
