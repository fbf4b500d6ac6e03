"""The operator's own metrics: what a pass counts, the series of a Rollout (and their removal), the
/metrics endpoint, the API requests of the operator's client, and `sluice run --metrics-port`."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from prometheus_client import REGISTRY

from operators.api.rollout import Check, HistoryEntry, MetricResult, Outcome, Phase, RolloutStatus
from operators.cli import build_parser
from operators.foundation.cluster import Cluster, KubeError
from operators.foundation.keys import ObjectKey
from operators.foundation.telemetry import serve_metrics
from operators.operator import DEFAULT_METRICS_PORT
from operators.rollout.telemetry import RolloutTelemetry, new_history, what_happened

_numbers = itertools.count(1)


@pytest.fixture
def namespace() -> str:
    """A namespace label of this test alone: the registry is the process' own, shared by all tests."""
    return f"metrics-test-{next(_numbers)}"


def entry(action: str, time: str = "2026-01-01T00:00:00Z") -> HistoryEntry:
    return HistoryEntry(time=time, action=action, message=action)


def check(time: str, *results: tuple[str, Outcome]) -> Check:
    metrics = [MetricResult(name=name, outcome=outcome) for name, outcome in results]
    return Check(time=time, outcome=Outcome.PASSED, metrics=metrics)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# ---- what a pass did (pure) ----------------------------------------------------------------------


def test_new_history_is_what_came_before_the_previous_newest_entry() -> None:
    old = [entry("step", "t2"), entry("release-started", "t1")]
    new = [entry("promoted", "t4"), entry("set-weight", "t3"), *old]
    assert [e.action for e in new_history(old, new)] == ["promoted", "set-weight"]
    assert new_history(old, old) == []
    assert new_history([], old) == old


def test_a_pass_counts_a_new_check_once_and_the_releases_it_finished() -> None:
    before = RolloutStatus(history=[entry("set-weight", "t1")])
    checked = check("t2", ("error-rate", Outcome.PASSED), ("latency", Outcome.FAILED))
    after = before.model_copy(deep=True)
    after.analysis.last_check = checked
    after.history = [entry("rolled-back", "t2"), *before.history]
    happened = what_happened(before, after)
    assert happened.checks == [("error-rate", "Passed"), ("latency", "Failed")]
    assert happened.finished == ["rolled_back"]
    # The next pass sees the same check and history: nothing new to count.
    again = what_happened(after, after.model_copy(deep=True))
    assert again.checks == [] and again.finished == []


@pytest.mark.parametrize(("action", "outcome"), [("promoted", "promoted"), ("aborted", "aborted")])
def test_finishing_actions(action: str, outcome: str) -> None:
    after = RolloutStatus(history=[entry(action)])
    assert what_happened(RolloutStatus(), after).finished == [outcome]


def test_steps_and_weights_finish_no_release() -> None:
    after = RolloutStatus(history=[entry("step"), entry("set-weight"), entry("release-started")])
    assert what_happened(RolloutStatus(), after).finished == []


# ---- a Rollout's series ----------------------------------------------------------------------------


def test_a_rollouts_series_follow_its_status_and_go_with_it(namespace: str) -> None:
    telemetry = RolloutTelemetry()
    before = RolloutStatus(phase=Phase.HEALTHY, stable_revision="aaa", strategy="Canary")
    during = before.model_copy(
        update={
            "phase": Phase.PROGRESSING,
            "canary_revision": "bbb",
            "canary_weight": 20,
            "current_step_index": 1,
        },
        deep=True,
    )
    during.analysis.last_check = check("t1", ("error-rate", Outcome.PASSED))
    telemetry.record(namespace, "web", before, during)
    rollout = {"namespace": namespace, "rollout": "web"}
    assert value("sluice_rollout_canary_weight", **rollout) == 20
    assert value("sluice_rollout_step", **rollout) == 1
    assert value("sluice_rollout_phase", **rollout, phase="Progressing") == 1
    assert value("sluice_rollout_phase", **rollout, phase="Healthy") == 0
    info = {**rollout, "strategy": "Canary", "stable_revision": "aaa", "canary_revision": "bbb"}
    assert value("sluice_rollout_info", **info) == 1
    assert value("sluice_analysis_checks_total", **rollout, metric="error-rate", outcome="Passed") == 1
    # Every outcome exists from the start, at 0: a dashboard's "rollbacks" is 0, not "no data".
    assert value("sluice_analysis_checks_total", **rollout, metric="error-rate", outcome="Failed") == 0
    assert value("sluice_releases_finished_total", **rollout, outcome="rolled_back") == 0

    done = during.model_copy(
        update={
            "phase": Phase.HEALTHY,
            "stable_revision": "bbb",
            "canary_revision": None,
            "canary_weight": 0,
            "current_step_index": None,
            "history": [entry("promoted", "t2")],
        },
        deep=True,
    )
    telemetry.record(namespace, "web", during, done)
    assert value("sluice_releases_finished_total", **rollout, outcome="promoted") == 1
    assert value("sluice_rollout_step", **rollout) == -1
    assert value("sluice_rollout_info", **info) is None, "the old revisions' info series is replaced"
    assert value("sluice_rollout_info", **{**info, "stable_revision": "bbb", "canary_revision": ""}) == 1
    assert value("sluice_analysis_checks_total", **rollout, metric="error-rate", outcome="Passed") == 1

    telemetry.forget(namespace, "web")
    left = [
        sample
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("namespace") == namespace
    ]
    assert left == [], "a deleted Rollout's series are removed"
    telemetry.forget(namespace, "web")  # twice is fine


# ---- the endpoint ----------------------------------------------------------------------------------


def test_the_metrics_endpoint_serves_the_operators_series(namespace: str) -> None:
    RolloutTelemetry().record(
        namespace, "web", RolloutStatus(), RolloutStatus(phase=Phase.PAUSED, canary_weight=50)
    )
    server = serve_metrics(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert f'sluice_rollout_canary_weight{{namespace="{namespace}",rollout="web"}} 50.0' in text
    assert "# TYPE sluice_reconcile_duration_seconds histogram" in text
    assert "process_resident_memory_bytes" in text, "the process' own metrics come along"


# ---- the operator's Kubernetes client ------------------------------------------------------------


class _Api(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 404 except /api/v1/namespaces/x/configmaps/found, and PATCH with 200."""

    def do_GET(self) -> None:
        found = self.path.endswith("/found")
        body: dict[str, object] = (
            {"metadata": {"name": "found"}} if found else {"kind": "Status", "details": {"name": "gone"}}
        )
        self._answer(200 if found else 404, body)

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(200, {"metadata": {"name": "found"}})

    def _answer(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_clients_requests_are_counted_by_verb_and_code(api_server: str) -> None:
    configuration = k8s.Configuration()
    configuration.host = api_server
    cluster = Cluster(k8s.ApiClient(configuration))

    def count(verb: str, code: str) -> float:
        return value("sluice_kube_api_requests_total", verb=verb, code=code) or 0.0

    before = {
        (verb, code): count(verb, code) for verb, code in [("GET", "200"), ("GET", "404"), ("PATCH", "200")]
    }
    assert cluster.get(ObjectKey("v1", "ConfigMap", "x", "found")) is not None
    assert cluster.get(ObjectKey("v1", "ConfigMap", "x", "gone")) is None
    cluster.merge_patch(ObjectKey("v1", "ConfigMap", "x", "found"), {"data": {"a": "b"}})
    assert count("GET", "200") == before[("GET", "200")] + 1
    assert count("GET", "404") == before[("GET", "404")] + 1
    assert count("PATCH", "200") == before[("PATCH", "200")] + 1


def test_a_request_with_no_answer_is_counted_as_an_error(api_server: str) -> None:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard: nothing listens, the connection is refused
    configuration.retries = False
    cluster = Cluster(k8s.ApiClient(configuration))
    before = value("sluice_kube_api_requests_total", verb="DELETE", code="error") or 0.0
    with pytest.raises(Exception) as raised:
        cluster.delete(ObjectKey("v1", "ConfigMap", "x", "found"))
    assert not isinstance(raised.value, KubeError)
    assert value("sluice_kube_api_requests_total", verb="DELETE", code="error") == before + 1


# ---- sluice run ---------------------------------------------------------------------------------------


def test_sluice_run_serves_metrics_by_default_on_a_port_of_its_own() -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).metrics_port == DEFAULT_METRICS_PORT == 8081
    assert parser.parse_args(["run", "--metrics-port", "9100"]).metrics_port == 9100
    assert parser.parse_args(["run", "--metrics-port", "off"]).metrics_port is None


@pytest.mark.parametrize("bad", ["0", "70000", "eighty"])
def test_sluice_run_refuses_a_port_that_is_none(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--metrics-port", bad])
    assert "--metrics-port" in capsys.readouterr().err


def test_a_metrics_port_in_use_is_an_error_naming_it_and_the_flag() -> None:
    first = serve_metrics(0, "127.0.0.1")
    try:
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{first.port} .*--metrics-port"):
            serve_metrics(first.port, "127.0.0.1")
    finally:
        first.stop()
