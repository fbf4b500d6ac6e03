"""One check: rendering, addresses, provider errors and outcomes, with a fake metrics provider."""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from operators.analysis.check import MAX_QUERY_SECONDS, NO_ADDRESS, MetricSources, run_check, validate_metrics
from operators.analysis.templates import QueryContext
from operators.api.rollout import Metric, Outcome
from operators.metrics.base import MetricProvider, ProviderError
from operators.metrics.hosts import AllowedHosts
from operators.metrics.prometheus import PrometheusProvider, PrometheusSource

CONTEXT = QueryContext(
    namespace="shop",
    rollout_name="web",
    canary_service="web-canary",
    stable_service="web",
    canary_revision="abc",
    interval="30s",
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT = "http://prometheus.monitoring:9090"


@dataclass
class FakeProvider:
    """A Prometheus that answers each query (the rendered PromQL) from a table: a value, None, or an
    exception to raise. It reads its block as the real provider does (address, timeout)."""

    answers: dict[str, float | Exception | None]
    calls: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    field: str = "prometheus"
    config_model: type[PrometheusSource] = PrometheusSource

    def address(self, config: PrometheusSource) -> str | None:
        return PrometheusProvider().address(config)

    def timeout_seconds(self, config: PrometheusSource) -> float:
        return PrometheusProvider().timeout_seconds(config)

    def query(
        self, config: PrometheusSource, address: str, promql: str, timeout_seconds: float
    ) -> float | None:
        with self.lock:
            self.calls.append((address, promql, timeout_seconds))
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        return answer


def metric(name: str, query: str, **extra: Any) -> Metric:
    extra.setdefault("threshold_range", {"max": 0.01})
    return Metric(name=name, query=query, **extra)


def sources(
    provider: FakeProvider, default: str | None = DEFAULT, hosts: tuple[str, ...] = ("p",)
) -> MetricSources:
    """The operator's sources with `provider` standing in for Prometheus; `hosts` as --metric-hosts."""
    return MetricSources(
        allowed=AllowedHosts.of([default], hosts),
        default_addresses={"prometheus": default} if default else {},
        providers={"prometheus": provider},
    )


def test_fake_provider_implements_the_protocol() -> None:
    provider: MetricProvider = FakeProvider({})
    assert provider.field == "prometheus"


@pytest.mark.parametrize(
    ("answer", "extra", "outcome", "value", "message"),
    [
        (0.002, {}, Outcome.PASSED, 0.002, ""),
        (0.01, {}, Outcome.PASSED, 0.01, ""),
        (0.31, {}, Outcome.FAILED, 0.31, "0.31 > max 0.01"),
        (0.5, {"threshold_range": {"min": 0.9}}, Outcome.FAILED, 0.5, "0.5 < min 0.9"),
        (math.inf, {}, Outcome.FAILED, math.inf, "+Inf > max 0.01"),
        (None, {}, Outcome.INCONCLUSIVE, None, "no data"),
        (math.nan, {}, Outcome.INCONCLUSIVE, None, "no data"),
        (None, {"no_data": "fail"}, Outcome.FAILED, None, "no data"),
        (math.nan, {"no_data": "pass"}, Outcome.PASSED, None, "no data"),
        (
            ProviderError("Prometheus at x is unreachable"),
            {},
            Outcome.ERROR,
            None,
            "Prometheus at x is unreachable",
        ),
        (RuntimeError("bug"), {}, Outcome.ERROR, None, "metrics provider failed: RuntimeError"),
    ],
)
def test_one_metric(
    answer: float | Exception | None,
    extra: dict[str, Any],
    outcome: Outcome,
    value: float | None,
    message: str,
) -> None:
    check = run_check([metric("m", "q", **extra)], CONTEXT, sources(FakeProvider({"q": answer})), NOW)
    assert check.outcome is outcome
    [result] = check.metrics
    assert (result.name, result.outcome, result.value, result.message) == ("m", outcome, value, message)


def test_query_is_rendered_and_sent_with_address_and_timeout() -> None:
    provider = FakeProvider({'up{namespace="shop"}': 0.0})
    m = metric(
        "m", 'up{namespace="{{ namespace }}"}', prometheus={"address": "http://p:9090", "timeout": "1500ms"}
    )
    run_check([m], CONTEXT, sources(provider), NOW)
    assert provider.calls == [("http://p:9090", 'up{namespace="shop"}', 1.5)]


@pytest.mark.parametrize(
    ("timeout", "interval", "expected"),
    [
        ("10s", "30s", 10.0),  # the metric's own
        ("1h", "30s", 30.0),  # at most one interval: a longer check only delays the next
        ("1h", "5m", MAX_QUERY_SECONDS),  # and never more than the ceiling
        ("1m30s", "2s", 2.0),
    ],
)
def test_query_timeouts_are_bounded(timeout: str, interval: str, expected: float) -> None:
    provider = FakeProvider({"q": 0.0})
    context = dataclasses.replace(CONTEXT, interval=interval)
    run_check([metric("m", "q", prometheus={"timeout": timeout})], context, sources(provider), NOW)
    assert [call[2] for call in provider.calls] == [expected]


def test_default_address_is_used_when_the_metric_has_none() -> None:
    provider = FakeProvider({"q": 0.0})
    run_check([metric("m", "q")], CONTEXT, sources(provider), NOW)
    assert provider.calls == [(DEFAULT, "q", 10.0)]


def test_no_address_at_all_is_an_error() -> None:
    provider = FakeProvider({"q": 0.0})
    check = run_check([metric("m", "q")], CONTEXT, sources(provider, default=None), NOW)
    assert check.outcome is Outcome.ERROR
    assert check.metrics[0].message == NO_ADDRESS.format(field="prometheus")
    assert "--prometheus-url" in NO_ADDRESS
    assert provider.calls == []


def test_template_error_is_an_error_and_queries_nothing_for_that_metric() -> None:
    provider = FakeProvider({"ok": 0.0})
    check = run_check([metric("bad", "{{ canry }}"), metric("good", "ok")], CONTEXT, sources(provider), NOW)
    assert check.outcome is Outcome.ERROR
    assert check.metrics[0].message == (
        "metric \"bad\": query uses undefined variable 'canry' (variables: namespace, rollout.name, "
        "target.service, target.revision, target.track, canary.service, canary.revision, stable.service, "
        "stable.revision, interval, args.<name>)"
    )
    assert check.metrics[1].outcome is Outcome.PASSED
    assert [call[1] for call in provider.calls] == ["ok"]


@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        ({"a": 0.0, "b": 0.0, "c": 0.0}, Outcome.PASSED),
        ({"a": 0.0, "b": None, "c": 0.0}, Outcome.INCONCLUSIVE),
        ({"a": ProviderError("down"), "b": None, "c": 0.0}, Outcome.ERROR),
        ({"a": ProviderError("down"), "b": None, "c": 1.0}, Outcome.FAILED),
    ],
)
def test_outcomes_combine(answers: dict[str, float | Exception | None], outcome: Outcome) -> None:
    metrics = [metric(name, name) for name in answers]
    check = run_check(metrics, CONTEXT, sources(FakeProvider(answers)), NOW)
    assert check.outcome is outcome
    assert [r.name for r in check.metrics] == ["a", "b", "c"]  # in spec order, though queried in parallel


def test_no_metrics_pass() -> None:
    assert run_check([], CONTEXT, sources(FakeProvider({})), NOW).outcome is Outcome.PASSED


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00Z"),
        (
            datetime(2026, 1, 1, 2, 30, 5, 999999, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-01T00:30:05.999Z",
        ),
        (datetime(2026, 1, 1, 12, 0, 0), "2026-01-01T12:00:00Z"),  # naive: taken as UTC
    ],
)
def test_time_is_rfc3339_utc(now: datetime, expected: str) -> None:
    assert run_check([], CONTEXT, sources(FakeProvider({})), now).time == expected


def test_check_serializes_for_the_status() -> None:
    provider = FakeProvider({"a": 0.31, "b": math.nan})
    check = run_check([metric("a", "a"), metric("b", "b")], CONTEXT, sources(provider), NOW)
    assert check.to_api() == {
        "time": "2026-01-01T00:00:00Z",
        "outcome": "Failed",
        "metrics": [
            {"name": "a", "outcome": "Failed", "value": 0.31, "message": "0.31 > max 0.01"},
            {"name": "b", "outcome": "Inconclusive", "message": "no data"},
        ],
    }


def test_validate_queries_lists_template_problems_without_querying() -> None:
    metrics = [
        metric("ok", "up"),
        metric("typo", "{{ canary.servce }}"),
        Metric(name="tpl", template="nope", threshold_range={"max": 1}),
        Metric(name="builtin", template="request-error-rate", threshold_range={"max": 1}),
    ]
    problems = validate_metrics(metrics, CONTEXT, sources(FakeProvider({})))
    assert len(problems) == 2
    assert problems[0].startswith("metric \"typo\": query uses undefined variable 'canary.servce'")
    assert problems[1].startswith('metric "tpl": unknown template "nope"')
    assert validate_metrics(metrics[:1], CONTEXT, sources(FakeProvider({}))) == []


# --- allowed metric hosts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "hosts", "allowed"),
    [
        (DEFAULT, (), True),  # the host of --prometheus-url, on its port
        ("http://prometheus.monitoring:9091", (), False),  # same host, another port
        ("http://evil.example:9090", (), False),
        ("http://thanos.monitoring:10902", ("thanos.monitoring",), True),  # a host alone: any port
        ("https://thanos.monitoring", ("thanos.monitoring:443",), True),  # the scheme's port
        ("http://thanos.monitoring:8080", ("thanos.monitoring:443",), False),
        ("http://THANOS.monitoring:10902/prefix", ("thanos.Monitoring",), True),  # hosts ignore case
        ("http://[::1]:9090", ("[::1]:9090",), True),
        ("http://169.254.169.254/latest/meta-data", (), False),
        ("file:///etc/passwd", ("",) * 0, False),
        # What is checked is what requests connects to: parsers that disagree are refused.
        ("http://10.0.0.5:8080\\@prometheus.monitoring:9090/", (), False),
        ("http://user:pw@prometheus.monitoring:9090", (), False),
        ("http://prometheus.monitoring:9090\\/x", (), False),
        ("http://prometheus.monitoring\t:9090", (), False),
    ],
)
def test_only_allowed_hosts_are_queried(address: str, hosts: tuple[str, ...], allowed: bool) -> None:
    provider = FakeProvider({"q": 0.0})
    m = metric("m", "q", prometheus={"address": address})
    check = run_check([m], CONTEXT, sources(provider, hosts=hosts), NOW)
    assert bool(provider.calls) is allowed
    assert (check.outcome is Outcome.PASSED) is allowed


def test_a_refused_address_is_a_problem_naming_the_flag_and_nothing_is_sent() -> None:
    provider = FakeProvider({"q": 0.0})
    m = metric("m", "q", prometheus={"address": "http://evil.example:8080"})
    [problem] = validate_metrics([m], CONTEXT, sources(provider, hosts=()))
    assert problem == (
        'metric "m": address http://evil.example:8080 is not an allowed metric host '
        "(allowed: prometheus.monitoring:9090); run the operator with --metric-hosts evil.example:8080 "
        "to allow it"
    )
    assert provider.calls == []


@pytest.mark.parametrize("text", ["http://host", "host/path", "user@host", "host:99999", ":80", ""])
def test_malformed_metric_hosts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="metric host"):
        AllowedHosts.of([], [text])
