"""The traffic simulator end to end: sandbox API server, workload simulator, exporter, REAL Prometheus.

Deployments, Services and an HTTPRoute go into the sandbox as Sluice would write them; the
workload simulator runs their pods, the traffic simulator sends requests by the route's weights,
and the built-in query templates read the result from Prometheus. Waits are deadlines on
observable values (PrometheusServer.wait_for), never fixed sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from operators.analysis.templates import QueryContext, render_query
from operators.api.rollout import Metric
from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer
from sluice_sandbox.traffic import TrafficSimulator, outages
from tests.harness import httproute_crd, virtualservice_crd

pytestmark = pytest.mark.integration

WINDOW = "5s"
TIMEOUT = 30.0
APP = {"name": "app", "image": "ghcr.io/acme/web:1"}


class Cluster:
    """The sandbox's store, called from the test's thread, in one namespace."""

    def __init__(self, sandbox: SandboxThread, namespace: str) -> None:
        self.sandbox, self.namespace = sandbox, namespace

    def create(self, resource: str, body: dict[str, Any]) -> None:
        self.sandbox.run(self.sandbox.store.create(resource, body, self.namespace))

    def patch(self, resource: str, name: str, patch: dict[str, Any]) -> None:
        self.sandbox.run(self.sandbox.store.patch(resource, self.namespace, name, patch))

    def release(self, name: str, track: str, replicas: int, **template: Any) -> None:
        """A Deployment and its Service, as Sluice renders them for a track."""
        labels = {"app": "web", "sluice.dev/track": track}
        self.create(
            "deployments",
            {
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels, "annotations": template.get("annotations", {})},
                        "spec": {"containers": template.get("containers", [APP])},
                    },
                },
            },
        )
        self.create(
            "services",
            {"metadata": {"name": name, "labels": {"sluice.dev/track": track}}, "spec": {"selector": labels}},
        )

    def route(self, canary_weight: int) -> dict[str, Any]:
        backends = [("web", 100 - canary_weight), ("web-canary", canary_weight)]
        return {"rules": [{"backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in backends]}]}


@pytest.fixture
def cluster(sandbox_api: SandboxThread, metrics_namespace: str) -> Cluster:
    sandbox_api.run(sandbox_api.server.install_crd(httproute_crd()))
    sandbox_api.run(sandbox_api.store.create("namespaces", {"metadata": {"name": metrics_namespace}}))
    return Cluster(sandbox_api, metrics_namespace)


@pytest.fixture
def simulator(
    sandbox_api: SandboxThread, metrics_exporter: MetricsExporter, prometheus: PrometheusServer
) -> Iterator[TrafficSimulator]:
    simulator = TrafficSimulator(sandbox_api.store, metrics_exporter, rps=100, interval=0.25)
    sandbox_api.run(simulator.start())
    yield simulator
    sandbox_api.run(simulator.stop())


def builtin(template: str, namespace: str, service: str) -> str:
    """A built-in query template, as the analysis renders it for `service` as the canary."""
    context = QueryContext(namespace, "web", service, "web", "rev", WINDOW)
    return render_query(Metric(name=template, template=template, threshold_range={"max": 1}), context)


def requests_per_second(namespace: str, service: str) -> str:
    return f'sum(rate(http_requests_total{{namespace="{namespace}",service="{service}"}}[{WINDOW}]))'


def test_traffic_splits_by_weight_and_each_version_behaves_as_its_template_says(
    cluster: Cluster, simulator: TrafficSimulator, prometheus: PrometheusServer
) -> None:
    ns = cluster.namespace
    cluster.release("web", "stable", 3)
    cluster.release("web-canary", "canary", 1, annotations={"sandbox.sluice.dev/error-rate": "0.3"})
    cluster.create("httproutes", {"metadata": {"name": "web"}, "spec": cluster.route(canary_weight=25)})

    everything = f'sum(rate(http_requests_total{{namespace="{ns}"}}[{WINDOW}]))'
    canary_share = f"{requests_per_second(ns, 'web-canary')} / {everything}"
    prometheus.wait_for(canary_share, lambda v: abs(v - 0.25) < 0.02, timeout=TIMEOUT)
    prometheus.wait_for(requests_per_second(ns, "web"), lambda v: abs(v - 75) < 5, timeout=TIMEOUT)
    error_rate = prometheus.wait_for(
        builtin("request-error-rate", ns, "web-canary"), lambda v: abs(v - 0.3) < 0.01, timeout=TIMEOUT
    )
    assert error_rate == pytest.approx(0.3, abs=0.01)
    assert prometheus.query(builtin("request-error-rate", ns, "web")) == 0  # the stable version is healthy

    # Weight 0: the canary's series stays, and rate() reads no traffic rather than stale values.
    cluster.patch("httproutes", "web", {"spec": cluster.route(canary_weight=0)})
    prometheus.wait_for(requests_per_second(ns, "web-canary"), lambda v: v == 0, timeout=TIMEOUT)
    prometheus.wait_for(requests_per_second(ns, "web"), lambda v: abs(v - 100) < 5, timeout=TIMEOUT)
    assert outages(simulator.history, namespace=ns) == []


def test_a_virtual_service_splits_by_its_first_routes_weights(
    sandbox_api: SandboxThread,
    cluster: Cluster,
    simulator: TrafficSimulator,
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
) -> None:
    """An Istio VirtualService (Istio's own CRD) is routed as an HTTPRoute: weights, series, gateway."""
    sandbox_api.run(sandbox_api.server.install_crd(virtualservice_crd()))
    ns = cluster.namespace
    cluster.release("web", "stable", 3)
    cluster.release("web-canary", "canary", 1)

    def spec(canary_weight: int) -> dict[str, Any]:
        destinations = [("web", 100 - canary_weight), ("web-canary", canary_weight)]
        route = [{"destination": {"host": h, "port": {"number": 80}}, "weight": w} for h, w in destinations]
        return {"hosts": ["web"], "http": [{"name": "primary", "route": route}]}

    cluster.create(
        "virtualservices.networking.istio.io", {"metadata": {"name": "web-mesh"}, "spec": spec(25)}
    )
    everything = f'sum(rate(http_requests_total{{namespace="{ns}"}}[{WINDOW}]))'
    canary_share = f"{requests_per_second(ns, 'web-canary')} / {everything}"
    prometheus.wait_for(canary_share, lambda v: abs(v - 0.25) < 0.02, timeout=TIMEOUT)
    wait_until(
        lambda: metrics_exporter.gateway_totals(ns, "web-mesh")["200"] > 0,
        "the gateway counts the VirtualService",
    )

    cluster.patch("virtualservices.networking.istio.io", "web-mesh", {"spec": spec(0)})
    prometheus.wait_for(requests_per_second(ns, "web-canary"), lambda v: v == 0, timeout=TIMEOUT)
    prometheus.wait_for(requests_per_second(ns, "web"), lambda v: abs(v - 100) < 5, timeout=TIMEOUT)
    assert outages(simulator.history, namespace=ns) == []


def test_a_sidecar_with_latency_raises_the_p99(
    cluster: Cluster, simulator: TrafficSimulator, prometheus: PrometheusServer
) -> None:
    ns = cluster.namespace
    cluster.release("web", "stable", 2)
    cluster.release("web-canary", "canary", 2)
    cluster.create("httproutes", {"metadata": {"name": "web"}, "spec": cluster.route(canary_weight=50)})
    p99 = builtin("request-duration-p99", ns, "web-canary")
    prometheus.wait_for(p99, lambda v: v < 0.025, timeout=TIMEOUT)  # healthy: ~20ms

    sidecar = {"name": "proxy", "image": "envoy:1", "env": [{"name": "SANDBOX_LATENCY_MS", "value": "300"}]}
    cluster.patch(
        "deployments", "web-canary", {"spec": {"template": {"spec": {"containers": [APP, sidecar]}}}}
    )
    slow = prometheus.wait_for(p99, lambda v: v > 0.25, timeout=TIMEOUT)
    assert slow <= 0.5  # 300ms lands in the (0.25, 0.5] bucket
    assert prometheus.query(builtin("request-duration-p99", ns, "web")) < 0.025  # the stable is untouched
    # The canary's pods were replaced new-first: it served throughout its rolling update.
    assert outages(simulator.history, namespace=ns, service="web-canary") == []


def test_a_deleted_deployment_serves_until_its_pods_have_stopped(
    sandbox_api: SandboxThread, cluster: Cluster, metrics_exporter: MetricsExporter
) -> None:
    """Its pods terminate gracefully and serve meanwhile (KEP-1669): no 503 until they are gone."""
    ns = cluster.namespace
    simulator = TrafficSimulator(sandbox_api.store, metrics_exporter, rps=100, interval=0.1)
    sandbox_api.run(simulator.start())
    try:
        cluster.release("web", "stable", 1)
        cluster.release("web-canary", "canary", 1)
        cluster.create("httproutes", {"metadata": {"name": "web"}, "spec": cluster.route(canary_weight=50)})
        canary = "app=web,sluice.dev/track=canary"

        def both_serve() -> bool:  # in the latest tick, whose rates the gateway counts from now on
            latest = {record.service: record.ready_pods for record in simulator.history[-2:]}
            return bool(latest.get("web", 0) > 0 and latest.get("web-canary", 0) > 0)

        wait_until(both_serve, "both versions to serve")
        before = metrics_exporter.gateway_totals(ns, "web")["503"]  # while the pods were starting

        sandbox_api.run(sandbox_api.store.delete("deployments", ns, "web-canary"))
        records_before = len(simulator.history)
        records_while_terminating = 0
        deadline = time.monotonic() + TIMEOUT
        while True:
            totals = metrics_exporter.gateway_totals(ns, "web")
            records = len(simulator.history) - records_before
            left = sandbox_api.run(sandbox_api.store.list("pods", ns, canary))["items"]
            if not left:
                break  # gone: the totals just read may count the first 503s already
            assert all("deletionTimestamp" in pod["metadata"] for pod in left)
            assert totals["503"] == before, "the terminating pods serve"
            records_while_terminating = records  # the totals read before are of those ticks
            assert time.monotonic() < deadline, "the canary's pods are still terminating"
            time.sleep(0.05)  # the pace of polling, under the deadline above
        # Two Services per tick: at least one whole tick ran after the deletion, pods terminating.
        assert records_while_terminating >= 4
        wait_until(
            lambda: metrics_exporter.gateway_totals(ns, "web")["503"] > before, "503s once they are gone"
        )
    finally:
        sandbox_api.run(simulator.stop())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)
