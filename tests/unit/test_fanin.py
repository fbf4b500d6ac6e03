"""Query fan-in: grouped forms of the built-in templates, batching, and checks that wait in no thread.

Time never passes by sleeping: the fan-in takes its clocks and its executor
as arguments, and these tests close its windows by moving a fake clock and
calling `flush_due()` (or `flush()`). The one test of the real window thread
waits on futures with a deadline and asserts nothing about durations.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import pytest

from operators.analysis.background import BackgroundChecks
from operators.analysis.check import STOPPED, MetricSources, run_check, start_check
from operators.analysis.fanin import QueryFanIn
from operators.analysis.templates import (
    BUILTIN_TEMPLATES,
    GROUPED_TEMPLATES,
    GroupedQuery,
    QueryContext,
    grouped_query,
    render_query,
)
from operators.api.rollout import Check, Metric, Outcome
from operators.metrics.base import GroupingProvider, ProviderError, Series
from operators.metrics.hosts import AllowedHosts
from operators.metrics.prometheus import PrometheusProvider, PrometheusSource

P = ParamSpec("P")
T = TypeVar("T")

ADDRESS = "http://prometheus.monitoring:9090"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ERROR_RATE = Metric(name="errors", template="request-error-rate", threshold_range={"max": 0.01})
P99 = Metric(name="p99", template="request-duration-p99", threshold_range={"max": 0.5})


def context(namespace: str = "shop", rollout: str = "web", interval: str = "30s") -> QueryContext:
    return QueryContext(
        namespace=namespace,
        rollout_name=rollout,
        canary_service=f"{rollout}-canary",
        stable_service=rollout,
        canary_revision="abc",
        interval=interval,
    )


class Inline(Executor):
    """Runs what it is given at once, in the caller's thread: a batch's answer is in when flush returns."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class GroupingFake:
    """A Prometheus that answers grouped queries from a table of (namespace, service) -> value.

    Per-Rollout queries (`query`) are answered from `answers` by their text. Records every call.
    """

    series: dict[tuple[str, str], float] = field(default_factory=dict)
    answers: dict[str, float | None] = field(default_factory=dict)
    error: Exception | None = None
    grouped: list[tuple[str, float, float]] = field(default_factory=list)  # (query, timeout, at)
    single: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    field: str = "prometheus"
    config_model: type[PrometheusSource] = PrometheusSource

    def address(self, config: PrometheusSource) -> str | None:
        return config.address

    def timeout_seconds(self, config: PrometheusSource) -> float:
        return PrometheusProvider().timeout_seconds(config)

    def query(
        self, config: PrometheusSource, address: str, query: str, timeout_seconds: float
    ) -> float | None:
        with self.lock:
            self.single.append(query)
        return self.answers.get(query)

    def query_series(
        self, config: PrometheusSource, address: str, query: str, timeout_seconds: float, at: float
    ) -> list[Series]:
        with self.lock:
            self.grouped.append((query, timeout_seconds, at))
        if self.error is not None:
            raise self.error
        return [({"namespace": ns, "service": svc}, value) for (ns, svc), value in self.series.items()]


@dataclass
class PlainFake:
    """A provider without the grouping capability: always one query per Rollout."""

    calls: list[str] = field(default_factory=list)
    field: str = "prometheus"
    config_model: type[PrometheusSource] = PrometheusSource

    def address(self, config: PrometheusSource) -> str | None:
        return config.address

    def timeout_seconds(self, config: PrometheusSource) -> float:
        return 10.0

    def query(
        self, config: PrometheusSource, address: str, query: str, timeout_seconds: float
    ) -> float | None:
        self.calls.append(query)
        return 0.0


@pytest.fixture
def clocks() -> tuple[Clock, Clock]:
    """(wall clock for evaluation times, monotonic clock for windows)."""
    return Clock(1_767_225_600.0), Clock(50.0)


@pytest.fixture
def fanin(clocks: tuple[Clock, Clock]) -> Iterator[QueryFanIn]:
    wall, monotonic = clocks
    built = QueryFanIn(window=0.5, executor=Inline(), clock=wall, monotonic=monotonic, background=False)
    yield built
    built.close()


def sources(provider: Any, fanin: QueryFanIn | None) -> MetricSources:
    return MetricSources(
        allowed=AllowedHosts.of([ADDRESS], []),
        default_addresses={"prometheus": ADDRESS},
        providers={"prometheus": provider},
        fanin=fanin,
    )


def promql_regex(query: str, label: str) -> str:
    """The regex a grouped query matches `label` with, as Prometheus reads the string literal."""
    match = re.search(rf'{label}=~"((?:[^"\\]|\\.)*)"', query)
    assert match, query
    return str(json.loads(f'"{match.group(1)}"'))  # PromQL's "..." escapes are JSON's for \\ and \"


# --- the grouped forms --------------------------------------------------------------------------


def test_every_builtin_with_a_grouped_form_renders_it_without_a_rollouts_identity() -> None:
    assert set(GROUPED_TEMPLATES) == set(BUILTIN_TEMPLATES)
    for name in GROUPED_TEMPLATES:
        metric = Metric(name="m", template=name, args={"objective": "0.999"}, threshold_range={"max": 1})
        one = grouped_query(metric, context("shop", "web"))
        other = grouped_query(metric, context("billing", "api"))
        assert one is not None and other is not None
        # Two Rollouts' grouped forms are one text (so one group), told apart by their series only.
        assert one.text == other.text
        assert (one.labels, one.series, other.series) == (
            ("namespace", "service"),
            ("shop", "web-canary"),
            ("billing", "api-canary"),
        )
        for identity in ("shop", "web", "billing", "api"):
            assert f'"{identity}' not in one.text


def test_grouped_error_rate_falls_back_to_its_own_denominator_times_zero() -> None:
    grouped = grouped_query(ERROR_RATE, context())
    assert grouped is not None
    query = grouped.for_batch([("shop", "web-canary")])
    assert query.count("sum by (namespace, service) (rate(http_requests_total{") == 3
    assert 'code=~"5.."}[30s])' in query
    # `or vector(0)` has no labels and would match no group: the group's denominator * 0 does.
    assert "vector(0)" not in query
    assert re.search(
        r"\bor\s*\(\s*sum by \(namespace, service\) \(rate\(http_requests_total\{[^}]*\}\[30s\]\)\) \* 0\)",
        query,
    )


def test_grouped_p99_keeps_le_beside_the_grouping_labels() -> None:
    grouped = grouped_query(P99, context())
    assert grouped is not None
    assert grouped.for_batch([("shop", "web-canary")]).startswith(
        "histogram_quantile(0.99, sum by (namespace, service, le) ("
    )


@pytest.mark.parametrize(
    "values",
    [
        ["web-canary"],
        ["web-canary", "api-canary", "web-canary"],
        ["a.b", "a+b", "x|y", "(z)", "q*", 'quo"te', "back\\slash", "[c]", "^$", "{1}", "?"],
    ],
)
def test_a_batch_matches_exactly_its_own_label_values(values: list[str]) -> None:
    grouped = GroupedQuery(text='x{service=~"__sluice_batch_service__"}', labels=("service",), series=("",))
    regex = promql_regex(grouped.for_batch((value,) for value in values), "service")
    for value in values:
        assert re.fullmatch(regex, value), (regex, value)  # Prometheus anchors label regexes
    for other in ["web", "canary", "ab", "a", "xy", "x", "y", "z", "", "web-canaryx"]:
        assert not re.fullmatch(regex, other), (regex, other)
    if all(re.fullmatch(r"[a-z-]+", value) for value in values):  # DNS labels, as namespaces and Services
        assert regex == "|".join(sorted(set(values)))  # sorted, de-duplicated: one text per batch


def test_inline_queries_and_unknown_templates_have_no_grouped_form() -> None:
    assert grouped_query(Metric(name="m", query="up", threshold_range={"max": 1}), context()) is None
    assert grouped_query(Metric(name="m", template="nope", threshold_range={"max": 1}), context()) is None


def test_interval_is_part_of_the_grouped_text() -> None:
    slow, fast = grouped_query(ERROR_RATE, context(interval="1m")), grouped_query(ERROR_RATE, context())
    assert slow is not None and fast is not None
    assert "[1m]" in slow.text and "[30s]" in fast.text


# --- batching -----------------------------------------------------------------------------------


def start(
    fanin: QueryFanIn, provider: Any, *ctxs: QueryContext, metrics: list[Metric] | None = None
) -> list[Future[Check]]:
    src = sources(provider, fanin)
    return [start_check(metrics or [ERROR_RATE], ctx, src, NOW) for ctx in ctxs]


def test_checks_within_one_window_share_one_query_and_each_gets_its_own_series(
    fanin: QueryFanIn, clocks: tuple[Clock, Clock]
) -> None:
    _, monotonic = clocks
    provider = GroupingFake(series={("shop", "a-canary"): 0.002, ("shop", "b-canary"): 0.3})
    checks = start(fanin, provider, context(rollout="a"), context(rollout="b"), context(rollout="c"))
    monotonic.now += 0.49
    assert fanin.flush_due() == pytest.approx(0.01)  # the window is still open
    assert not any(check.done() for check in checks) and provider.grouped == []

    monotonic.now += 0.01
    assert fanin.flush_due() is None
    [(query, _, _)] = provider.grouped
    assert promql_regex(query, "service") == "a-canary|b-canary|c-canary"
    assert promql_regex(query, "namespace") == "shop"
    a, b, c = (check.result(timeout=0) for check in checks)
    assert (a.outcome, a.metrics[0].value) == (Outcome.PASSED, 0.002)
    assert (b.outcome, b.metrics[0].value, b.metrics[0].message) == (Outcome.FAILED, 0.3, "0.3 > max 0.01")
    # No series of its own is no data, as its own query would have said.
    assert (c.outcome, c.metrics[0].value, c.metrics[0].message) == (Outcome.INCONCLUSIVE, None, "no data")
    assert (fanin.batches_sent, fanin.requests) == (1, 3)


def test_a_check_after_the_window_closed_starts_the_next_batch(
    fanin: QueryFanIn, clocks: tuple[Clock, Clock]
) -> None:
    _, monotonic = clocks
    provider = GroupingFake(series={("shop", "a-canary"): 0.0})
    first = start(fanin, provider, context(rollout="a"))
    monotonic.now += 0.5
    fanin.flush_due()
    second = start(fanin, provider, context(rollout="a"), context(rollout="b"))
    fanin.flush_due()
    assert len(provider.grouped) == 1 and not any(check.done() for check in second)
    monotonic.now += 0.5
    fanin.flush_due()
    assert len(provider.grouped) == 2 and all(check.done() for check in [*first, *second])


def test_groups_are_told_apart_by_template_interval_address_and_block(fanin: QueryFanIn) -> None:
    provider = GroupingFake()
    base = {"name": "errors", "template": "request-error-rate", "thresholdRange": {"max": 0.01}}
    other = Metric.model_validate({**base, "prometheus": {"address": f"{ADDRESS}/other"}})
    slower = Metric.model_validate({**base, "prometheus": {"timeout": "5s"}})
    start(fanin, provider, context(rollout="a"), context(rollout="b"))  # one group
    start(fanin, provider, context(rollout="c", interval="1m"))  # another interval
    start(fanin, provider, context(rollout="d"), metrics=[P99])  # another template
    start(fanin, provider, context(rollout="e"), metrics=[other])  # another address
    start(fanin, provider, context(rollout="f"), metrics=[slower])  # another block (timeout)
    fanin.flush()
    assert len(provider.grouped) == 5
    assert fanin.requests == 6
    assert sorted(timeout for _, timeout, _ in provider.grouped) == [5.0, 10.0, 10.0, 10.0, 10.0]


def test_a_batch_is_evaluated_no_earlier_than_any_members_due_time(
    fanin: QueryFanIn, clocks: tuple[Clock, Clock]
) -> None:
    wall, _ = clocks
    provider = GroupingFake()
    src = sources(provider, fanin)
    start_check([ERROR_RATE], context(rollout="a"), src, datetime.fromtimestamp(wall.now - 2, UTC))
    start_check([ERROR_RATE], context(rollout="b"), src, datetime.fromtimestamp(wall.now + 0.25, UTC))
    fanin.flush()
    assert provider.grouped[0][2] == wall.now + 0.25
    start_check([ERROR_RATE], context(rollout="c"), src, datetime.fromtimestamp(wall.now - 2, UTC))
    fanin.flush()
    assert provider.grouped[1][2] == wall.now  # otherwise the moment it is sent


def test_a_provider_error_is_every_members_error_with_its_message(fanin: QueryFanIn) -> None:
    provider = GroupingFake(error=ProviderError(f"Prometheus at {ADDRESS} is unreachable: refused"))
    checks = start(fanin, provider, context(rollout="a"), context(rollout="b"))
    fanin.flush()
    for check in checks:
        result = check.result(timeout=0)
        assert (result.outcome, result.metrics[0].message) == (
            Outcome.ERROR,
            f"Prometheus at {ADDRESS} is unreachable: refused",
        )


def test_a_provider_bug_is_an_error_not_a_crash(fanin: QueryFanIn) -> None:
    provider = GroupingFake(error=RuntimeError("bug"))
    [check] = start(fanin, provider, context())
    fanin.flush()
    assert check.result(timeout=0).metrics[0].message == "metrics provider failed: RuntimeError"


def test_checks_in_flight_hold_no_thread(fanin: QueryFanIn) -> None:
    # A thousand checks waiting for their batch: started, none answered, and no thread waits for them.
    provider = GroupingFake(series={("shop", f"r{i}-canary"): i / 1000 for i in range(1000)})
    threads = threading.active_count()
    checks = start(
        fanin, provider, *(context(rollout=f"r{i}") for i in range(1000)), metrics=[ERROR_RATE, P99]
    )
    # Not more threads than before (one left over from another test may end meanwhile).
    assert threading.active_count() <= threads
    assert not any(check.done() for check in checks)
    fanin.flush()
    assert len(provider.grouped) == 2  # one per template, whatever the number of Rollouts
    assert [check.result(timeout=0).metrics[0].value for check in checks[:3]] == [0.0, 0.001, 0.002]


def test_inline_queries_stay_one_query_per_rollout_beside_the_fanin(fanin: QueryFanIn) -> None:
    inline = Metric(name="up", query='up{namespace="{{ namespace }}"}', threshold_range={"max": 1})
    provider = GroupingFake(answers={'up{namespace="shop"}': 1.0})
    [check] = start(fanin, provider, context(), metrics=[inline, ERROR_RATE])
    fanin.flush()
    result = check.result(timeout=5)
    assert provider.single == ['up{namespace="shop"}']
    assert len(provider.grouped) == 1
    assert [m.name for m in result.metrics] == ["up", "errors"]  # spec order


def test_a_provider_that_cannot_group_is_queried_per_rollout(fanin: QueryFanIn) -> None:
    provider = PlainFake()
    assert not isinstance(provider, GroupingProvider)
    assert isinstance(GroupingFake(), GroupingProvider)
    checks = start(fanin, provider, context(rollout="a"), context(rollout="b"))
    assert [check.result(timeout=5).outcome for check in checks] == [Outcome.PASSED, Outcome.PASSED]
    assert provider.calls == [render_query(ERROR_RATE, context(rollout=r)) for r in "ab"]
    assert fanin.requests == 0


def test_a_check_through_the_fanin_equals_its_own_query(fanin: QueryFanIn) -> None:
    # The same data answered both ways: the verdicts, values and messages are the same.
    values: Mapping[str, float | None] = {"a": 0.002, "b": 0.3, "c": float("nan"), "d": None}
    series = {("shop", f"{r}-canary"): v for r, v in values.items() if v is not None}
    answers = {render_query(ERROR_RATE, context(rollout=r)): v for r, v in values.items()}
    own = {
        r: run_check([ERROR_RATE], context(rollout=r), sources(GroupingFake(answers=answers), None), NOW)
        for r in values
    }
    checks = start(fanin, GroupingFake(series=series), *(context(rollout=r) for r in values))
    fanin.flush()
    assert {r: check.result(timeout=0) for r, check in zip(values, checks, strict=True)} == own


def test_close_cancels_the_requests_still_gathering(fanin: QueryFanIn) -> None:
    provider = GroupingFake()
    [check] = start(fanin, provider, context())
    fanin.close()
    result = check.result(timeout=0)
    assert (result.outcome, result.metrics[0].message) == (Outcome.ERROR, STOPPED)
    assert provider.grouped == []
    [after] = start(fanin, provider, context())
    assert after.result(timeout=0).metrics[0].message == "the operator is stopping"


def test_the_window_thread_sends_a_batch_once_its_window_closes() -> None:
    provider = GroupingFake(series={("shop", "a-canary"): 0.5})
    fanin = QueryFanIn(window=0.05)
    try:
        checks = start(fanin, provider, context(rollout="a"), context(rollout="b"))
        results = [check.result(timeout=10) for check in checks]  # a deadline, not a duration
    finally:
        fanin.close()
    assert [r.metrics[0].value for r in results] == [0.5, None]
    assert fanin.batches_sent == len(provider.grouped) >= 1


# --- background checks --------------------------------------------------------------------------


def test_background_checks_start_a_future_and_collect_it_once_done() -> None:
    checks = BackgroundChecks()
    woken: list[tuple[str, str]] = []
    checks.on_done = lambda namespace, name: woken.append((namespace, name))
    answer: Future[Check] = Future()
    key = ("shop", "web")
    assert checks.collect_or_start(key, True, lambda: answer) is None
    assert checks.running(key)
    assert checks.collect_or_start(key, True, lambda: pytest.fail("a second check started")) is None
    done = Check(time="2026-01-01T00:00:00Z", outcome=Outcome.PASSED, metrics=[])
    answer.set_result(done)
    assert woken == [key]
    assert checks.collect_or_start(key, False, lambda: pytest.fail("not due")) == done
    assert not checks.running(key)


def test_a_start_that_raises_is_logged_and_never_counted(caplog: pytest.LogCaptureFixture) -> None:
    checks = BackgroundChecks()

    def broken() -> Future[Check]:
        raise RuntimeError("bug")

    assert checks.collect_or_start(("shop", "web"), True, broken) is None
    assert checks.collect_or_start(("shop", "web"), False, broken) is None
    assert "analysis check of Rollout shop/web failed" in caplog.text


def test_run_check_is_start_check_waited_for() -> None:
    provider = GroupingFake(answers={render_query(ERROR_RATE, context()): 0.002})
    ran = run_check([ERROR_RATE], context(), sources(provider, None), NOW)
    started = start_check([ERROR_RATE], context(), sources(provider, None), NOW).result(timeout=5)
    assert ran == started
