"""Reliability with the real operator and a real Prometheus: abort means now, drift is put back,
promote never overrides a failed check, and a deleted Deployment never routes users to nothing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from operators.rollout.inventory import rollout_key
from tests import scenarios
from tests.harness import httproute, route_weights, status_of

pytestmark = pytest.mark.integration

# "At once" with a margin for slow machines: these normally take well under a second.
AT_ONCE = 3.0


class HungServer:
    """Accepts connections and never answers: a Prometheus that hangs. Counts what it accepted."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(connection)

    def open_connections(self) -> int:
        return sum(1 for c in self.accepted if _still_open(c))

    @contextmanager
    def running(self) -> Iterator[HungServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(2)
            for connection in self.accepted:
                connection.close()
            self._socket.close()


def _still_open(connection: socket.socket) -> bool:
    try:
        connection.setblocking(False)
        return connection.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read and not closed: the client is still waiting
    except OSError:
        return False


def canary_weight_on_route(scene: scenarios.Scene) -> int:
    return route_weights(scene.harness.get(httproute(scene.namespace, "web"))).get("web-canary", -1)


def wait_for(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)  # polling interval, bounded by the deadline


def test_abort_acts_at_once_while_a_query_hangs(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    with HungServer().running() as hung:
        metric = {
            "name": "hangs",
            "query": "up",
            "prometheus": {"address": hung.url, "timeout": "1h"},
            "thresholdRange": {"max": 1},
        }
        analysis = {"interval": "5s", "errorLimit": 10, "inconclusiveLimit": 20, "metrics": [metric]}
        body = scenarios.web_rollout(steps=[{"setWeight": 20}, {"pause": {}}], analysis=analysis)
        scenarios.deploy_stable(scene, body)
        h.set_image(ns, "web", scene.images[1])
        h.wait_rollout(ns, "web", lambda r: status_of(r).get("canaryWeight") == 20, 60, "weight 20")
        wait_for("a check to be waiting on the hung Prometheus", lambda: hung.open_connections() > 0, 30)

        h.annotate(ns, "web", "sluice.dev/abort", "now")
        started = time.monotonic()
        wait_for(
            "the canary's weight on the route to be 0", lambda: canary_weight_on_route(scene) == 0, AT_ONCE
        )
        assert hung.open_connections() > 0, "the abort must not have waited for the query"
        aborted = h.wait_rollout(
            ns, "web", lambda r: status_of(r).get("phase") == "Aborted", AT_ONCE, "Aborted"
        )
        assert status_of(aborted)["canaryWeight"] == 0
        assert time.monotonic() - started < AT_ONCE


def test_a_hand_edited_route_is_put_back_at_once_with_an_event(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    body = scenarios.web_rollout(steps=[{"setWeight": 20}, {"pause": {}}])
    scenarios.deploy_stable(scene, body)
    h.set_image(ns, "web", scene.images[1])
    h.wait_rollout(ns, "web", lambda r: status_of(r).get("phase") == "Paused", 60, "the pause at 20%")
    route = h.get(httproute(ns, "web"))
    assert route is not None
    rules = route["spec"]["rules"]
    for backend in rules[0]["backendRefs"]:
        backend["weight"] = 0 if backend["name"] == "web" else 100
    h.cluster.merge_patch(httproute(ns, "web"), {"spec": {"rules": rules}})

    wait_for("the route to be restored", lambda: canary_weight_on_route(scene) == 20, AT_ONCE)
    drift = h.wait(
        lambda: [e for e in h.events(ns, "web") if e.get("reason") == "TrafficDrift"],
        bool,
        AT_ONCE,
        "a TrafficDrift event",
    )
    assert "send 100% to the canary (expected 20%)" in drift[0]["message"]
    assert drift[0]["type"] == "Warning"


def test_a_deleted_route_is_recreated_at_once(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    scenarios.deploy_stable(scene, scenarios.web_rollout(steps=[{"setWeight": 20}, {"pause": {}}]))
    h.cluster.delete(httproute(ns, "web"))
    wait_for("the route to be back", lambda: h.get(httproute(ns, "web")) is not None, AT_ONCE)


def test_promote_at_a_pause_never_overrides_a_failed_check(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.0)
    analysis = scenarios.error_rate_analysis(scene.prometheus_url)
    analysis["failureLimit"] = 1000  # failures are counted, and never roll back here
    body = scenarios.web_rollout(
        steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}], analysis=analysis
    )
    scenarios.deploy_stable(scene, body)
    h.set_image(ns, "web", scene.images[1])
    h.wait_rollout(
        ns, "web", lambda r: status_of(r).get("currentStepIndex") == 1, scenarios.RELEASE_TIMEOUT, "the pause"
    )
    # At the pause, analysis goes on: the canary turns bad and a check fails.
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.5)

    def failed(r: dict[str, Any]) -> bool:
        last = (status_of(r).get("analysis") or {}).get("lastCheck") or {}
        return last.get("outcome") == "Failed"

    h.wait_rollout(ns, "web", failed, scenarios.RELEASE_TIMEOUT, "a failed check at the pause")
    h.annotate(ns, "web", "sluice.dev/promote", "please")
    told = h.wait(
        lambda: [e for e in h.events(ns, "web") if e.get("reason") == "CommandIgnored"],
        bool,
        AT_ONCE * 5,
        "the promote to be refused with an event",
    )
    assert "sluice.dev/promote=please ignored: the last analysis check failed" in told[0]["message"]
    held = h.read(rollout_key(ns, "web"))
    assert (status_of(held)["currentStepIndex"], status_of(held)["canaryWeight"]) == (1, 20)
    assert canary_weight_on_route(scene) == 20
