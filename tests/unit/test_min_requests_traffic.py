"""`analysis.minRequests` holds only the metrics that measure the canary's traffic.

A query metric (Prometheus) is Inconclusive at low traffic; a `web` or `job` metric keeps its
verdict (a failed smoke test is a failure whatever the traffic), and a check with no query
metric never counts the canary's requests (so needs no --prometheus-url for it). The web metric
is answered by a real local HTTP server; Prometheus is the table-answering stand-in of
tests/unit/test_analysis_check.py, which records what it was asked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from operators.analysis.check import MetricSources, run_check, traffic_metrics
from operators.analysis.judging import with_min_requests, without_request_count
from operators.api.rollout import Metric, Outcome
from operators.metrics.hosts import AllowedHosts
from operators.metrics.registry import PROVIDERS
from operators.metrics.web import WebProvider
from tests.unit.test_analysis_check import NOW, FakeProvider
from tests.unit.test_analysis_judging import CANARY_Q, CONTEXT, COUNT_Q, ERRORS, results
from tests.unit.test_job_metric import job_metric
from tests.unit.test_metric_providers_http import Server, web_metric

PROMETHEUS = "http://p:9090"


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def sources(prometheus: FakeProvider, default: str | None = PROMETHEUS) -> MetricSources:
    return MetricSources(
        allowed=AllowedHosts.of([], ["p", "127.0.0.1"]),
        default_addresses={"prometheus": default} if default else {},
        providers={**PROVIDERS, "prometheus": prometheus, "web": WebProvider()},
    )


def errors_metric() -> Metric:
    return Metric(name="errors", query=ERRORS, threshold_range={"max": 0.01})


def test_only_the_named_traffic_metrics_turn_inconclusive() -> None:
    low = with_min_requests(results(Outcome.PASSED, Outcome.FAILED), 3, 200, "30s", counted={"m0"})
    assert [r.outcome for r in low] == [Outcome.INCONCLUSIVE, Outcome.FAILED]
    assert low[1].message == "msg1"
    uncounted = without_request_count(results(Outcome.PASSED, Outcome.FAILED), "refused", counted={"m1"})
    assert [r.outcome for r in uncounted] == [Outcome.PASSED, Outcome.ERROR]


def test_traffic_metrics_are_those_with_a_query() -> None:
    web = web_metric("http://127.0.0.1:1/")
    job = Metric.model_validate(job_metric())
    built_in = Metric.model_validate(
        {"name": "rate", "template": "success-rate", "thresholdRange": {"min": 0.9}}
    )
    assert traffic_metrics([web, errors_metric(), job, built_in]) == [errors_metric(), built_in]


def test_at_low_traffic_a_failing_web_metric_still_fails_while_the_query_metric_is_inconclusive(
    server: Server,
) -> None:
    server.state.body = {"data": {"value": 0.2}}  # below the web metric's min 0.9
    prometheus = FakeProvider({CANARY_Q: 0.0, COUNT_Q: 15.0})
    check = run_check(
        [errors_metric(), web_metric(server.url)], CONTEXT, sources(prometheus), NOW, min_requests=200
    )
    by_name = {result.name: result for result in check.metrics}
    assert by_name["errors"].outcome is Outcome.INCONCLUSIVE
    assert "fewer than minRequests 200" in by_name["errors"].message
    assert (by_name["score"].outcome, by_name["score"].value) == (Outcome.FAILED, 0.2)
    assert (check.outcome, check.canary_requests) == (Outcome.FAILED, 15.0)


def test_a_check_without_query_metrics_never_counts_requests(server: Server) -> None:
    server.state.body = {"data": {"value": 1}}
    prometheus = FakeProvider({})  # any query would fail: it has no answers
    # No --prometheus-url either: before, the count fell back to it and was an Error without it.
    check = run_check(
        [web_metric(server.url)], CONTEXT, sources(prometheus, default=None), NOW, min_requests=200
    )
    assert (check.outcome, check.canary_requests) == (Outcome.PASSED, None)
    assert check.metrics[0].message == ""
    assert prometheus.calls == []
