"""The `web` provider and the `prometheus` block's credentials, with the real operator.

The web metric is served by a local HTTP server answering the score the test sets; the bearer
token case puts a small local proxy that checks ``Authorization`` in front of the session's real
Prometheus. Both listen on 127.0.0.1, which the scene's operator allows (--metric-hosts: the
test Prometheus' host, any port).
"""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests import scenarios
from tests.harness import Harness, status_of

pytestmark = pytest.mark.integration

TIMEOUT = scenarios.RELEASE_TIMEOUT
IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
TOKEN = "the-right-token"
STEPS = [{"setWeight": 50}, {"setWeight": 100}]


class LocalServer:
    """`http.server` in a thread; subclasses answer in `handle`."""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = outer.handle(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ScoreServer(LocalServer):
    """Answers ``{"data": {"score": S}}`` with the score the test set."""

    def __init__(self) -> None:
        self.score = 1.0
        self.asked = 0
        super().__init__()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.asked += 1
            return 200, f'{{"data": {{"score": {self.score}}}}}'.encode()


class TokenProxy(LocalServer):
    """Forwards to Prometheus what carries ``Authorization: Bearer TOKEN``; 401 to anything else."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.accepted = 0
        self.refused = 0
        super().__init__()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            with self.lock:
                self.refused += 1
            return 401, b'{"status": "error", "errorType": "unauthorized", "error": "bad token"}'
        with self.lock:
            self.accepted += 1
        forwarded = urllib.request.Request(
            self.upstream + path,
            data=body if method == "POST" else None,
            method=method,
            headers={"Content-Type": headers.get("Content-Type", "application/x-www-form-urlencoded")},
        )
        try:
            with urllib.request.urlopen(forwarded, timeout=5) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture
def score_server() -> Iterator[ScoreServer]:
    server = ScoreServer()
    yield server
    server.close()


@pytest.fixture
def token_proxy(scene: scenarios.Scene) -> Iterator[TokenProxy]:
    proxy = TokenProxy(scene.prometheus_url)
    yield proxy
    proxy.close()


def analysis(metric: dict[str, Any], *, error_limit: int = 0) -> dict[str, Any]:
    return {
        "interval": "2s",
        "failureLimit": 0,
        "errorLimit": error_limit,
        "inconclusiveLimit": 20,
        "minChecksPerStep": 1,
        "metrics": [metric],
    }


def web_metric(url: str, json_path: str = "$.data.score") -> dict[str, Any]:
    return {
        "name": "score",
        "web": {"url": url, "jsonPath": json_path, "timeout": "2s"},
        "thresholdRange": {"min": 0.9},
    }


def bearer_metric(url: str, secret: str) -> dict[str, Any]:
    # A query that needs no traffic: what is tested is who may ask, not what the canary does.
    return {
        "name": "up",
        "query": "vector(1)",
        "prometheus": {
            "address": url,
            "timeout": "2s",
            "auth": {"bearerTokenSecretRef": {"name": secret, "key": "token"}},
        },
        "thresholdRange": {"min": 1},
    }


def create_secret(h: Harness, namespace: str, name: str, token: str) -> None:
    h.cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        }
    )


def release(scene: scenarios.Scene, name: str, image: str) -> None:
    scene.harness.set_image(scene.namespace, name, image)


def rolled_back(h: Harness, ns: str, name: str, what: str) -> dict[str, Any]:
    return h.wait_rollout(ns, name, lambda r: status_of(r).get("phase") == "Degraded", TIMEOUT, what)


def promoted(h: Harness, ns: str, name: str, before: str, what: str) -> dict[str, Any]:
    return h.wait_rollout(ns, name, lambda r: scenarios.promoted(status_of(r), before), TIMEOUT, what)


def test_a_web_metric_gates_a_release_both_ways(scene: scenarios.Scene, score_server: ScoreServer) -> None:
    h, ns = scene.harness, scene.namespace
    body = scenarios.web_rollout(steps=STEPS, analysis=analysis(web_metric(score_server.url + "/score")))
    first = scenarios.deploy_stable(scene, body)

    # An invalid jsonPath arriving with a new image stops the release before it starts.
    broken = analysis(web_metric(score_server.url + "/score", "$.data[["))
    containers = body["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = scene.images[1]
    h.patch_rollout(
        ns,
        "web",
        {
            "spec": {
                "template": {"spec": {"containers": containers}},
                "strategy": {"canary": {"analysis": broken}},
            }
        },
    )
    blocked = h.wait_rollout(
        ns,
        "web",
        lambda r: "jsonPath" in (status_of(r).get("message") or ""),
        TIMEOUT,
        "the bad jsonPath reported",
    )
    assert "'$.data[[' is not a valid JSONPath" in status_of(blocked)["message"]
    assert status_of(blocked)["stableRevision"] == first
    assert status_of(blocked).get("canaryWeight", 0) == 0 and score_server.asked == 0

    # Fixed: a good score promotes the same release.
    h.patch_rollout(
        ns,
        "web",
        {"spec": {"strategy": {"canary": {"analysis": body["spec"]["strategy"]["canary"]["analysis"]}}}},
    )
    done = promoted(h, ns, "web", first, "the release with a good score to be promoted")
    assert status_of(done)["analysis"]["passed"] >= 2 and score_server.asked >= 2
    second = status_of(done)["stableRevision"]

    # A bad score rolls the next release back.
    with score_server.lock:
        score_server.score = 0.2
    release(scene, "web", IMAGE_V3)
    degraded = rolled_back(h, ns, "web", "the release with a bad score to roll back")
    status = status_of(degraded)
    assert status["stableRevision"] == second
    assert "score=0.2 Failed (0.2 < min 0.9)" in status["message"], status["message"]
    assert scene.routed() == {"web": 100, "web-canary": 0}


def test_prometheus_behind_a_bearer_token(scene: scenarios.Scene, token_proxy: TokenProxy) -> None:
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    create_secret(h, ns, "right", TOKEN)
    create_secret(h, ns, "wrong", "not-the-token")
    rollouts = {
        "good": bearer_metric(token_proxy.url, "right"),
        "bad": bearer_metric(token_proxy.url, "wrong"),
        "absent": bearer_metric(token_proxy.url, "no-such-secret"),
    }
    stable: dict[str, str] = {}
    for name, metric in rollouts.items():
        body = scenarios.web_rollout(steps=STEPS, analysis=analysis(metric, error_limit=1), name=name)
        stable[name] = scenarios.deploy_stable(scene, body)
    for name in rollouts:
        release(scene, name, scene.images[1])

    promoted(h, ns, "good", stable["good"], "the release queried with the right token to be promoted")
    assert token_proxy.accepted >= 2

    # A wrong token is an Error, never a verdict: counted against errorLimit, then rolled back.
    bad = status_of(rolled_back(h, ns, "bad", "the release with the wrong token to roll back"))
    assert bad["stableRevision"] == stable["bad"]
    assert "metrics provider failed 2 times in a row (errorLimit 1)" in bad["message"], bad["message"]
    assert "up=n/a Error" in bad["message"] and "HTTP 401" in bad["message"]
    assert bad["analysis"].get("failed", 0) == 0
    assert "not-the-token" not in bad["message"] and token_proxy.refused >= 2

    absent = status_of(rolled_back(h, ns, "absent", "the release with a missing Secret to roll back"))
    assert 'Secret "no-such-secret" for the bearer token does not exist in namespace' in absent["message"]
    assert absent["stableRevision"] == stable["absent"]
