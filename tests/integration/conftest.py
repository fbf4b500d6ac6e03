"""Fixtures for the integration tests."""

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.jobs import JobController
from sluice_sandbox.prometheus import PrometheusServer
from sluice_sandbox.workloads import WorkloadSimulator
from tests import scenarios

# ----- The sandbox API server (keep these self-contained and first) -----


@pytest.fixture
def sandbox_api(tmp_path: Path) -> Iterator[SandboxThread]:
    """
    A running sandbox API server with the workload simulator and the Job controller, in a background thread.

    Yields a :class:`SandboxThread`: ``.url``, ``.kubeconfig`` (a path), ``.server``, ``.store``,
    ``.run(coro)`` to call the store on the server's loop, and ``.wait_for(...)``.
    """
    factory = with_controllers(functools.partial(WorkloadSimulator, ready_delay=0.2), JobController)
    with SandboxThread(kubeconfig=tmp_path / "sandbox-kubeconfig", server_factory=factory) as sandbox:
        yield sandbox


@pytest.fixture
def kubeconfig(sandbox_api: SandboxThread, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sandbox's kubeconfig path, also exported as ``KUBECONFIG`` (for kopf and kubectl)."""
    monkeypatch.setenv("KUBECONFIG", str(sandbox_api.kubeconfig))
    return sandbox_api.kubeconfig


# ----- The real Sluice operator on the sandbox, with a real Prometheus -----


@pytest.fixture
def component_types() -> str | None:
    """The operator's ``--component-types`` directory: none here; a test module overrides this fixture."""
    return None


@pytest.fixture
def traffic_under_test() -> scenarios.TrafficUnderTest:
    """The traffic provider of the scenarios' Rollouts: Gateway API; a test module overrides this fixture."""
    return scenarios.GATEWAY_API


@pytest.fixture
def scene(
    sandbox_api: SandboxThread,
    metrics_exporter: MetricsExporter,
    prometheus: PrometheusServer,
    metrics_namespace: str,
    component_types: str | None,
    traffic_under_test: scenarios.TrafficUnderTest,
) -> Iterator[scenarios.Scene]:
    """The real operator (kopf and all) in a thread against the sandbox; see tests/scenarios.py."""
    with scenarios.sandbox_scene(
        sandbox_api,
        metrics_exporter,
        prometheus.url,
        metrics_namespace,
        component_types=component_types,
        traffic=traffic_under_test,
    ) as scene:
        yield scene
