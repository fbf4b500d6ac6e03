"""End-to-end tests on a real kind cluster (pytest-kind), skipped where Docker cannot run.

The operator runs on the test machine against the kind cluster's API (as
`sluice run` would from a laptop), Prometheus on loopback scrapes the metrics
exporter that plays the application, and the pods are real.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer
from tests import scenarios
from tests.harness import httproute_crd, sluice_crds

# Small images that exist on every registry mirror and start at once; two tags make two revisions.
KIND_IMAGES = ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10")


def docker_problem() -> str | None:
    """Why kind cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "Docker is not installed: kind needs a Docker engine to create a cluster"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 15s"
    if result.returncode != 0:
        return "no Docker engine is running (`docker info` failed): kind cannot create a cluster here"
    return None


@pytest.fixture(scope="session")
def kind_kubeconfig(request: pytest.FixtureRequest) -> Path:
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    cluster = request.getfixturevalue("kind_cluster")
    for crd in [*sluice_crds(), httproute_crd()]:
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd))
    return Path(cluster.kubeconfig_path)


@pytest.fixture
def scene(
    kind_kubeconfig: Path,
    metrics_exporter: MetricsExporter,
    prometheus: PrometheusServer,
    metrics_namespace: str,
) -> Iterator[scenarios.Scene]:
    with scenarios.running_scene(
        kind_kubeconfig, metrics_exporter, prometheus.url, metrics_namespace, images=KIND_IMAGES
    ) as scene:
        yield scene
