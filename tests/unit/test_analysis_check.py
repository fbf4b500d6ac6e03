"""One check: rendering, addresses, provider errors and outcomes, with a fake metrics provider."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from operators.analysis.check import NO_ADDRESS, run_check, validate_queries
from operators.analysis.provider import MetricsProvider, ProviderError
from operators.analysis.templates import QueryContext
from operators.api.rollout import Metric, Outcome

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
    """Answers each query (the rendered PromQL) from a table: a value, None, or an exception to raise."""

    answers: dict[str, float | Exception | None]
    calls: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def query(self, address: str, promql: str, timeout_seconds: float) -> float | None:
        with self.lock:
            self.calls.append((address, promql, timeout_seconds))
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        return answer


def metric(name: str, query: str, **extra: Any) -> Metric:
    extra.setdefault("threshold_range", {"max": 0.01})
    return Metric(name=name, query=query, **extra)


def test_fake_provider_implements_the_protocol() -> None:
    provider: MetricsProvider = FakeProvider({})
    assert provider is not None


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
        (RuntimeError("bug"), {}, Outcome.ERROR, None, "metrics provider failed: RuntimeError: bug"),
    ],
)
def test_one_metric(
    answer: float | Exception | None,
    extra: dict[str, Any],
    outcome: Outcome,
    value: float | None,
    message: str,
) -> None:
    check = run_check([metric("m", "q", **extra)], CONTEXT, FakeProvider({"q": answer}), DEFAULT, NOW)
    assert check.outcome is outcome
    [result] = check.metrics
    assert (result.name, result.outcome, result.value, result.message) == ("m", outcome, value, message)


def test_query_is_rendered_and_sent_with_address_and_timeout() -> None:
    provider = FakeProvider({'up{namespace="shop"}': 0.0})
    m = metric(
        "m", 'up{namespace="{{ namespace }}"}', prometheus={"address": "http://p:9090", "timeout": "1m30s"}
    )
    run_check([m], CONTEXT, provider, DEFAULT, NOW)
    assert provider.calls == [("http://p:9090", 'up{namespace="shop"}', 90.0)]


def test_default_address_is_used_when_the_metric_has_none() -> None:
    provider = FakeProvider({"q": 0.0})
    run_check([metric("m", "q")], CONTEXT, provider, DEFAULT, NOW)
    assert provider.calls == [(DEFAULT, "q", 10.0)]


def test_no_address_at_all_is_an_error() -> None:
    provider = FakeProvider({"q": 0.0})
    check = run_check([metric("m", "q")], CONTEXT, provider, None, NOW)
    assert check.outcome is Outcome.ERROR
    assert check.metrics[0].message == NO_ADDRESS
    assert "--prometheus-url" in NO_ADDRESS
    assert provider.calls == []


def test_template_error_is_an_error_and_queries_nothing_for_that_metric() -> None:
    provider = FakeProvider({"ok": 0.0})
    check = run_check([metric("bad", "{{ canry }}"), metric("good", "ok")], CONTEXT, provider, DEFAULT, NOW)
    assert check.outcome is Outcome.ERROR
    assert check.metrics[0].message == (
        "metric \"bad\": query uses undefined variable 'canry' (variables: namespace, rollout.name, "
        "canary.service, canary.revision, stable.service, interval, args.<name>)"
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
    check = run_check(metrics, CONTEXT, FakeProvider(answers), DEFAULT, NOW)
    assert check.outcome is outcome
    assert [r.name for r in check.metrics] == ["a", "b", "c"]  # in spec order, though queried in parallel


def test_no_metrics_pass() -> None:
    assert run_check([], CONTEXT, FakeProvider({}), DEFAULT, NOW).outcome is Outcome.PASSED


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00Z"),
        (datetime(2026, 1, 1, 2, 30, 5, 999999, tzinfo=timezone(timedelta(hours=2))), "2026-01-01T00:30:05Z"),
        (datetime(2026, 1, 1, 12, 0, 0), "2026-01-01T12:00:00Z"),  # naive: taken as UTC
    ],
)
def test_time_is_rfc3339_utc(now: datetime, expected: str) -> None:
    assert run_check([], CONTEXT, FakeProvider({}), DEFAULT, now).time == expected


def test_check_serializes_for_the_status() -> None:
    provider = FakeProvider({"a": 0.31, "b": math.nan})
    check = run_check([metric("a", "a"), metric("b", "b")], CONTEXT, provider, DEFAULT, NOW)
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
    problems = validate_queries(metrics, CONTEXT)
    assert len(problems) == 2
    assert problems[0].startswith("metric \"typo\": query uses undefined variable 'canary.servce'")
    assert problems[1].startswith('metric "tpl": unknown template "nope"')
    assert validate_queries(metrics[:1], CONTEXT) == []
