"""Everything a release needs, on loopback: the `sluice sandbox` environment.

The sandbox API server (with Sluice's CRDs and the Gateway API's GatewayClass, Gateway and
HTTPRoute served, and the Gateway ``public`` in ``default``), the workload simulator (pods and
Deployment status), the Gateway controller (the status of routes and Gateways), the traffic
simulator (synthetic requests split by HTTPRoute weights, exported as Prometheus metrics), a real
Prometheus scraping them, and the Sluice operator itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from operators.api.crdgen import render_crds
from operators.operator import OperatorOptions
from operators.operator_thread import OperatorThread
from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.gateway import install_gateway_api
from sluice_sandbox.gateway_controller import GatewayController
from sluice_sandbox.jobs import JobController
from sluice_sandbox.prometheus import PrometheusServer, free_port
from sluice_sandbox.requestlog import RequestLog
from sluice_sandbox.traffic import DEFAULT_MARKED, MarkedRequests, TrafficSimulator
from sluice_sandbox.workloads import WorkloadSimulator

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass
class SandboxOptions:
    kubeconfig: Path
    api_port: int = 0
    # An external Prometheus to use instead of launching one (it must scrape the exporter).
    prometheus_url: str | None = None
    ready_delay: float = 1.0
    # How long a deleted pod's containers take to stop (it serves meanwhile), at most its grace period.
    stop_delay: float = 1.0
    requests_per_second: float = 50.0
    # The simulated requests carrying a header (--header, --header-share): header routes' traffic.
    marked: MarkedRequests = DEFAULT_MARKED
    scrape_interval: str = "1s"
    run_operator: bool = True
    # The operator's --metric-hosts: hosts beyond the sandbox's Prometheus that metrics may query.
    metric_hosts: Sequence[str] = ()
    # The operator's --notification-hosts: where Rollouts' notifications may go (local receivers).
    notification_hosts: Sequence[str] = ("127.0.0.1", "localhost")
    # More CRDs to serve (`sluice sandbox --crds DIR`), installed after the built-in ones, which
    # they replace when named alike (e.g. the upstream HTTPRoute for the permissive one).
    crds: Sequence[Mapping[str, Any]] = ()


@dataclass
class Sandbox:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    options: SandboxOptions
    api: SandboxThread | None = None
    exporter: MetricsExporter | None = None
    prometheus: PrometheusServer | None = None
    operator: OperatorThread | None = None
    traffic: TrafficSimulator | None = None
    operator_metrics_port: int = 0

    @property
    def requests(self) -> RequestLog:
        """
        Every HTTP request the sandbox API server answered (see :mod:`sluice_sandbox.requestlog`),
        e.g. ``sandbox.requests.snapshot(user_agent="sluice-operator")``.
        """
        assert self.api is not None, "the sandbox is not started"
        return self.api.requests

    @property
    def prometheus_url(self) -> str:
        if self.options.prometheus_url:
            return self.options.prometheus_url
        assert self.prometheus is not None, "the sandbox is not started"
        return self.prometheus.url

    def start(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def operator_metrics_url(self) -> str | None:
        """The sandbox operator's own /metrics (scraped by the sandbox's Prometheus), if it runs one."""
        return f"http://{LOOPBACK}:{self.operator_metrics_port}/metrics" if self.operator else None

    def _start(self) -> None:
        self.exporter = MetricsExporter()
        # The operator's /metrics port is chosen now: Prometheus starts before it and scrapes it.
        self.operator_metrics_port = free_port()
        targets = [self.exporter.target]
        if self.options.run_operator:
            targets.append(f"{LOOPBACK}:{self.operator_metrics_port}")
        if not self.options.prometheus_url:
            # Started first: a missing binary is the likeliest failure, and says how to fix it.
            self.prometheus = PrometheusServer(targets, scrape_interval=self.options.scrape_interval)
            self.prometheus.start()
        exporter = self.exporter
        factory = with_controllers(
            functools.partial(
                WorkloadSimulator, ready_delay=self.options.ready_delay, stop_delay=self.options.stop_delay
            ),
            GatewayController,
            JobController,
            functools.partial(self._traffic_simulator, exporter=exporter),
        )
        self.options.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.api = SandboxThread(
            kubeconfig=self.options.kubeconfig, port=self.options.api_port, server_factory=factory
        )
        self.api.start()
        for crd in (yaml.safe_load(text) for text in render_crds().values()):
            self.api.run(self.api.server.install_crd(crd))
        self.api.run(install_gateway_api(self.api.server.store))
        for crd in self.options.crds:
            self.api.run(self.api.server.install_crd(crd))
        if self.options.run_operator:
            self.operator = OperatorThread(
                OperatorOptions(
                    all_namespaces=True,
                    prometheus_url=self.prometheus_url,
                    metric_hosts=list(self.options.metric_hosts),
                    notification_hosts=list(self.options.notification_hosts),
                    kubeconfig=str(self.options.kubeconfig),
                    liveness_endpoint=None,
                    metrics_port=self.operator_metrics_port,
                    metrics_host=LOOPBACK,
                )
            ).start()

    def _traffic_simulator(self, store: Any, exporter: MetricsExporter) -> TrafficSimulator:
        self.traffic = TrafficSimulator(
            store, exporter, rps=self.options.requests_per_second, marked=self.options.marked
        )
        return self.traffic

    def stop(self) -> None:
        """Stop everything that started, in reverse order; safe to call twice."""
        for stop in (self._stop_operator, self._stop_api, self._stop_prometheus, self._stop_exporter):
            try:
                stop()
            except Exception as error:  # keep stopping the rest
                logger.warning("stopping the sandbox: %s", error)

    def _stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def _stop_api(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None

    def _stop_prometheus(self) -> None:
        if self.prometheus is not None:
            self.prometheus.close()
            self.prometheus = None

    def _stop_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
