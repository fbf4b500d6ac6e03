"""Query fan-in against a REAL Prometheus: one grouped query must say, for every Rollout, exactly
what its own query says, and cost one query per template whatever the number of Rollouts.

The module runs its own Prometheus (Debian's binary, `prometheus_binary`) scraping its own
sandbox exporter, in which some services never expose a 5xx series, as applications that never
failed do (the session's exporter always exposes one): that is the case where the built-in
error rate's `or vector(0)` matters. Both queries are evaluated at the same instant T, a little
in the past so that every sample up to T is already stored when either runs.
Waits are deadlines on observable values, never fixed sleeps.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import requests

from operators.analysis.check import MetricSources, run_check, start_check
from operators.analysis.fanin import QueryFanIn
from operators.analysis.templates import QueryContext, render_query
from operators.api.rollout import Check, Metric, Outcome
from operators.metrics.hosts import AllowedHosts
from operators.metrics.prometheus import PrometheusProvider, PrometheusSource
from sluice_sandbox.exporter import ERROR_CODE, REQUESTS_TOTAL, MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer, free_port

pytestmark = pytest.mark.integration

INTERVAL = "5s"  # the rate window: 1s scrapes, so steady within a few seconds
LAG = 1.5  # T is this far in the past: a scrape's samples (timestamped at its start) are all stored
ERROR_RATE = Metric(name="errors", template="request-error-rate", threshold_range={"max": 0.01})
P99 = Metric(name="p99", template="request-duration-p99", threshold_range={"max": 0.5})
METRICS = [ERROR_RATE, P99]


class ExporterWithout5xx(MetricsExporter):
    """The sandbox's exporter, except that the services in `no_error_series` have no 5xx series."""

    def __init__(self) -> None:
        super().__init__()
        self.no_error_series: set[tuple[str, str]] = set()

    def render(self) -> str:
        dropped = {
            f'{REQUESTS_TOTAL}{{namespace="{ns}",service="{svc}",code="{ERROR_CODE}"}}'
            for ns, svc in self.no_error_series
        }
        lines = super().render().splitlines()
        return "\n".join(line for line in lines if line.split(" ", 1)[0] not in dropped) + "\n"


@dataclass(frozen=True)
class Case:
    namespace: str
    rollout: str
    # What the data should have settled to, per metric: a predicate on the per-Rollout value.
    error_rate: Callable[[float | None], bool]
    p99: Callable[[float | None], bool]
    outcomes: tuple[Outcome, Outcome] = field(default=(Outcome.PASSED, Outcome.PASSED))


def near(target: float, tolerance: float) -> Callable[[float | None], bool]:
    return lambda v: v is not None and abs(v - target) <= tolerance


def between(low: float, high: float) -> Callable[[float | None], bool]:
    return lambda v: v is not None and low < v <= high


def nan(v: float | None) -> bool:
    return v is not None and math.isnan(v)


def absent(v: float | None) -> bool:
    return v is None


PASS, FAIL, NO_DATA = Outcome.PASSED, Outcome.FAILED, Outcome.INCONCLUSIVE
NS, OTHER_NS = "fanin-shop", "fanin-billing"
CASES = [
    Case(NS, "good", near(0.002, 0.001), between(0.01, 0.025), (PASS, PASS)),
    Case(NS, "bad", near(0.3, 0.01), between(0.5, 1.0), (FAIL, FAIL)),
    Case(NS, "clean", lambda v: v == 0.0, between(0.05, 0.1), (PASS, PASS)),  # no 5xx series at all
    Case(NS, "idle", nan, nan, (NO_DATA, NO_DATA)),  # series, but no request in the window: 0/0
    Case(NS, "ghost", absent, absent, (NO_DATA, NO_DATA)),  # no series: no data
    Case(OTHER_NS, "good", near(0.05, 0.005), between(0.25, 0.5), (FAIL, PASS)),  # same name, other namespace
]


def context(case: Case) -> QueryContext:
    return QueryContext(
        namespace=case.namespace,
        rollout_name=case.rollout,
        canary_service=f"{case.rollout}-canary",
        stable_service=case.rollout,
        canary_revision="abc123",
        interval=INTERVAL,
    )


@dataclass
class AtTime:
    """Prometheus queried once per Rollout, as without fan-in, but evaluated at a given instant."""

    real: PrometheusProvider
    at: float
    field: str = "prometheus"
    config_model: type[PrometheusSource] = PrometheusSource

    def address(self, config: PrometheusSource) -> str | None:
        return self.real.address(config)

    def timeout_seconds(self, config: PrometheusSource) -> float:
        return self.real.timeout_seconds(config)

    def query(
        self, config: PrometheusSource, address: str, query: str, timeout_seconds: float
    ) -> float | None:
        return self.real.query_at(address, query, timeout_seconds, at=self.at)


@pytest.fixture(scope="module")
def exporter() -> Iterator[ExporterWithout5xx]:
    with ExporterWithout5xx() as own:
        own.set_service(NS, "good-canary", rps=50, error_rate=0.002, latency_seconds=0.02)
        own.set_service(NS, "good", rps=50, error_rate=0.9, latency_seconds=3.0)  # the stable: not the canary
        own.set_service(NS, "bad-canary", rps=50, error_rate=0.3, latency_seconds=0.8)
        own.set_service(NS, "clean-canary", rps=50, latency_seconds=0.1)
        own.no_error_series.add((NS, "clean-canary"))
        own.set_service(NS, "idle-canary", rps=0)
        own.set_service(OTHER_NS, "good-canary", rps=20, error_rate=0.05, latency_seconds=0.3)
        # In the batch's label sets (namespace x service) but nobody's canary: picked by no one.
        own.set_service(OTHER_NS, "bad-canary", rps=20, error_rate=1.0)
        yield own


@pytest.fixture(scope="module")
def provider() -> Iterator[PrometheusProvider]:
    provider = PrometheusProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, exporter: ExporterWithout5xx, provider: PrometheusProvider
) -> Iterator[PrometheusServer]:
    """Its own Prometheus, once every case's data has settled (per-Rollout queries, at a lag)."""
    with PrometheusServer([exporter.target], binary=prometheus_binary) as server:
        for case in CASES:
            for metric, settled in ((ERROR_RATE, case.error_rate), (P99, case.p99)):
                wait_lagged(provider, server.url, render_query(metric, context(case)), settled)
        yield server


def wait_lagged(
    provider: PrometheusProvider, url: str, promql: str, settled: Callable[[float | None], bool]
) -> None:
    """Until `promql`, evaluated LAG seconds ago, satisfies `settled` (a deadline, not a duration)."""
    deadline = time.monotonic() + 45
    while True:
        value = provider.query_at(url, promql, 5.0, at=time.time() - LAG)
        if settled(value):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{promql!r} did not settle; last value {value!r}")
        time.sleep(0.2)


def sources(url: str, provider: object, fanin: QueryFanIn | None) -> MetricSources:
    return MetricSources(
        allowed=AllowedHosts.of([url], []),
        default_addresses={"prometheus": url},
        providers={"prometheus": provider},  # type: ignore[dict-item]
        fanin=fanin,
    )


def own_checks(url: str, provider: PrometheusProvider, at: float, ctxs: list[QueryContext]) -> list[Check]:
    """Each Rollout's check by its own queries, evaluated at `at`."""
    pinned = sources(url, AtTime(provider, at), None)
    return [run_check(METRICS, ctx, pinned, datetime.fromtimestamp(at, UTC)) for ctx in ctxs]


def query_requests(prometheus: PrometheusServer) -> int:
    """Prometheus' own count of /api/v1/query requests (all status codes)."""
    text = requests.get(f"{prometheus.url}/metrics", timeout=5).text
    pattern = re.compile(r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/query"[^}]*\} (\S+)$', re.M)
    return sum(int(float(value)) for value in pattern.findall(text))


def wait_for_requests(prometheus: PrometheusServer, at_least: int) -> int:
    # Prometheus counts a request once its handler returns, which may be just after we read the answer.
    deadline = time.monotonic() + 10
    while (seen := query_requests(prometheus)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def test_each_rollouts_verdict_through_the_fanin_is_exactly_its_own_query(
    prometheus: PrometheusServer, provider: PrometheusProvider
) -> None:
    at = time.time() - LAG
    fanin = QueryFanIn(clock=lambda: at, background=False)
    ctxs = [context(case) for case in CASES]
    sent, counted = provider.queries_sent, query_requests(prometheus)
    pending: list[Future[Check]] = [
        start_check(METRICS, ctx, sources(prometheus.url, provider, fanin), datetime.fromtimestamp(at, UTC))
        for ctx in ctxs
    ]
    fanin.flush()
    fanned = [check.result(timeout=30) for check in pending]

    # One query per template for the six Rollouts, counted by us and by Prometheus itself.
    assert (provider.queries_sent - sent, fanin.batches_sent, fanin.requests) == (2, 2, 12)
    assert wait_for_requests(prometheus, counted + 2) == counted + 2

    own = own_checks(prometheus.url, provider, at, ctxs)
    for case, through_fanin, by_itself in zip(CASES, fanned, own, strict=True):
        assert through_fanin == by_itself, case  # values to the bit, outcomes, messages, time
        assert tuple(m.outcome for m in through_fanin.metrics) == case.outcomes, (case, through_fanin)
    # The edge cases are what they should be, both ways.
    clean, idle, ghost = fanned[2], fanned[3], fanned[4]
    assert clean.metrics[0].value == 0.0
    five_xx = f'http_requests_total{{namespace="{NS}",service="clean-canary",code=~"5.."}}'
    assert provider.query_at(prometheus.url, f"count({five_xx})", 5.0, at=at) is None  # truly absent
    assert [m.message for m in (*idle.metrics, *ghost.metrics)] == ["no data"] * 4


@pytest.mark.parametrize("rollouts", [1, 25, 200])
def test_rollouts_sharing_a_template_cost_one_query_per_batch(
    prometheus: PrometheusServer, provider: PrometheusProvider, rollouts: int
) -> None:
    at = time.time() - LAG
    fanin = QueryFanIn(clock=lambda: at, background=False)
    src = sources(prometheus.url, provider, fanin)
    # The six cases plus Rollouts without data, in as many namespaces.
    ctxs = [context(case) for case in CASES][:rollouts] + [
        context(Case(f"fanin-ns{i % 7}", f"r{i}", absent, absent)) for i in range(rollouts - len(CASES))
    ]
    sent = provider.queries_sent
    pending = [start_check([ERROR_RATE], ctx, src, datetime.fromtimestamp(at, UTC)) for ctx in ctxs]
    fanin.flush()
    fanned = [check.result(timeout=30) for check in pending]
    assert provider.queries_sent - sent == 1
    assert [c.metrics[0].value for c in fanned] == [
        c.metrics[0].value for c in own_checks_one(prometheus.url, provider, at, ctxs)
    ]


def own_checks_one(
    url: str, provider: PrometheusProvider, at: float, ctxs: list[QueryContext]
) -> list[Check]:
    pinned = sources(url, AtTime(provider, at), None)
    return [run_check([ERROR_RATE], ctx, pinned, datetime.fromtimestamp(at, UTC)) for ctx in ctxs]


def test_the_operators_window_thread_gathers_checks_started_together(
    prometheus: PrometheusServer, provider: PrometheusProvider
) -> None:
    # As the operator runs it: the window thread closes batches, the query pool sends them.
    at = time.time() - LAG
    fanin = QueryFanIn(clock=lambda: at)
    ctxs = [context(case) for case in CASES]
    sent = provider.queries_sent
    try:
        src = sources(prometheus.url, provider, fanin)
        pending = [start_check(METRICS, ctx, src, datetime.fromtimestamp(at, UTC)) for ctx in ctxs]
        fanned = [check.result(timeout=30) for check in pending]  # a deadline, not a duration
    finally:
        fanin.close()
    assert fanin.requests == 12
    assert provider.queries_sent - sent == fanin.batches_sent  # every batch is one query
    assert fanned == own_checks(prometheus.url, provider, at, ctxs)


def test_an_unreachable_prometheus_is_every_members_error_as_its_own_query_says(
    provider: PrometheusProvider,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    at = time.time()
    fanin = QueryFanIn(clock=lambda: at, background=False)
    ctxs = [context(case) for case in CASES[:3]]
    pending = [
        start_check([ERROR_RATE], ctx, sources(url, provider, fanin), datetime.fromtimestamp(at, UTC))
        for ctx in ctxs
    ]
    fanin.flush()
    fanned = [check.result(timeout=30) for check in pending]
    own = own_checks_one(url, provider, at, ctxs)
    assert fanned == own
    assert fanned[0].outcome is Outcome.ERROR
    assert fanned[0].metrics[0].message.startswith(f"Prometheus at {url} is unreachable: ")
