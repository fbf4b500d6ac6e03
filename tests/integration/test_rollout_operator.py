"""The real Sluice operator against the sandbox API server, with a real Prometheus.

Each test runs kopf with our handlers in a thread (the ``scene`` fixture in
conftest.py), the sandbox API server and its workload simulator on loopback,
and Prometheus scraping the metrics exporter that plays the application.
"""

from __future__ import annotations

import socket

from tests import scenarios


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
