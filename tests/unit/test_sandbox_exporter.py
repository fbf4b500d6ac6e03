"""The sandbox metrics exporter alone: its text format and the pure counter integration.

No Prometheus here; tests/integration/test_prometheus_analysis.py has it scrape the exporter.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sluice_sandbox.exporter import (
    BUCKETS,
    MetricsExporter,
    TrafficCounters,
    TrafficSetting,
    advance,
    advance_codes,
    integrate,
)


@pytest.fixture
def metrics_exporter() -> Iterator[MetricsExporter]:
    """An exporter of its own (the session's one is scraped by the integration tests' Prometheus)."""
    with MetricsExporter() as exporter:
        yield exporter


def test_exporter_serves_the_text_format(metrics_exporter: MetricsExporter) -> None:
    metrics_exporter.set_service("ns-a", "web", rps=10, error_rate=0.5, latency_seconds=0.3)
    metrics_exporter.set_gauge("sluice_test_value", {"namespace": "ns-a", "note": 'a "quoted"\nvalue'}, 1.5)
    with urllib.request.urlopen(metrics_exporter.url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = response.read().decode()
    assert "# TYPE http_requests_total counter" in body
    assert "# TYPE http_request_duration_seconds histogram" in body
    assert 'http_requests_total{namespace="ns-a",service="web",code="500"} ' in body
    assert 'http_request_duration_seconds_bucket{namespace="ns-a",service="web",le="+Inf"} ' in body
    assert 'sluice_test_value{namespace="ns-a",note="a \\"quoted\\"\\nvalue"} 1.5' in body
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(metrics_exporter.url.replace("/metrics", "/other"), timeout=5)
    assert missing.value.code == 404


def test_a_scraper_hanging_up_early_is_not_an_error_but_a_failing_handler_is(
    metrics_exporter: MetricsExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prometheus drops scrapes that outlast its timeout; the broken pipe that follows is no bug.
    server = metrics_exporter._server
    for error, printed in ((BrokenPipeError(32, "Broken pipe"), False), (ValueError("a bug"), True)):
        try:
            raise error
        except Exception:
            server.handle_error(None, ("127.0.0.1", 1))
        assert ("Traceback" in capsys.readouterr().err) is printed, error


def test_exporter_counters_never_decrease_across_changes() -> None:
    now = [100.0]
    with MetricsExporter(clock=lambda: now[0]) as exporter:
        exporter.set_service("ns", "web", rps=10, error_rate=0.5, latency_seconds=0.3)
        now[0] = 110.0
        before = exporter.counters("ns", "web")
        exporter.set_service("ns", "web", rps=1, error_rate=0.0)  # latency kept: 0.3
        now[0] = 120.0
        after = exporter.counters("ns", "web")
    assert (before.ok, before.errors) == (50, 50)
    assert (after.ok, after.errors) == (60, 50)
    assert after.duration_sum == pytest.approx(110 * 0.3)
    assert all(b >= a for a, b in zip(before.buckets, after.buckets, strict=True))


@pytest.mark.parametrize(
    ("latency", "lowest"),
    [(0.0, 0.005), (0.005, 0.005), (0.006, 0.01), (0.3, 0.5), (10.0, 10.0), (60.0, math.inf)],
)
def test_requests_land_in_the_buckets_at_or_above_their_latency(latency: float, lowest: float) -> None:
    counters = advance(TrafficCounters(), TrafficSetting(rps=2, latency_seconds=latency), 5)
    assert counters.buckets == tuple(10.0 if le >= lowest else 0.0 for le in BUCKETS)
    assert counters.count == 10 and counters.duration_sum == pytest.approx(10 * latency)


def test_integrate_is_piecewise() -> None:
    history = [
        (0.0, TrafficSetting(rps=10, error_rate=0.0, latency_seconds=0.01)),
        (10.0, TrafficSetting(rps=10, error_rate=0.3, latency_seconds=1.0)),
        (20.0, TrafficSetting(rps=0)),
    ]
    at_15 = integrate(history, until=15)
    assert (at_15.ok, at_15.errors) == pytest.approx((135, 15))
    at_30 = integrate(history, until=30)
    assert (at_30.ok, at_30.errors) == pytest.approx((170, 30))
    assert at_30.buckets[BUCKETS.index(0.01)] == 100  # only the fast segment's requests
    assert at_30.buckets[BUCKETS.index(1.0)] == 200
    # Over the second segment alone, the error rate is exactly the setting: what rate() sees.
    at_10 = integrate(history, until=10)
    at_20 = integrate(history, until=20)
    assert (at_20.errors - at_10.errors) / (at_20.count - at_10.count) == pytest.approx(0.3)
    assert integrate([], until=5) == TrafficCounters()


@pytest.mark.parametrize(
    "setting",
    [{"rps": -1}, {"rps": math.inf}, {"error_rate": 1.5}, {"error_rate": -0.1}, {"latency_seconds": -1}],
)
def test_invalid_settings_are_refused(setting: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrafficSetting(**setting)


# ----- The gateway's counters: per route and status code -----


def test_gateway_counters_integrate_by_code_and_never_decrease() -> None:
    now = [100.0]
    with MetricsExporter(clock=lambda: now[0]) as exporter:
        exporter.set_route_rates("ns", "web", {"200": 8, "503": 2})
        now[0] = 110.0
        assert exporter.gateway_totals("ns", "web") == {"200": 80, "500": 0, "503": 20}
        exporter.set_route_rates("ns", "web", {"200": 9, "500": 1})  # 503 left out: no more of them
        now[0] = 120.0
        assert exporter.gateway_totals("ns", "web") == {"200": 170, "500": 10, "503": 20}
        exporter.set_route_rates("ns", "web", {"404": 1})  # another code joins the route's series
        now[0] = 121.0
        assert exporter.gateway_totals("ns", "web") == {"200": 170, "500": 10, "503": 20, "404": 1}
        with pytest.raises(KeyError):
            exporter.gateway_totals("ns", "other")  # never simulated
        exporter.remove_route("ns", "web")
        with pytest.raises(KeyError):
            exporter.gateway_totals("ns", "web")


def test_a_new_route_has_every_gateway_code_from_the_start() -> None:
    """So that increase() counts a code's first requests: a series born non-zero loses them."""
    with MetricsExporter() as exporter:
        exporter.set_route_rates("ns", "web", {})
        assert exporter.gateway_totals("ns", "web") == {"200": 0, "500": 0, "503": 0}
        body = exporter.render()
    assert "# TYPE gateway_http_requests_total counter" in body
    for code in ("200", "500", "503"):
        assert f'gateway_http_requests_total{{namespace="ns",route="web",code="{code}"}} 0.0' in body
    assert "# TYPE http_requests_total" not in body  # no Service: no per-Service family


def test_advance_codes_is_piecewise() -> None:
    counts = advance_codes({"200": 1.0, "503": 0.0}, {"503": 2.0}, 3)
    assert counts == {"200": 1.0, "503": 6.0}
    assert advance_codes(counts, {"200": 5.0}, 0) == counts


@pytest.mark.parametrize("rates", [{"ok": 1.0}, {"99": 1.0}, {"200": -1.0}, {"503": math.nan}])
def test_invalid_gateway_rates_are_refused(rates: dict[str, float]) -> None:
    with MetricsExporter() as exporter, pytest.raises(ValueError):
        exporter.set_route_rates("ns", "web", rates)


def test_reset_forgets_routes_and_the_gateway_name_is_reserved() -> None:
    with MetricsExporter() as exporter:
        exporter.set_route_rates("ns", "web", {"200": 1})
        exporter.reset()
        with pytest.raises(KeyError):
            exporter.gateway_totals("ns", "web")
        with pytest.raises(ValueError):
            exporter.set_gauge("gateway_http_requests_total", {}, 1)
