"""Running the Sluice operator: kopf with our handlers, settings and clients.

Used by ``sluice run`` and, unchanged, by the integration tests, which run the
real operator in a thread against the sandbox API server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib.metadata import version as package_version
from typing import Any

import kopf
from kubernetes import client as k8s

from operators.analysis.check import MetricSources
from operators.analysis.fanin import QueryFanIn
from operators.analysis.jobs import JobRunner
from operators.application.reconciler import ApplicationReconciler
from operators.application.types import ComponentTypes
from operators.foundation.cache import CachedCluster, WatchCache, Watched
from operators.foundation.cluster import Cluster, KubeError, load_api_client
from operators.foundation.keys import ObjectKey
from operators.foundation.leadership import (
    ALWAYS_LEADING,
    FencedApiClient,
    LeaderElector,
    Leadership,
    LeaseApiClient,
    LeaseSettings,
    default_identity,
)
from operators.foundation.loop import GATE_KEY, Gate
from operators.foundation.shard import Shard
from operators.foundation.telemetry import MetricsServer, serve_metrics
from operators.handlers import applications as application_handlers
from operators.handlers import metrictemplates as template_handlers
from operators.handlers import rollouts as handlers
from operators.handlers import sidecarsets as sidecarset_handlers
from operators.handlers.context import OperatorContext
from operators.metrics.base import ProviderError
from operators.metrics.credentials import CachedSecrets, SecretReader
from operators.metrics.hosts import AllowedHosts
from operators.notifications.notifier import Notifier, parse_secret_name
from operators.rollout.reconciler import RolloutReconciler
from operators.sidecarset.reconciler import SidecarSetReconciler
from operators.sidecarset.rollouts import RolloutSidecars
from operators.sidecarset.webhook import PodInjector
from operators.webhook.server import WebhookOptions, build_server

logger = logging.getLogger(__name__)

PROMETHEUS_URL_ENV = "SLUICE_PROMETHEUS_URL"
USER_AGENT = f"sluice-operator/{package_version('sluice')}"
# Reconciliation passes in flight at once (each in a thread; see run_operator).
PASS_THREADS = 32
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
# The operator's own /metrics (foundation/telemetry.py): next to the liveness probe's 8080; the
# webhook has 9443, and 9090 is left to a Prometheus on the same host.
DEFAULT_METRICS_PORT = 8081


@dataclass
class OperatorOptions:
    namespaces: Sequence[str] = field(default_factory=list)
    all_namespaces: bool = False
    prometheus_url: str | None = None
    # Hosts (HOST or HOST:PORT) metric queries may be sent to, beyond the host of the Prometheus URL.
    metric_hosts: Sequence[str] = field(default_factory=list)
    # Hosts (HOST or HOST:PORT) a Rollout's notification targets may post to (--notification-hosts).
    notification_hosts: Sequence[str] = field(default_factory=list)
    # NAMESPACE/NAME of a Secret with notification targets for every Rollout (--notifications-secret).
    notifications_secret: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    liveness_endpoint: str | None = DEFAULT_LIVENESS
    # Users' component types, one <type>.yaml.j2 file each (e.g. a mounted ConfigMap).
    component_types: str | None = None
    # The SidecarSet pod webhook's server; None: no webhook (Rollouts still get their sidecars).
    webhook: WebhookOptions | None = None
    # Leader election through a Lease (`sluice run`'s default): every replica watches and serves
    # the webhook, only the leader reconciles. None: this process writes alone (tests, the sandbox).
    leader_election: LeaseSettings | None = None
    # The Rollouts, Applications and SidecarSets this operator reconciles (`--shard I/N`).
    shard: Shard = field(default_factory=Shard)
    # This process in the Lease and in its requests' User-Agent; None: host (or pod), pid, random.
    identity: str | None = None
    # Serve the operator's own metrics at http://METRICS_HOST:METRICS_PORT/metrics; None: not served
    # (`sluice run` serves them by default), 0: on a free port (tests: see OperatorThread.metrics_port).
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"

    def resolved_prometheus_url(self) -> str | None:
        return self.prometheus_url or os.environ.get(PROMETHEUS_URL_ENV) or None


def build_context(
    options: OperatorOptions, api: k8s.ApiClient, types: ComponentTypes | None = None
) -> OperatorContext:
    """Clients and reconcilers; raises ComponentTypeError for an unusable --component-types directory."""
    cache = WatchCache(watched_kinds(), namespaces=() if options.all_namespaces else options.namespaces)
    cluster = CachedCluster(api, cache)
    # Past the watch cache: Secrets are read by name (never listed or watched), and job metrics'
    # Jobs are not watched (nor cached): the runner lists them only while some run.
    direct = Cluster(api)
    secrets = secret_reader(direct)
    metrics = metric_sources(options, secrets=secrets, jobs=JobRunner(direct))
    reconciler = RolloutReconciler(
        cluster=cluster,
        metrics=metrics,
        sidecars=RolloutSidecars(cluster),
        notifier=notifier(options, secrets),
    )
    types = types or ComponentTypes(options.component_types)
    applications = ApplicationReconciler(cluster=cluster, types=types)
    return OperatorContext(
        reconciler=reconciler,
        applications=applications,
        sidecarsets=SidecarSetReconciler(cluster),
        pod_injector=PodInjector(cluster),
        cache=cache,
    )


def watched_kinds() -> list[Watched]:
    """Every kind the handlers watch, with the label selector of its watch."""
    kinds = {
        watched.key: watched
        for watched in (
            *handlers.ROLLOUTS.watched(),
            *application_handlers.APPLICATIONS.watched(),
            *sidecarset_handlers.WATCHED,
            *template_handlers.WATCHED,
        )
    }
    # Objects another kind owns without a watch of their own (an Application's Rollouts) are
    # listed by their owner's label: index it.
    for kind in (handlers.ROLLOUTS, application_handlers.APPLICATIONS):
        for owned in kind.owned:
            found = kinds.get(owned.watched.key)
            if not owned.server_side and found is not None:
                kinds[found.key] = replace(found, index_label=owned.owner_label)
    return list(kinds.values())


def server_side_selectors() -> dict[tuple[str, str], str]:
    """(group, plural) -> label selector, for the kinds of which Sluice watches only its own objects."""
    selectors = {
        (owned.group, owned.plural): owned.selector
        for kind in (handlers.ROLLOUTS, application_handlers.APPLICATIONS)
        for owned in kind.owned
        if owned.server_side
    }
    selectors[("", "pods")] = sidecarset_handlers.POD_SELECTOR
    return selectors


def secret_reader(cluster: Cluster) -> CachedSecrets:
    """Reads the Secrets metrics name, by GET, each at most once per few seconds (see CachedSecrets).

    A GET rather than a watch: Secrets are the one kind the operator reads by name only, and
    watching every Secret of the cluster would hold them all in its memory, for a few names.
    """

    def fetch(namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return cluster.get(ObjectKey("v1", "Secret", namespace, name))
        except KubeError as error:
            why = error.reason or str(error.status)
            raise ProviderError(f'cannot read Secret "{name}" in namespace {namespace}: {why}') from None
        except Exception as error:  # the API unreachable: this check's Error, never the pass's crash
            why = type(error).__name__
            raise ProviderError(f'cannot read Secret "{name}" in namespace {namespace}: {why}') from None

    return CachedSecrets(fetch)


def metric_sources(
    options: OperatorOptions, secrets: SecretReader | None = None, jobs: JobRunner | None = None
) -> MetricSources:
    """Raises ValueError for a malformed --metric-hosts entry."""
    prometheus_url = options.resolved_prometheus_url()
    return MetricSources(
        secrets=secrets,
        jobs=jobs,
        allowed=AllowedHosts.of([prometheus_url], options.metric_hosts),
        default_addresses={"prometheus": prometheus_url} if prometheus_url else {},
        # One per operator: the checks of Rollouts using the same built-in template against
        # the same Prometheus share one query per gather window.
        fanin=QueryFanIn(),
    )


def notifier(options: OperatorOptions, secrets: SecretReader | None) -> Notifier:
    """Raises ValueError for a malformed --notification-hosts or --notifications-secret."""
    return Notifier(
        secrets=secrets,
        allowed=AllowedHosts.of([], options.notification_hosts),
        operator_secret=(
            parse_secret_name(options.notifications_secret) if options.notifications_secret else None
        ),
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


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps no "last handled" copy of our objects: nothing to diff, and no write for it.

    kopf stores one (an annotation patch) after every change of an object that has a
    changing handler (the Rollout's on.delete, which hands back what it adopted). That is a
    write per spec or annotation change, against the budget, and it races the loop's status
    write (a 409, and a pass that decides again on objects it had already written). Sluice
    has no on.create/on.update handlers, the only users of the diff.
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def operator_settings(webhook_server: kopf.WebhookServer | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = NoDiffBase()
    # The MutatingWebhookConfiguration is a manifest (manifests/webhook.yaml), not managed by kopf.
    settings.admission.server = webhook_server
    settings.posting.level = logging.WARNING  # our own Events say what matters; kopf's are noise
    for (group, plural), selector in server_side_selectors().items():
        # A core kind is named by its plural alone ("services"); others by (group, plural).
        settings.watching.label_selectors[(group, plural) if group else plural] = selector
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    return settings


async def run_operator(
    options: OperatorOptions,
    stop_flag: Any = None,
    ready_flag: Any = None,
    metrics_started: Callable[[MetricsServer], None] | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or forever). Blocks; call from an event loop.

    Raises ValueError for leader election settings that cannot work, before connecting.
    ``metrics_started`` is told the /metrics server (its port) once it listens.
    """
    types = ComponentTypes(options.component_types)  # first: a bad directory fails before connecting
    identity = options.identity or default_identity()
    election = options.leader_election.config(identity, options.shard) if options.leader_election else None
    api = load_api_client(options.kubeconfig, options.context)
    user_agent = f"{USER_AGENT} ({identity})"
    elector: LeaderElector | None = None
    leadership: Leadership = ALWAYS_LEADING
    writer = api
    if election is not None:
        lease_api = LeaseApiClient(api.configuration, timeout=election.renew_deadline)
        lease_api.user_agent = user_agent
        elector = LeaderElector(Cluster(lease_api), election)
        leadership = elector
        # The reconcilers' writes go through the fence: none while this process does not lead.
        writer = FencedApiClient(api.configuration, elector.leading)
    context = build_context(options, writer, types)
    writer.user_agent = api.user_agent = user_agent  # each replica's requests say which it is
    kopf_agent = f"{user_agent} kopf/{package_version('kopf')}"
    info = _with_user_agent(connection_info(api.configuration), kopf_agent)
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    application_handlers.register(registry)
    sidecarset_handlers.register(registry, webhook=options.webhook is not None)
    template_handlers.register(registry)
    # Every replica serves the webhook and publishes its CA, leader or not: not through the fence.
    webhook_server = build_server(options.webhook, Cluster(api)) if options.webhook else None

    def login(**_: Any) -> kopf.ConnectionInfo:
        return info

    def leading(**_: Any) -> bool:
        return leadership.leading()

    kopf.on.login(registry=registry)(login)
    # The liveness endpoint's JSON says whether this replica leads ({"leading": true}).
    kopf.on.probe(id="leading", registry=registry)(leading)
    # A finished analysis check wakes its Rollout's loop (checks run in their own threads).
    loop = asyncio.get_running_loop()
    # Passes run in threads (the kubernetes client blocks). asyncio's default pool has cpus + 4
    # threads: a few slow writes would then hold every other Rollout's pass back.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=PASS_THREADS, thread_name_prefix="sluice-pass"))
    checks = context.reconciler.checks

    def wake(namespace: str, name: str) -> None:
        loop.call_soon_threadsafe(context.wakeups.wake, namespace, name)

    checks.on_done = wake
    context.reconciler.hooks.on_done = wake  # so does a finished batch of lifecycle hooks
    if options.shard.sharded:
        logger.info("reconciling shard %s of the Rollouts, Applications and SidecarSets", options.shard)
    election_task = asyncio.create_task(elector.run(), name="sluice-leader-election") if elector else None
    metrics_server = None
    if options.metrics_port is not None:
        # Every replica serves its own metrics, leader or not (a follower's API requests count too).
        metrics_server = serve_metrics(options.metrics_port, options.metrics_host)
        if metrics_started is not None:
            metrics_started(metrics_server)
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
            memo=kopf.Memo({"context": context, GATE_KEY: Gate(leadership, options.shard)}),
        )
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        if elector is not None and election_task is not None:
            # After kopf stopped the loops: stop leading (the fence closes) and release the Lease,
            # so that another replica takes over at once rather than after the lease duration.
            elector.stop()
            await election_task
        checks.close()
        if context.reconciler.metrics.fanin is not None:
            context.reconciler.metrics.fanin.close()
        if context.reconciler.metrics.jobs is not None:
            context.reconciler.metrics.jobs.close()


@dataclass(frozen=True)
class _NamedConnection(kopf.ConnectionInfo):
    """kopf's credentials, with our User-Agent on kopf's own requests (watches, finalizers)."""

    user_agent: str | None = None

    def as_http_headers(self) -> dict[str, str]:
        headers = dict(super().as_http_headers())
        if self.user_agent:
            headers["User-Agent"] = self.user_agent
        return headers


def _with_user_agent(info: kopf.ConnectionInfo, user_agent: str) -> kopf.ConnectionInfo:
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    return _NamedConnection(**fields, user_agent=user_agent)
