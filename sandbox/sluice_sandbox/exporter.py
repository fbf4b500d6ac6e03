"""A metrics exporter that simulates the HTTP traffic of services, for a real Prometheus to scrape.

Each service has a setting (requests per second, error rate, latency). Its
counters are integrated over time, segment by segment: a new setting only
changes how fast they grow from now on, so counters never decrease and
`rate()` shows the new error rate or latency one rate window after the change.
The integration is pure (`advance`, `integrate`) so it is unit-tested alone.

A service can also get a mix of streams (`set_service_mix`): pods of several
versions behind one Service, each with its own errors and latency. Their
requests add up in the same series, so a quantile of the histogram sees the
slow share as it is, where one averaged latency would hide it.

The gateway in front of the services has counters of its own, per route and
status code (`set_route_rates`, `gateway_totals`): what users see, including
the 503s of requests sent to a service that has no ready pod. They are
integrated the same way, and every route always has its "200", "500" and "503"
series, so `increase()` counts a code's first requests too.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

# Prometheus' default buckets (as client libraries use them), in seconds.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
OK_CODE = "200"
ERROR_CODE = "500"
UNAVAILABLE_CODE = "503"  # the gateway's answer when the backend has no ready pod
GATEWAY_CODES = (OK_CODE, ERROR_CODE, UNAVAILABLE_CODE)  # a route's series, from its first scrape
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REQUESTS_TOTAL = "http_requests_total"
REQUEST_DURATION = "http_request_duration_seconds"
GATEWAY_REQUESTS_TOTAL = "gateway_http_requests_total"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_STATUS_CODE = re.compile(r"^[1-5][0-9][0-9]$")


@dataclass(frozen=True)
class TrafficSetting:
    """How a service behaves from some moment on."""

    rps: float = 10.0
    error_rate: float = 0.0
    latency_seconds: float = 0.05

    def __post_init__(self) -> None:
        if not (self.rps >= 0 and math.isfinite(self.rps)):
            raise ValueError(f"rps must be a finite number >= 0, not {self.rps}")
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate must be between 0 and 1, not {self.error_rate}")
        if not (self.latency_seconds >= 0 and math.isfinite(self.latency_seconds)):
            raise ValueError(f"latency_seconds must be a finite number >= 0, not {self.latency_seconds}")


@dataclass(frozen=True)
class TrafficCounters:
    """The cumulative counters of one service, as exposed to Prometheus."""

    ok: float = 0.0
    errors: float = 0.0
    buckets: tuple[float, ...] = (0.0,) * len(BUCKETS)  # cumulative, one per BUCKETS bound
    duration_sum: float = 0.0

    @property
    def count(self) -> float:
        return self.ok + self.errors


def advance(counters: TrafficCounters, setting: TrafficSetting, seconds: float) -> TrafficCounters:
    """The counters after `seconds` more of traffic at `setting`.

    Every request of the segment takes exactly `latency_seconds`, so it lands in
    each (cumulative) bucket whose bound is at or above that latency.
    """
    if seconds <= 0:
        return counters
    requests = setting.rps * seconds
    errors = requests * setting.error_rate
    buckets = tuple(
        count + (requests if setting.latency_seconds <= bound else 0.0)
        for count, bound in zip(counters.buckets, BUCKETS, strict=True)
    )
    return replace(
        counters,
        ok=counters.ok + (requests - errors),
        errors=counters.errors + errors,
        buckets=buckets,
        duration_sum=counters.duration_sum + requests * setting.latency_seconds,
    )


def advance_mix(
    counters: TrafficCounters, streams: Iterable[TrafficSetting], seconds: float
) -> TrafficCounters:
    """The counters after `seconds` more of several streams at once (their requests add up)."""
    for stream in streams:
        counters = advance(counters, stream, seconds)
    return counters


def integrate(history: Sequence[tuple[float, TrafficSetting]], until: float) -> TrafficCounters:
    """The counters at time `until` of a service whose settings changed at the given times.

    `history` is (start time, setting) in time order; each setting lasts until the next one starts.
    """
    counters = TrafficCounters()
    for index, (start, setting) in enumerate(history):
        end = history[index + 1][0] if index + 1 < len(history) else until
        counters = advance(counters, setting, min(end, until) - start)
    return counters


def advance_codes(
    counts: Mapping[str, float], rates: Mapping[str, float], seconds: float
) -> dict[str, float]:
    """A route's counts by status code after `seconds` more at `rates` (requests per second by code)."""
    if seconds <= 0:
        return dict(counts)
    return {**counts, **{code: counts.get(code, 0.0) + rate * seconds for code, rate in rates.items()}}


def format_sample_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    return f"{name}{_labels(labels)} {format_sample_value(value)}"


def render_service(namespace: str, service: str, counters: TrafficCounters) -> dict[str, list[str]]:
    """Exposition lines of one service, by metric family."""
    base = {"namespace": namespace, "service": service}
    requests = [
        _sample(REQUESTS_TOTAL, {**base, "code": code}, value)
        for code, value in ((OK_CODE, counters.ok), (ERROR_CODE, counters.errors))
    ]
    duration = [
        _sample(f"{REQUEST_DURATION}_bucket", {**base, "le": format_sample_value(le)}, count)
        for le, count in zip(BUCKETS, counters.buckets, strict=True)
    ]
    duration.append(_sample(f"{REQUEST_DURATION}_sum", base, counters.duration_sum))
    duration.append(_sample(f"{REQUEST_DURATION}_count", base, counters.count))
    return {REQUESTS_TOTAL: requests, REQUEST_DURATION: duration}


def render_route(namespace: str, route: str, counts: Mapping[str, float]) -> list[str]:
    """Exposition lines of one route's gateway counters."""
    return [
        _sample(GATEWAY_REQUESTS_TOTAL, {"namespace": namespace, "route": route, "code": code}, value)
        for code, value in counts.items()
    ]


@dataclass
class _Service:
    counters: TrafficCounters  # integrated up to `since`
    since: float
    streams: tuple[TrafficSetting, ...]  # no stream: no traffic


@dataclass
class _Route:
    counts: dict[str, float]  # by status code, integrated up to `since`
    since: float
    rates: dict[str, float]  # requests per second by status code


class _ScrapeServer(ThreadingHTTPServer):
    """The exporter's HTTP server, quiet when a scraper hangs up early.

    Prometheus drops a scrape that outlasts its timeout (on a busy machine it
    does): writing the answer then fails with a broken pipe. That is the
    scraper's choice, not an error of ours, and socketserver's default would
    print a traceback to stderr for each one.
    """

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class MetricsExporter:
    """Serves simulated service and gateway traffic and test gauges on http://HOST:PORT/metrics.

    Thread-safe: tests (or a traffic simulator) change settings while Prometheus scrapes.
    `host` is loopback unless a Prometheus elsewhere must scrape it (e2e/: one in a kind cluster).
    """

    def __init__(
        self, port: int = 0, clock: Callable[[], float] = time.monotonic, host: str = "127.0.0.1"
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], _Service] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._host = host
        self._server = _ScrapeServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-exporter", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        """host:port, as a Prometheus static target."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def set_service(
        self,
        namespace: str,
        service: str,
        rps: float | None = None,
        error_rate: float | None = None,
        latency_seconds: float | None = None,
    ) -> None:
        """Traffic of `service` from now on; its counters keep what they counted so far.

        A setting left out keeps its current value (TrafficSetting's default for a new
        service; after `set_service_mix`, the first stream's).
        """
        changes = {"rps": rps, "error_rate": error_rate, "latency_seconds": latency_seconds}
        with self._lock:
            current = self._services.get((namespace, service))
            previous = current.streams[0] if current and current.streams else TrafficSetting()
            setting = replace(previous, **{key: value for key, value in changes.items() if value is not None})
            self._set_streams(namespace, service, (setting,))

    def set_service_mix(self, namespace: str, service: str, streams: Iterable[TrafficSetting]) -> None:
        """Traffic of `service` from now on: the sum of `streams` (none: no traffic, the series kept)."""
        with self._lock:
            self._set_streams(namespace, service, tuple(streams))

    def _set_streams(self, namespace: str, service: str, streams: tuple[TrafficSetting, ...]) -> None:
        now = self._clock()
        current = self._services.get((namespace, service))
        if current is None:
            self._services[(namespace, service)] = _Service(TrafficCounters(), now, streams)
        else:
            current.counters = advance_mix(current.counters, current.streams, now - current.since)
            current.since, current.streams = now, streams

    def remove_service(self, namespace: str, service: str) -> None:
        with self._lock:
            self._services.pop((namespace, service), None)

    def set_route_rates(self, namespace: str, route: str, rates: Mapping[str, float]) -> None:
        """The gateway's answers to `route` from now on: requests per second by status code
        (a code left out: none). Its counts keep what they counted so far."""
        for code, rate in rates.items():
            if not _STATUS_CODE.match(code):
                raise ValueError(f"invalid status code {code!r}")
            if not (rate >= 0 and math.isfinite(rate)):
                raise ValueError(f"the rate of {code} must be a finite number >= 0, not {rate}")
        with self._lock:
            now = self._clock()
            current = self._routes.get((namespace, route))
            if current is None:
                counts = dict.fromkeys([*GATEWAY_CODES, *rates], 0.0)
                self._routes[(namespace, route)] = _Route(counts, now, dict(rates))
            else:
                current.counts = advance_codes(current.counts, current.rates, now - current.since)
                for code in rates:
                    current.counts.setdefault(code, 0.0)
                current.since, current.rates = now, dict(rates)

    def remove_route(self, namespace: str, route: str) -> None:
        with self._lock:
            self._routes.pop((namespace, route), None)

    def gateway_totals(self, namespace: str, route: str) -> dict[str, float]:
        """The route's requests so far by status code, as the next scrape would see them.

        Raises KeyError for a route the exporter has no series of (e.g. not simulated yet).
        """
        with self._lock:
            state = self._routes[(namespace, route)]
            return advance_codes(state.counts, state.rates, self._clock() - state.since)

    def set_gauge(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Expose gauge `name{labels} value` (replacing the previous value of that series)."""
        reserved = (REQUESTS_TOTAL, REQUEST_DURATION, GATEWAY_REQUESTS_TOTAL)
        if not _METRIC_NAME.match(name) or name.startswith(reserved):
            raise ValueError(f"invalid or reserved gauge name {name!r}")
        for label in labels:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        with self._lock:
            self._gauges.setdefault(name, {})[tuple(sorted(labels.items()))] = value

    def remove_gauge(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Stop exposing one series of gauge `name`, or all of them when labels is None."""
        with self._lock:
            if labels is None:
                self._gauges.pop(name, None)
            else:
                self._gauges.get(name, {}).pop(tuple(sorted(labels.items())), None)

    def reset(self) -> None:
        """Forget every service, route and gauge (Prometheus then marks their series stale)."""
        with self._lock:
            self._services.clear()
            self._routes.clear()
            self._gauges.clear()

    def counters(self, namespace: str, service: str) -> TrafficCounters:
        """The service's counters now, as the next scrape would see them."""
        with self._lock:
            state = self._services[(namespace, service)]
            return advance_mix(state.counters, state.streams, self._clock() - state.since)

    def render(self) -> str:
        """The whole exposition, as served on /metrics."""
        with self._lock:
            now = self._clock()
            services = [
                (ns, svc, advance_mix(s.counters, s.streams, now - s.since))
                for (ns, svc), s in self._services.items()
            ]
            routes = [
                (ns, name, advance_codes(r.counts, r.rates, now - r.since))
                for (ns, name), r in self._routes.items()
            ]
            gauges = {name: dict(series) for name, series in self._gauges.items()}
        lines: list[str] = []
        if services:
            families: dict[str, list[str]] = {REQUESTS_TOTAL: [], REQUEST_DURATION: []}
            for namespace, service, counters in services:
                for family, samples in render_service(namespace, service, counters).items():
                    families[family].extend(samples)
            lines += _family(REQUESTS_TOTAL, "counter", "Simulated HTTP requests.", families[REQUESTS_TOTAL])
            lines += _family(
                REQUEST_DURATION, "histogram", "Simulated HTTP request latency.", families[REQUEST_DURATION]
            )
        if routes:
            samples = [line for ns, name, counts in routes for line in render_route(ns, name, counts)]
            lines += _family(
                GATEWAY_REQUESTS_TOTAL, "counter", "Simulated HTTP requests answered by the gateway.", samples
            )
        for name, series in gauges.items():
            samples = [_sample(name, dict(key), value) for key, value in series.items()]
            lines += _family(name, "gauge", "Test value.", samples)
        return "\n".join(lines) + "\n"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per scrape would drown the test output

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
