"""The prometheus block's headers and credentials, and the web provider, against real local HTTP servers.

Each server is `http.server` in a thread that records what it was sent and answers what the test
set; the providers and the analysis are the real ones. Secrets come from a dict standing in for the
API server behind `CachedSecrets`.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from operators.analysis.check import MetricSources, run_check, validate_metrics
from operators.analysis.fanin import _config_key
from operators.analysis.templates import QueryContext
from operators.api.rollout import Metric, Outcome
from operators.metrics.credentials import CachedSecrets
from operators.metrics.hosts import AllowedHosts
from operators.metrics.prometheus import PrometheusProvider
from operators.metrics.registry import PROVIDERS
from operators.metrics.web import WebProvider
from operators.webhook.certs import CertificateFiles, self_signed

NAMESPACE = "shop"
CONTEXT = QueryContext(
    namespace=NAMESPACE,
    rollout_name="web",
    canary_service="web-canary",
    stable_service="web",
    canary_revision="abc",
    interval="30s",
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOKEN = "s3cr3t-token"


@dataclass
class Recorded:
    """What the server answers (status, JSON body, extra headers) and the requests it got."""

    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    def __init__(self, tls: CertificateFiles | None = None) -> None:
        self.state = Recorded()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with state.lock:
                    state.requests.append((self.command, self.path, dict(self.headers), body))
                    status, payload, extra = state.status, state.body, dict(state.headers)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.certfile, tls.keyfile)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def secret(**data: str) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def api_secrets(objects: Mapping[tuple[str, str], dict[str, Any]]) -> CachedSecrets:
    return CachedSecrets(lambda ns, name: objects.get((ns, name)))


def sources(
    secrets: CachedSecrets | None = None, *, prometheus: PrometheusProvider | None = None
) -> MetricSources:
    return MetricSources(
        allowed=AllowedHosts.of([], ["127.0.0.1"]),
        providers={**PROVIDERS, "prometheus": prometheus or PrometheusProvider(), "web": WebProvider()},
        secrets=secrets,
    )


def prom_metric(address: str, **block: Any) -> Metric:
    return Metric.model_validate(
        {
            "name": "m",
            "query": "vector(0.5)",
            "prometheus": {"address": address, **block},
            "thresholdRange": {"max": 1},
        }
    )


def web_metric(url: str, json_path: str = "$.data.value", **block: Any) -> Metric:
    return Metric.model_validate(
        {"name": "score", "web": {"url": url, "jsonPath": json_path, **block}, "thresholdRange": {"min": 0.9}}
    )


PROM_ANSWER = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.5"]}]},
}


def check_one(m: Metric, src: MetricSources) -> Any:
    return run_check([m], CONTEXT, src, NOW).metrics[0]


# --- prometheus: headers and credentials -----------------------------------------------------------


def test_bearer_token_and_tenant_header_are_sent_with_the_query(server: Server) -> None:
    server.state.body = PROM_ANSWER
    secrets = api_secrets({(NAMESPACE, "prom"): secret(token=TOKEN + "\n")})
    m = prom_metric(
        server.url,
        headers={"X-Scope-OrgID": "team-a"},
        auth={"bearerTokenSecretRef": {"name": "prom", "key": "token"}},
    )
    result = check_one(m, sources(secrets))
    assert result.outcome == Outcome.PASSED and result.value == 0.5
    [(_, _, headers, _)] = server.state.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Scope-OrgID"] == "team-a"


def test_basic_auth_uses_the_username_and_password_keys(server: Server) -> None:
    server.state.body = PROM_ANSWER
    secrets = api_secrets({(NAMESPACE, "basic"): secret(username="ann", password="pw")})
    m = prom_metric(server.url, auth={"basicAuthSecretRef": {"name": "basic"}})
    assert check_one(m, sources(secrets)).outcome == Outcome.PASSED
    assert server.state.requests[0][2]["Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ({}, 'Secret "prom" for the bearer token does not exist in namespace shop'),
        ({(NAMESPACE, "prom"): secret(other="x")}, 'Secret "prom" for the bearer token has no key "token"'),
        ({("elsewhere", "prom"): secret(token=TOKEN)}, 'Secret "prom" for the bearer token does not exist'),
    ],
)
def test_a_missing_secret_or_key_is_an_error_naming_them_and_nothing_is_sent(
    server: Server, objects: dict[tuple[str, str], dict[str, Any]], expected: str
) -> None:
    m = prom_metric(server.url, auth={"bearerTokenSecretRef": {"name": "prom", "key": "token"}})
    result = check_one(m, sources(api_secrets(objects)))
    assert result.outcome == Outcome.ERROR
    assert expected in result.message
    assert TOKEN not in result.message
    assert server.state.requests == []


def test_a_refused_token_is_an_error_that_never_echoes_the_token(server: Server) -> None:
    server.state.status, server.state.body = 401, b"unauthorized " + TOKEN.encode()
    secrets = api_secrets({(NAMESPACE, "prom"): secret(token=TOKEN)})
    m = prom_metric(server.url, auth={"bearerTokenSecretRef": {"name": "prom", "key": "token"}})
    result = check_one(m, sources(secrets))
    assert result.outcome == Outcome.ERROR
    assert "HTTP 401" in result.message and TOKEN not in result.message


def test_headers_are_not_carried_to_where_a_redirect_points(server: Server, other: Server) -> None:
    server.state.status, server.state.headers = 302, {"Location": f"{other.url}/api/v1/query"}
    secrets = api_secrets({(NAMESPACE, "prom"): secret(token=TOKEN)})
    m = prom_metric(server.url, auth={"bearerTokenSecretRef": {"name": "prom", "key": "token"}})
    assert check_one(m, sources(secrets)).outcome == Outcome.ERROR
    assert other.state.requests == []


def test_each_set_of_credentials_gets_its_own_headers_on_one_address(server: Server) -> None:
    server.state.body = PROM_ANSWER
    objects = {(NAMESPACE, "a"): secret(token="token-a"), (NAMESPACE, "b"): secret(token="token-b")}
    src = sources(api_secrets(objects))
    for name in ("a", "b", "a"):
        check_one(prom_metric(server.url, auth={"bearerTokenSecretRef": {"name": name, "key": "token"}}), src)
    check_one(prom_metric(server.url), src)
    sent = [headers.get("Authorization") for _, _, headers, _ in server.state.requests]
    assert sent == ["Bearer token-a", "Bearer token-b", "Bearer token-a", None]


def test_the_fanin_never_groups_other_credentials_and_its_key_holds_no_secret() -> None:
    provider = PrometheusProvider()
    objects = {("one", "s"): secret(token="token-1"), ("two", "s"): secret(token="token-2")}
    reader = api_secrets(objects)
    m = prom_metric("http://127.0.0.1:9", auth={"bearerTokenSecretRef": {"name": "s", "key": "token"}})
    _, block = m.source()
    first, second, again = (_config_key(provider.bind(block, ns, reader)) for ns in ("one", "two", "one"))
    assert first != second and first == again
    assert "token-1" not in first and "token-2" not in second


def test_secrets_are_read_once_per_ttl_whatever_the_number_of_checks(server: Server) -> None:
    server.state.body = PROM_ANSWER
    now = [0.0]
    reads: list[tuple[str, str]] = []

    def fetch(ns: str, name: str) -> dict[str, Any]:
        reads.append((ns, name))
        return secret(token=TOKEN)

    src = sources(CachedSecrets(fetch, ttl=10, clock=lambda: now[0]))
    m = prom_metric(server.url, auth={"bearerTokenSecretRef": {"name": "prom", "key": "token"}})
    for _ in range(5):
        check_one(m, src)
    assert reads == [(NAMESPACE, "prom")]
    now[0] = 11
    check_one(m, src)
    assert len(reads) == 2


def test_the_credentials_never_show_in_their_repr() -> None:
    reader = api_secrets({(NAMESPACE, "prom"): secret(token=TOKEN)})
    m = prom_metric("http://127.0.0.1:9", auth={"bearerTokenSecretRef": {"name": "prom", "key": "token"}})
    _, block = m.source()
    assert TOKEN not in repr(PrometheusProvider().bind(block, NAMESPACE, reader))


def test_an_https_prometheus_is_verified_with_the_ca_bundle_from_a_secret(tmp_path: Path) -> None:
    certs = self_signed(["127.0.0.1"], tmp_path)
    server = Server(tls=certs)
    try:
        server.state.body = PROM_ANSWER
        objects = {(NAMESPACE, "ca"): secret(**{"ca.crt": certs.ca_bundle.read_text()})}
        src = sources(api_secrets(objects))
        trusted = check_one(prom_metric(server.url, tls={"caSecretRef": {"name": "ca"}}), src)
        assert trusted.outcome == Outcome.PASSED and trusted.value == 0.5
        untrusted = check_one(prom_metric(server.url), src)
        assert untrusted.outcome == Outcome.ERROR and "CERTIFICATE_VERIFY_FAILED" in untrusted.message
    finally:
        server.close()


def test_a_ca_key_without_a_certificate_is_an_error() -> None:
    reader = api_secrets({(NAMESPACE, "ca"): secret(**{"ca.crt": "not a certificate"})})
    m = prom_metric("https://127.0.0.1:9", tls={"caSecretRef": {"name": "ca"}})
    result = check_one(m, sources(reader))
    assert result.outcome == Outcome.ERROR
    assert 'key "ca.crt" of Secret "ca" holds no PEM certificate' in result.message


def test_auth_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one of bearerTokenSecretRef or basicAuthSecretRef"):
        prom_metric("http://127.0.0.1:9", auth={})


# --- web ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "value"),
    [
        ("$.data.value", {"data": {"value": 0.95}}, 0.95),
        ("{$.data.value}", {"data": {"value": "0.95"}}, 0.95),
        ("{.data.value}", {"data": {"value": 1}}, 1.0),
        ("data.value", {"data": {"value": True}}, 1.0),
        (
            '$.items[?(@.name == "web")].score',
            {"items": [{"name": "db", "score": 0}, {"name": "web", "score": 2}]},
            2,
        ),
    ],
)
def test_jsonpath_picks_the_value(server: Server, path: str, body: Any, value: float) -> None:
    server.state.body = body
    result = check_one(web_metric(server.url + "/score", path), sources())
    assert result.value == value


def test_a_path_that_selects_nothing_or_null_is_no_data(server: Server) -> None:
    for body in ({"data": {}}, {"data": {"value": None}}):
        server.state.body = body
        result = check_one(web_metric(server.url), sources())
        assert result.outcome == Outcome.INCONCLUSIVE and result.message == "no data"


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"data": {"value": "high"}}, 200, "jsonPath $.data.value selects a string, not a number"),
        ({"data": {"value": {"a": 1}}}, 200, "selects an object, not a number"),
        ({"data": [{"value": 1}, {"value": 2}]}, 200, None),
        (b"<html>", 200, "did not answer JSON"),
        ({}, 503, "answered HTTP 503"),
    ],
)
def test_answers_without_one_number_are_errors(
    server: Server, body: Any, status: int, expected: str | None
) -> None:
    server.state.body, server.state.status = body, status
    path = "$.data[*].value" if expected is None else "$.data.value"
    result = check_one(web_metric(server.url, path), sources())
    assert result.outcome == Outcome.ERROR
    assert (expected or "selects 2 values; it must select one") in result.message


def test_method_headers_and_body_are_sent(server: Server) -> None:
    server.state.body = {"data": {"value": 1}}
    m = web_metric(server.url + "/q", method="POST", headers={"X-Key": "k"}, body='{"q": 1}')
    assert check_one(m, sources()).outcome == Outcome.PASSED
    [(method, path, headers, body)] = server.state.requests
    assert (method, path, headers["X-Key"], body) == ("POST", "/q", "k", b'{"q": 1}')


def test_a_web_redirect_is_not_followed(server: Server, other: Server) -> None:
    server.state.status, server.state.headers = 302, {"Location": other.url}
    result = check_one(web_metric(server.url), sources())
    assert result.outcome == Outcome.ERROR and "HTTP 302" in result.message
    assert other.state.requests == []


def test_a_web_url_must_be_an_allowed_host() -> None:
    m = web_metric("http://10.0.0.1:8080/score")
    [problem] = validate_metrics([m], CONTEXT, sources())
    assert "http://10.0.0.1:8080/score is not an allowed metric host" in problem


@pytest.mark.parametrize("path", ["$.[[", "", "{}"])
def test_an_invalid_jsonpath_is_refused_with_the_rollout(path: str) -> None:
    with pytest.raises(ValueError, match="jsonPath"):
        web_metric("http://127.0.0.1:1/", path)


def test_a_web_metric_takes_no_query() -> None:
    with pytest.raises(ValueError, match="a web metric takes no query or template"):
        Metric.model_validate(
            {
                "name": "s",
                "query": "x",
                "web": {"url": "http://a/", "jsonPath": "$.a"},
                "thresholdRange": {"max": 1},
            }
        )
