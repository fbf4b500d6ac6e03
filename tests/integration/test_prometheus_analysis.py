"""Analysis against a REAL Prometheus scraping the REAL sandbox exporter on loopback.

Waits are deadlines on observable values (PrometheusServer.wait_for), never
fixed sleeps. Rate windows are 5s with 1s scrapes, so a change in the
exporter shows in `rate()` within a few seconds.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from operators.analysis.check import MetricSources, format_value, run_check
from operators.analysis.templates import QueryContext, render_query
from operators.api.rollout import Check, Metric, Outcome
from operators.metrics.base import ProviderError
from operators.metrics.hosts import AllowedHosts
from operators.metrics.prometheus import PrometheusProvider
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer, free_port

WINDOW = "5s"
CANARY = "web-canary"


def context(namespace: str) -> QueryContext:
    return QueryContext(
        namespace=namespace,
        rollout_name="web",
        canary_service=CANARY,
        stable_service="web",
        canary_revision="abc123",
        interval=WINDOW,
    )


def builtin(template: str, **threshold: float) -> Metric:
    return Metric(name=template, template=template, threshold_range=threshold)


def query_metric(name: str, query: str, **extra: object) -> Metric:
    extra.setdefault("threshold_range", {"max": 1})
    return Metric.model_validate({"name": name, "query": query, **extra})


@pytest.fixture(scope="module")
def provider() -> Iterator[PrometheusProvider]:
    provider = PrometheusProvider()
    yield provider
    provider.close()


def check(
    metrics: list[Metric], ctx: QueryContext, provider: PrometheusProvider, address: str | None
) -> Check:
    """A check as the operator runs it with `--prometheus-url address`."""
    sources = MetricSources(
        allowed=AllowedHosts.of([address], []),
        default_addresses={"prometheus": address} if address else {},
        providers={"prometheus": provider},
    )
    return run_check(metrics, ctx, sources, datetime.now(UTC))


def wait_for_value(
    prometheus: PrometheusServer, metric: Metric, ctx: QueryContext, predicate: Callable[[float], bool]
) -> float:
    return prometheus.wait_for(render_query(metric, ctx), predicate, timeout=30)


# --- the real thing -----------------------------------------------------------------------------


@pytest.mark.integration
def test_error_rate_reads_the_canary_error_rate(
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
    metrics_namespace: str,
    provider: PrometheusProvider,
) -> None:
    ctx = context(metrics_namespace)
    error_rate = builtin("request-error-rate", max=0.01)
    metrics_exporter.set_service(metrics_namespace, CANARY, rps=50, error_rate=0.3)
    metrics_exporter.set_service(metrics_namespace, "web", rps=50, error_rate=0.9)  # stable: not the canary's
    wait_for_value(prometheus, error_rate, ctx, lambda v: abs(v - 0.3) < 0.005)
    failing = check([error_rate], ctx, provider, prometheus.url)
    assert failing.outcome is Outcome.FAILED
    [result] = failing.metrics
    assert result.value == pytest.approx(0.3, abs=0.005)
    assert result.value is not None
    assert result.message == f"{format_value(result.value)} > max 0.01"  # e.g. "0.3 > max 0.01"


@pytest.mark.integration
def test_p99_latency_rises_above_the_threshold(
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
    metrics_namespace: str,
    provider: PrometheusProvider,
) -> None:
    ctx = context(metrics_namespace)
    p99 = builtin("request-duration-p99", max=0.5)
    metrics_exporter.set_service(metrics_namespace, CANARY, rps=20, latency_seconds=0.02)
    wait_for_value(prometheus, p99, ctx, lambda v: v < 0.025)  # inside the (0.01, 0.025] bucket
    assert check([p99], ctx, provider, prometheus.url).outcome is Outcome.PASSED

    metrics_exporter.set_service(metrics_namespace, CANARY, latency_seconds=0.8)
    wait_for_value(prometheus, p99, ctx, lambda v: v > 0.5)
    slow = check([p99], ctx, provider, prometheus.url)
    assert slow.outcome is Outcome.FAILED
    assert slow.metrics[0].value is not None and 0.5 < slow.metrics[0].value <= 1.0  # the (0.5, 1] bucket
    assert " > max 0.5" in slow.metrics[0].message


@pytest.mark.integration
def test_both_builtins_in_one_check(
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
    metrics_namespace: str,
    provider: PrometheusProvider,
) -> None:
    ctx = context(metrics_namespace)
    metrics = [builtin("request-error-rate", max=0.01), builtin("request-duration-p99", max=0.5)]
    metrics_exporter.set_service(metrics_namespace, CANARY, rps=20, error_rate=0.0, latency_seconds=0.1)
    wait_for_value(prometheus, metrics[1], ctx, lambda v: v <= 0.1)
    result = check(metrics, ctx, provider, prometheus.url)
    assert result.outcome is Outcome.PASSED, result
    assert [m.name for m in result.metrics] == ["request-error-rate", "request-duration-p99"]


@pytest.mark.integration
def test_nonexistent_series_is_no_data(
    prometheus: PrometheusServer, metrics_namespace: str, provider: PrometheusProvider
) -> None:
    metric = query_metric(
        "ghost", 'sum(rate(http_requests_total{namespace="{{ namespace }}",service="nope"}[{{ interval }}]))'
    )
    result = check([metric], context(metrics_namespace), provider, prometheus.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert (result.metrics[0].value, result.metrics[0].message) == (None, "no data")


@pytest.mark.integration
def test_no_traffic_is_no_data_not_a_pass(
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
    metrics_namespace: str,
    provider: PrometheusProvider,
) -> None:
    # Series exist but stand still: the error rate is 0/0 = NaN, which is "no data".
    ctx = context(metrics_namespace)
    error_rate = builtin("request-error-rate", max=0.01)
    metrics_exporter.set_service(metrics_namespace, CANARY, rps=0)
    wait_for_value(prometheus, error_rate, ctx, math.isnan)
    result = check([error_rate], ctx, provider, prometheus.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.metrics[0].message == "no data"


@pytest.mark.integration
def test_gauge_and_args_end_to_end(
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
    metrics_namespace: str,
    provider: PrometheusProvider,
) -> None:
    metrics_exporter.set_gauge("sluice_test_saturation", {"namespace": metrics_namespace}, 0.4)
    ctx = context(metrics_namespace)
    metric = query_metric(
        "saturation",
        'sluice_test_saturation{namespace="{{ namespace }}"} * {{ args.factor }}',
        args={"factor": "2"},
        threshold_range={"max": 0.5},
    )
    wait_for_value(prometheus, metric, ctx, lambda v: v == 0.8)
    result = check([metric], ctx, provider, prometheus.url)
    assert (result.outcome, result.metrics[0].message) == (Outcome.FAILED, "0.8 > max 0.5")


@pytest.mark.integration
def test_bad_promql_is_an_error_with_prometheus_message(
    prometheus: PrometheusServer, metrics_namespace: str, provider: PrometheusProvider
) -> None:
    metric = query_metric("broken", "sum(rate(http_requests_total[{{ interval }}])")
    result = check([metric], context(metrics_namespace), provider, prometheus.url)
    assert result.outcome is Outcome.ERROR
    message = result.metrics[0].message
    assert message.startswith(f"Prometheus at {prometheus.url} answered HTTP 400: bad_data:")
    assert "parse error" in message and "unclosed left parenthesis" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.integration
@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        ("vector(1)", 1.0),
        ("scalar(vector(2.5))", 2.5),
        ("vector(1) / 0", math.inf),
        ("vector(-1) / 0", -math.inf),
        ("vector(0) / 0", math.nan),
        ('up{job="no-such-job"}', None),
        ("sum(up)", 1.0),  # one target: the exporter
    ],
)
def test_result_shapes(prometheus: PrometheusServer, promql: str, expected: float | None) -> None:
    value = prometheus.wait_for(promql, lambda v: True, timeout=30) if expected is not None else None
    if expected is None:
        assert prometheus.query(promql) is None
    elif math.isnan(expected):
        assert value is not None and math.isnan(value)
    else:
        assert value == expected


@pytest.mark.integration
@pytest.mark.parametrize(
    ("promql", "message"),
    [
        ('vector(1) or label_replace(vector(2), "a", "b", "", "")', "query returned 2 series; aggregate it"),
        ("up[5s]", "query returned a range vector"),
        ('"text"', "query returned a string, not a number"),
    ],
)
def test_results_that_are_not_one_number(prometheus: PrometheusServer, promql: str, message: str) -> None:
    prometheus.wait_for("sum(up)", lambda v: v >= 1, timeout=30)  # so up[5s] has samples
    with pytest.raises(ProviderError, match=message):
        prometheus.query(promql)


@pytest.mark.integration
def test_nothing_listening_is_an_error_at_once(provider: PrometheusProvider) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = check([query_metric("m", "up")], context("ns"), provider, address)
    assert time.monotonic() - started < 1
    assert result.outcome is Outcome.ERROR
    assert result.metrics[0].message.startswith(f"Prometheus at {address} is unreachable: ")
    assert "Connection refused" in result.metrics[0].message


@pytest.mark.integration
def test_timeout_is_honoured(provider: PrometheusProvider) -> None:
    # A socket that accepts connections (the kernel does, from the backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        metric = query_metric("m", "up", prometheus={"timeout": "500ms"})
        started = time.monotonic()
        result = check([metric], context("ns"), provider, address)
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2
    assert result.outcome is Outcome.ERROR
    assert result.metrics[0].message == f"Prometheus at {address} did not answer within 0.5s"


@pytest.mark.integration
def test_outage_is_an_error_and_a_restart_on_the_same_port_recovers(
    prometheus_binary: str,
    metrics_exporter: MetricsExporter,
    metrics_namespace: str,
    provider: PrometheusProvider,
) -> None:
    # Its own Prometheus, so that stopping it cannot disturb the other tests.
    ctx = context(metrics_namespace)
    error_rate = builtin("request-error-rate", max=0.01)
    metrics_exporter.set_service(metrics_namespace, CANARY, rps=20, error_rate=0.0)
    with PrometheusServer([metrics_exporter.target], binary=prometheus_binary) as own:
        url = own.url
        wait_for_value(own, error_rate, ctx, lambda v: v == 0)
        assert check([error_rate], ctx, provider, url).outcome is Outcome.PASSED

        own.stop()
        down = check([error_rate], ctx, provider, url)
        assert down.outcome is Outcome.ERROR
        assert down.metrics[0].message.startswith(f"Prometheus at {url} is unreachable: ")

        own.start()
        assert own.url == url
        wait_for_value(own, error_rate, ctx, lambda v: v == 0)
        assert check([error_rate], ctx, provider, url).outcome is Outcome.PASSED
