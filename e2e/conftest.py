"""End-to-end tests on a kind cluster running what ships: skipped where Docker cannot run.

Once per session: the image is built from the Dockerfile and loaded into a kind cluster (node image
pinned in e2e/kind-cluster.yaml), `crds/`, the Gateway API CRDs and `manifests/` (through
e2e/overlay) are applied, and the operator runs in the cluster under its own ServiceAccount, its
webhook called by the real API server. Prometheus runs in the cluster too (e2e/prometheus.yaml),
scraping the metrics exporter that plays the application; the tests drive that exporter from here.

Without a Docker engine (or kind, or kubectl) every test skips and says why; with
SLUICE_E2E_REQUIRED=1 (set by .github/workflows/e2e.yaml) they fail instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

from e2e import cluster as kind
from operators.foundation.keys import ObjectKey
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import config as prometheus_config
from tests import scenarios
from tests.fixtures.prometheus import metrics_exporter, metrics_namespace
from tests.harness import Harness

__all__ = ["metrics_exporter", "metrics_namespace"]  # the shared fixtures, used here as in tests/

# Small images that exist on every registry mirror and start at once; two tags make two revisions.
KIND_IMAGES = ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10")
SCRAPE_INTERVAL = "1s"  # as the sandbox's Prometheus: a check sees a change within seconds
# Namespaces are deleted without waiting: a kept cluster (--keep-cluster) may still be removing the
# last run's, so each run's names differ.
RUN_SUFFIX = secrets.token_hex(2)


# pytest-timeout counts fixture set-up in the first test's time: here that is building the image,
# creating the cluster and installing Sluice (minutes on a cold runner), beyond the default 300s.
# Each wait in a scenario has its own deadline; this only stops a hang.
E2E_TEST_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(E2E_TEST_TIMEOUT))
            # One kind cluster for the run: every e2e test on the same xdist worker (--dist loadgroup).
            item.add_marker(pytest.mark.xdist_group("kind"))


def unavailable(reason: str) -> NoReturn:
    """Skip: the suite cannot run here. With SLUICE_E2E_REQUIRED=1, fail: it must."""
    if os.environ.get(kind.REQUIRED_ENV) == "1":
        pytest.fail(f"{kind.REQUIRED_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kind_environment(request: pytest.FixtureRequest) -> Iterator[kind.KindEnvironment]:
    """The kind cluster with Sluice installed from the Dockerfile and manifests/ (see module doc).

    pytest-kind's options apply: --cluster-name, and --keep-cluster to reuse it in the next run.
    """
    problem = kind.environment_problem(shutil.which, kind.docker_problem)
    if problem:
        unavailable(problem)
    image = kind.overlay_image(yaml.safe_load((kind.OVERLAY / "kustomization.yaml").read_text()))
    kind.build_image(image)
    cluster = kind.new_kind_cluster(request.config.getoption("cluster_name"))
    cluster.create(config_file=kind.KIND_CONFIG)
    try:
        cluster.load_docker_image(image)
        environment = kind.KindEnvironment(cluster, image)
        kind.install_sluice(environment)
        yield environment
    finally:
        if not request.config.getoption("keep_cluster"):
            cluster.delete()


@pytest.fixture(scope="session")
def session_metrics_exporter(kind_environment: kind.KindEnvironment) -> Iterator[MetricsExporter]:
    """The exporter, on the host's address on the kind network, where the in-cluster Prometheus scrapes it.

    Overrides tests/fixtures' loopback one, so `metrics_exporter` (reset after each test) is this one.
    """
    gateway = kind.kind_gateway()
    try:
        exporter = MetricsExporter(host=gateway)
    except OSError as error:
        unavailable(
            f"cannot listen on the kind network's gateway {gateway} ({error.strerror}): pods reach the "
            "host there only with a Linux Docker engine (not Docker Desktop or rootless Docker)"
        )
    with exporter:
        yield exporter


@pytest.fixture(scope="session")
def prometheus_url(kind_environment: kind.KindEnvironment, session_metrics_exporter: MetricsExporter) -> str:
    """Prometheus in the cluster, scraping the exporter; its address as the operator reaches it."""
    target = session_metrics_exporter.target
    kind.deploy_prometheus(kind_environment, target, prometheus_config([target], SCRAPE_INTERVAL))
    return kind.PROMETHEUS_URL


@pytest.fixture
def scene(
    kind_environment: kind.KindEnvironment,
    metrics_exporter: MetricsExporter,
    prometheus_url: str,
    metrics_namespace: str,
) -> Iterator[scenarios.Scene]:
    """A namespace of its own on the kind cluster (also its metrics' namespace label); the operator
    is the one in the cluster, restarted with `kubectl rollout restart`."""
    harness = Harness(kind_environment.kubeconfig)
    namespace = f"{metrics_namespace[:58].rstrip('-')}-{RUN_SUFFIX}"
    harness.ensure_namespace(namespace)
    try:
        yield scenarios.Scene(
            harness=harness,
            namespace=namespace,
            exporter=metrics_exporter,
            prometheus_url=prometheus_url,
            restart_operator=lambda: kind.restart_operator(kind_environment),
            images=KIND_IMAGES,
        )
    finally:
        # Not waited for: the operator removes its finalizers while the next test runs.
        harness.cluster.delete(ObjectKey("v1", "Namespace", "", namespace))
