"""
The sandbox API server's request log, fed by real clients over loopback HTTP: what tests and
benchmarks count a client's requests with (by User-Agent, in a time window).
"""

# The tests pass plain-dict manifests to the kubernetes client, which accepts them at runtime but
# types its parameters as models.
# mypy: disable-error-code="arg-type"
import functools
import logging
import pathlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import kmock
import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from sluice_sandbox.apiserver import SandboxAPIServer, SandboxThread
from sluice_sandbox.environment import Sandbox, SandboxOptions
from sluice_sandbox.requestlog import RequestRecord

pytestmark = pytest.mark.integration

NS = "default"
OPERATOR = "sluice-operator/0.1.0"
TIMEOUT = 10.0


@pytest.fixture
def operator_client(kubeconfig: pathlib.Path) -> Iterator[CoreV1Api]:
    """The kubernetes client as the operator's own: its User-Agent says so."""
    client: ApiClient = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    client.user_agent = OPERATOR
    yield CoreV1Api(client)
    client.close()


def get(url: str, user_agent: str) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def summary(records: list[RequestRecord]) -> list[tuple[str, str, str, int]]:
    return [(record.method, record.path, record.query, record.status) for record in records]


def test_every_request_is_recorded_with_its_client(
    sandbox_api: SandboxThread, operator_client: CoreV1Api
) -> None:
    log = sandbox_api.requests
    log.clear()
    started = time.monotonic()
    operator_client.create_namespaced_config_map(NS, {"metadata": {"name": "web", "labels": {"app": "web"}}})
    operator_client.read_namespaced_config_map("web", NS)
    operator_client.list_namespaced_config_map(NS, label_selector="app=web")
    with pytest.raises(ApiException):
        operator_client.read_namespaced_config_map("missing", NS)
    assert get(f"{sandbox_api.url}/api/v1/namespaces/{NS}/configmaps/web", "kopf/1.45.2") == 200
    assert get(f"{sandbox_api.url}/version", "kubectl/v1.32.0") == 200
    finished = time.monotonic()

    path = f"/api/v1/namespaces/{NS}/configmaps"
    assert summary(log.snapshot(user_agent="sluice-operator")) == [
        ("POST", path, "", 201),
        ("GET", f"{path}/web", "", 200),
        ("GET", path, "labelSelector=app%3Dweb", 200),
        ("GET", f"{path}/missing", "", 404),
    ]
    assert summary(log.snapshot(user_agent="kopf/")) == [("GET", f"{path}/web", "", 200)]
    everything = log.snapshot()
    assert [record.user_agent for record in everything] == [OPERATOR] * 4 + ["kopf/1.45.2", "kubectl/v1.32.0"]
    assert all(started <= record.at <= finished for record in everything)
    assert [record.at for record in everything] == sorted(record.at for record in everything)
    assert log.count(since=everything[4].at) == 2 and log.count(until=everything[0].at) == 1
    assert log.counts_by_user_agent() == {OPERATOR: 4, "kopf/1.45.2": 1, "kubectl/v1.32.0": 1}
    assert (log.total, log.dropped, len(log)) == (6, 0, 6)

    log.clear()
    assert (log.snapshot(), log.total, log.counts_by_user_agent()) == ([], 0, {})


def test_a_watch_is_recorded_when_its_stream_starts(sandbox_api: SandboxThread) -> None:
    log = sandbox_api.requests
    log.clear()
    url = f"{sandbox_api.url}/api/v1/namespaces/{NS}/configmaps?watch=true&timeoutSeconds=30"
    request = urllib.request.Request(url, headers={"User-Agent": "kopf/1.45.2"})
    with urllib.request.urlopen(request, timeout=TIMEOUT):  # the stream is open, and stays open
        deadline = time.monotonic() + TIMEOUT
        while not log.snapshot(user_agent="kopf/"):
            assert time.monotonic() < deadline, "the watch was not recorded while it streamed"
            time.sleep(0.02)  # polling the log, under the deadline
        [record] = log.snapshot()
    assert (record.method, record.path, record.status, record.is_watch) == (
        "GET",
        f"/api/v1/namespaces/{NS}/configmaps",
        200,
        True,
    )
    assert record.query == "watch=true&timeoutSeconds=30"
    assert len(log) == 1  # and not once more when it ended


def test_requests_answered_through_kmock_reactions_are_recorded(
    sandbox_api: SandboxThread, operator_client: CoreV1Api
) -> None:
    async def inject() -> None:  # on the server's loop: kmock's reactions are not thread-safe
        reaction = sandbox_api.server.emulator["list", kmock.resource("", "v1", "configmaps")][:1]
        reaction << 503 << {"kind": "Status", "apiVersion": "v1", "code": 503, "reason": "ServiceUnavailable"}

    sandbox_api.run(inject())
    sandbox_api.requests.clear()
    with pytest.raises(ApiException):
        operator_client.list_namespaced_config_map(NS)
    operator_client.list_namespaced_config_map(NS)  # the fault was one-off: served by the store
    assert [record.status for record in sandbox_api.requests.snapshot()] == [503, 200]


def test_the_log_is_bounded_and_counts_on() -> None:
    factory = functools.partial(SandboxAPIServer, request_log_limit=3)
    with SandboxThread(server_factory=factory) as sandbox:
        for index in range(5):
            assert (
                get(f"{sandbox.url}/api/v1/namespaces/{NS}/configmaps?n={index}", "sluice-operator/x") == 200
            )
        log = sandbox.requests
        assert [record.query for record in log.snapshot()] == ["n=2", "n=3", "n=4"]  # the latest
        assert (log.total, log.dropped, log.counts_by_user_agent()) == (5, 2, {"sluice-operator/x": 5})


def test_the_access_log_names_the_user_agent(
    sandbox_api: SandboxThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sluice_sandbox.apiserver"):
        assert get(f"{sandbox_api.url}/api/v1/namespaces?limit=1", "kopf/1.45.2") == 200
        deadline = time.monotonic() + TIMEOUT
        # aiohttp writes the access log line after the response, on the server's thread.
        while not [
            record for record in caplog.records if "/api/v1/namespaces?limit=1" in record.getMessage()
        ]:
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.02)  # polling the captured records, under the deadline
    [line] = [
        record.getMessage()
        for record in caplog.records
        if "/api/v1/namespaces?limit=1" in record.getMessage()
    ]
    assert line.startswith("GET /api/v1/namespaces?limit=1 -> 200 (")
    assert line.endswith(') "kopf/1.45.2"')


def test_the_sandbox_environment_exposes_the_log(sandbox_api: SandboxThread, tmp_path: pathlib.Path) -> None:
    sandbox = Sandbox(SandboxOptions(kubeconfig=tmp_path / "kubeconfig", run_operator=False), api=sandbox_api)
    assert sandbox.requests is sandbox_api.server.requests
    sandbox.requests.clear()
    get(f"{sandbox_api.url}/healthz", "probe/1")
    assert [(record.path, record.status) for record in sandbox.requests.snapshot(user_agent="probe")] == [
        ("/healthz", 200)
    ]


def test_records_are_read_safely_from_other_threads(sandbox_api: SandboxThread) -> None:
    """Tests read the log while the server's loop appends to it: no torn reads, no errors."""
    log, errors = sandbox_api.requests, []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                snapshot = log.snapshot(user_agent="sluice-operator")
                assert all(isinstance(record, RequestRecord) for record in snapshot)
            except Exception as error:  # reported below, in the test's thread
                errors.append(error)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for index in range(50):
            get(f"{sandbox_api.url}/api/v1/namespaces/{NS}/configmaps?n={index}", "sluice-operator/x")
    finally:
        stop.set()
        reader.join(TIMEOUT)
    assert errors == []
    assert [record.query for record in log.snapshot(user_agent="sluice-operator")][-3:] == [
        "n=47",
        "n=48",
        "n=49",
    ]
