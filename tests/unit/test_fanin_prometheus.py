"""The Prometheus provider's HTTP side of fan-in: one kept-alive session per address, no per-query
`.netrc` lookup, grouped queries (POST, evaluated at a given time) answered as series, and the
same one-line errors as single queries. Against a small HTTP server that records each request.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from operators.metrics.base import GroupingProvider, ProviderError
from operators.metrics.prometheus import PrometheusProvider, PrometheusSource


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    client_port: int


@dataclass
class Server:
    """Answers every request with (`status`, `body`); records what it was sent."""

    status: int = 200
    body: Any = field(
        default_factory=lambda: {"status": "success", "data": {"resultType": "vector", "result": []}}
    )
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = self.rfile.read(length).decode() if length else ""
            params = {k: v[0] for k, v in parse_qs(parts.query or form).items()}
            with state.lock:
                state.seen.append(
                    Seen(self.command, parts.path, params, dict(self.headers), self.client_address[1])
                )
            raw = state.body if isinstance(state.body, bytes) else json.dumps(state.body).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _serve

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown() waits for it.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def provider() -> Iterator[PrometheusProvider]:
    provider = PrometheusProvider()
    yield provider
    provider.close()


CONFIG = PrometheusSource()


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": labels, "value": [1767225600.0, value]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_prometheus_can_group() -> None:
    assert isinstance(PrometheusProvider(), GroupingProvider)


def test_a_grouped_query_is_posted_at_its_time_and_answers_every_series(
    server: Server, provider: PrometheusProvider
) -> None:
    server.body = vector(
        ({"namespace": "shop", "service": "a-canary"}, "0.25"),
        ({"namespace": "shop", "service": "b-canary"}, "NaN"),
        ({"namespace": "shop", "service": "c-canary"}, "+Inf"),
    )
    series = provider.query_series(CONFIG, server.url, "sum by (service) (x)", 2.5, at=1767225600.1234)
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/query")
    assert seen.params == {"query": "sum by (service) (x)", "timeout": "2500ms", "time": "1767225600.123"}
    assert [labels["service"] for labels, _ in series] == ["a-canary", "b-canary", "c-canary"]
    assert series[0][1] == 0.25 and math.isnan(series[1][1]) and series[2][1] == math.inf
    assert provider.queries_sent == 1


def test_a_single_query_at_a_time_is_sent_with_it(server: Server, provider: PrometheusProvider) -> None:
    server.body = vector(({}, "1"))
    assert provider.query_at(server.url, "up", 1.0, at=12.5) == 1.0
    assert provider.query(CONFIG, server.url, "up", 1.0) == 1.0
    assert [(s.method, s.params.get("time")) for s in server.seen] == [("GET", "12.500"), ("GET", None)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"resultType": "scalar", "result": [1, "1"]}, "grouped query returned a scalar, not a vector"),
        ({"resultType": "matrix", "result": []}, "grouped query returned a matrix, not a vector"),
        (
            {"resultType": "vector", "result": [{"value": [1, "1"]}]},
            "returned a response that is not Prometheus' API",
        ),
        (
            {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]},
            "returned a value that is not a number",
        ),
    ],
)
def test_grouped_answers_that_are_not_series(
    server: Server, provider: PrometheusProvider, data: dict[str, Any], message: str
) -> None:
    server.body = {"status": "success", "data": data}
    with pytest.raises(ProviderError, match=message):
        provider.query_series(CONFIG, server.url, "q", 1.0, at=1.0)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
            "answered HTTP 400: bad_data: parse error",
        ),
        (502, b"<html>bad gateway</html>", "answered HTTP 502 with a body that is not Prometheus' API"),
        (200, b"<html>login</html>", "returned a response that is not Prometheus' API"),
        (200, {"status": "success", "data": []}, "returned a response that is not Prometheus' API"),
    ],
)
def test_errors_read_as_before_both_ways(
    server: Server, provider: PrometheusProvider, status: int, body: Any, message: str
) -> None:
    server.status, server.body = status, body
    for ask in (
        lambda: provider.query_at(server.url, "q", 1.0),
        lambda: provider.query_series(CONFIG, server.url, "q", 1.0, at=1.0),
    ):
        with pytest.raises(ProviderError) as raised:
            ask()
        assert str(raised.value) == f"Prometheus at {server.url} {message}"
        assert "login" not in str(raised.value) and "bad gateway" not in str(raised.value)


def test_one_kept_alive_session_per_address(server: Server, provider: PrometheusProvider) -> None:
    for _ in range(5):
        provider.query_series(CONFIG, server.url, "q", 1.0, at=1.0)
        provider.query_at(server.url + "/", "q", 1.0)
    assert len({seen.client_port for seen in server.seen}) == 1  # one connection, reused
    assert provider.queries_sent == 10


def test_no_netrc_is_read_per_query(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: PrometheusProvider
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    provider.query_at(server.url, "q", 1.0)
    provider.query_series(CONFIG, server.url, "q", 1.0, at=1.0)
    assert all("Authorization" not in seen.headers for seen in server.seen)


def test_proxies_from_the_environment_are_read_once_per_address(
    monkeypatch: pytest.MonkeyPatch, provider: PrometheusProvider
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "prometheus.internal")
    assert (
        provider._session("http://prometheus.monitoring:9090").proxies.get("http")
        == "http://proxy.example:3128"
    )
    assert "http" not in provider._session("http://prometheus.internal:9090").proxies
    monkeypatch.setenv("HTTP_PROXY", "http://other.example:3128")  # read once: later changes are not seen
    assert (
        provider._session("http://prometheus.monitoring:9090").proxies.get("http")
        == "http://proxy.example:3128"
    )


def test_an_address_requests_cannot_parse_is_named(provider: PrometheusProvider) -> None:
    with pytest.raises(
        ProviderError, match=r"invalid Prometheus address 'http://\[::1:9090': Invalid IPv6 URL"
    ):
        provider.query_series(CONFIG, "http://[::1:9090", "q", 1.0, at=1.0)
