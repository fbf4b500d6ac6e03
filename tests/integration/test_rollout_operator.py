"""The real Sluice operator against the sandbox API server, with a real Prometheus.

Each test runs kopf with our handlers in a thread, the sandbox API server and
its workload simulator on loopback, and Prometheus scraping the metrics
exporter that plays the application.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from operators.operator import OperatorOptions
from operators.sandbox.apiserver import SandboxThread
from operators.sandbox.exporter import MetricsExporter
from operators.sandbox.prometheus import PrometheusServer
from tests import scenarios
from tests.harness import Harness, OperatorThread, httproute_crd, sluice_crds


@pytest.fixture
def scene(
    sandbox_api: SandboxThread,
    metrics_exporter: MetricsExporter,
    prometheus: PrometheusServer,
    metrics_namespace: str,
) -> Iterator[scenarios.Scene]:
    for crd in [*sluice_crds(), httproute_crd()]:
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    options = OperatorOptions(
        all_namespaces=True,
        prometheus_url=prometheus.url,
        kubeconfig=str(sandbox_api.kubeconfig),
        liveness_endpoint=None,
    )
    operators = [OperatorThread(options).start()]

    def restart() -> None:
        operators[-1].stop()
        operators.append(OperatorThread(options).start())

    try:
        yield scenarios.Scene(
            harness=Harness(sandbox_api.kubeconfig),
            namespace=metrics_namespace,
            exporter=metrics_exporter,
            prometheus_url=prometheus.url,
            restart_operator=restart,
        )
    finally:
        operators[-1].stop()


def closed_port_address() -> str:
    """An address on loopback where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_healthy_release_is_promoted(scene: scenarios.Scene) -> None:
    scenarios.healthy_release_is_promoted(scene)


def test_failing_metric_rolls_back(scene: scenarios.Scene) -> None:
    scenarios.failing_metric_rolls_back(scene)


def test_unreachable_prometheus_holds_then_rolls_back(scene: scenarios.Scene) -> None:
    scenarios.unreachable_prometheus_holds_then_rolls_back(scene, closed_port_address())


def test_restart_resumes_at_the_same_step(scene: scenarios.Scene) -> None:
    scenarios.restart_resumes_at_the_same_step(scene)


def test_unowned_conflict_is_reported_and_left_alone(scene: scenarios.Scene) -> None:
    scenarios.unowned_conflict_is_reported_and_left_alone(scene)
