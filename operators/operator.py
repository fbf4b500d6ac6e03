"""Running the Sluice operator: kopf with our handlers, settings and clients.

Used by ``sluice run`` and, unchanged, by the integration tests, which run the
real operator in a thread against the sandbox API server.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client as k8s

from operators.analysis.check import MetricSources
from operators.application.reconciler import ApplicationReconciler
from operators.application.types import ComponentTypes
from operators.foundation.cluster import Cluster, load_api_client
from operators.handlers import applications as application_handlers
from operators.handlers import rollouts as handlers
from operators.handlers import sidecarsets as sidecarset_handlers
from operators.handlers.context import OperatorContext
from operators.metrics.hosts import AllowedHosts
from operators.rollout.reconciler import RolloutReconciler
from operators.sidecarset.reconciler import SidecarSetReconciler
from operators.sidecarset.rollouts import RolloutSidecars
from operators.sidecarset.webhook import PodInjector
from operators.webhook.server import WebhookOptions, build_server

PROMETHEUS_URL_ENV = "SLUICE_PROMETHEUS_URL"
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


@dataclass
class OperatorOptions:
    namespaces: Sequence[str] = field(default_factory=list)
    all_namespaces: bool = False
    prometheus_url: str | None = None
    # Hosts (HOST or HOST:PORT) metric queries may be sent to, beyond the host of the Prometheus URL.
    metric_hosts: Sequence[str] = field(default_factory=list)
    kubeconfig: str | None = None
    context: str | None = None
    liveness_endpoint: str | None = DEFAULT_LIVENESS
    # Users' component types, one <type>.yaml.j2 file each (e.g. a mounted ConfigMap).
    component_types: str | None = None
    # The SidecarSet pod webhook's server; None: no webhook (Rollouts still get their sidecars).
    webhook: WebhookOptions | None = None

    def resolved_prometheus_url(self) -> str | None:
        return self.prometheus_url or os.environ.get(PROMETHEUS_URL_ENV) or None


def build_context(
    options: OperatorOptions, api: k8s.ApiClient, types: ComponentTypes | None = None
) -> OperatorContext:
    """Clients and reconcilers; raises ComponentTypeError for an unusable --component-types directory."""
    cluster = Cluster(api)
    reconciler = RolloutReconciler(
        cluster=cluster, metrics=metric_sources(options), sidecars=RolloutSidecars(cluster)
    )
    types = types or ComponentTypes(options.component_types)
    applications = ApplicationReconciler(cluster=cluster, types=types)
    return OperatorContext(
        reconciler=reconciler,
        applications=applications,
        sidecarsets=SidecarSetReconciler(cluster),
        pod_injector=PodInjector(cluster),
    )


def metric_sources(options: OperatorOptions) -> MetricSources:
    """Raises ValueError for a malformed --metric-hosts entry."""
    prometheus_url = options.resolved_prometheus_url()
    return MetricSources(
        allowed=AllowedHosts.of([prometheus_url], options.metric_hosts),
        default_addresses={"prometheus": prometheus_url} if prometheus_url else {},
    )


def connection_info(configuration: k8s.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials taken from the same configuration our own client uses."""
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def operator_settings(webhook_server: kopf.WebhookServer | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # The MutatingWebhookConfiguration is a manifest (manifests/webhook.yaml), not managed by kopf.
    settings.admission.server = webhook_server
    settings.posting.level = logging.WARNING  # our own Events say what matters; kopf's are noise
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    return settings


async def run_operator(
    options: OperatorOptions,
    stop_flag: Any = None,
    ready_flag: Any = None,
) -> None:
    """Run until ``stop_flag`` is set (or forever). Blocks; call from an event loop."""
    types = ComponentTypes(options.component_types)  # first: a bad directory fails before connecting
    api = load_api_client(options.kubeconfig, options.context)
    context = build_context(options, api, types)
    info = connection_info(api.configuration)
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    application_handlers.register(registry)
    sidecarset_handlers.register(registry, webhook=options.webhook is not None)
    webhook_server = build_server(options.webhook, context.reconciler.cluster) if options.webhook else None

    def login(**_: Any) -> kopf.ConnectionInfo:
        return info

    kopf.on.login(registry=registry)(login)
    # A finished analysis check wakes its Rollout's loop (checks run in their own threads).
    loop = asyncio.get_running_loop()
    checks = context.reconciler.checks

    def wake(namespace: str, name: str) -> None:
        loop.call_soon_threadsafe(context.wakeups.wake, namespace, name)

    checks.on_done = wake
    try:
        await kopf.operator(
            registry=registry,
            settings=operator_settings(webhook_server),
            standalone=True,
            clusterwide=options.all_namespaces,
            namespaces=list(options.namespaces),
            liveness_endpoint=options.liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            memo=kopf.Memo(context=context),
        )
    finally:
        checks.close()
