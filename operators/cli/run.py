"""`sluice run`: the operator, against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from operators.application.types import ComponentTypeError
from operators.cli import webhook
from operators.foundation.leadership import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_LEASE_NAME,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    LeaseSettings,
)
from operators.foundation.shard import Shard, parse_shard
from operators.metrics.hosts import FLAG, HostPattern, parse_host
from operators.notifications.notifier import HOSTS_FLAG, SECRET_FLAG, parse_secret_name
from operators.operator import (
    DEFAULT_LIVENESS,
    DEFAULT_METRICS_PORT,
    PROMETHEUS_URL_ENV,
    OperatorOptions,
    run_operator,
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="run the operator",
        description="Run the Sluice operator against the current kubeconfig context, or in-cluster "
        "with the pod's service account.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--prometheus-url",
        metavar="URL",
        help=f"Prometheus for metrics that name no address (default: ${PROMETHEUS_URL_ENV})",
    )
    add_metric_hosts_argument(parser)
    add_notification_arguments(parser)
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=DEFAULT_LIVENESS,
        help=f"serve the liveness probe here (default: {DEFAULT_LIVENESS}; 'off' to disable)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_metrics_port,
        default=DEFAULT_METRICS_PORT,
        metavar="PORT",
        help="serve the operator's own Prometheus metrics at :PORT/metrics "
        f"(default: {DEFAULT_METRICS_PORT}; 'off' to disable)",
    )
    parser.add_argument(
        "--component-types",
        metavar="DIR",
        help="add the component types in DIR, one <type>.yaml.j2 file each (e.g. a mounted ConfigMap); "
        "read again whenever its files change",
    )
    webhook.add_arguments(parser)
    add_scale_arguments(parser)
    parser.set_defaults(handler=handle)


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Leader election (high availability) and sharding (horizontal scale)."""
    group = parser.add_argument_group(
        "high availability and sharding",
        "Run two or more replicas: every replica watches and serves the webhook, the one holding a "
        "coordination.k8s.io Lease reconciles, and another takes over within one lease duration if it "
        "goes. With --shard, each operator Deployment reconciles its share of the objects, with a Lease "
        "of its own.",
    )
    group.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reconcile only while holding the Lease (default: on; --no-leader-election only when "
        "exactly one operator process runs per shard)",
    )
    group.add_argument(
        "--lease-name",
        default=DEFAULT_LEASE_NAME,
        metavar="NAME",
        help=f"the Lease (default: {DEFAULT_LEASE_NAME}; sharded: NAME-shard-I-of-N). Operators with the "
        "same lease name and namespace are one installation: they never reconcile the same object at once",
    )
    group.add_argument(
        "--lease-namespace",
        metavar="NS",
        help="the Lease's namespace (default: $POD_NAMESPACE, else the service account's namespace "
        "in-cluster, else default)",
    )
    group.add_argument(
        "--lease-duration",
        type=_whole_seconds,
        default=DEFAULT_LEASE_DURATION,
        metavar="SECONDS",
        help="how long others wait, after the Lease was last renewed, before taking it over; whole "
        f"seconds (default: {DEFAULT_LEASE_DURATION})",
    )
    group.add_argument(
        "--renew-deadline",
        type=_seconds,
        default=DEFAULT_RENEW_DEADLINE,
        metavar="SECONDS",
        help="the leader stops reconciling when it could not renew the Lease for this long; shorter than "
        f"--lease-duration (default: {DEFAULT_RENEW_DEADLINE:g})",
    )
    group.add_argument(
        "--retry-period",
        type=_seconds,
        default=DEFAULT_RETRY_PERIOD,
        metavar="SECONDS",
        help="how often the leader renews and the others try to acquire; 1.2 times it must be shorter "
        f"than --renew-deadline (default: {DEFAULT_RETRY_PERIOD:g})",
    )
    group.add_argument(
        "--identity",
        metavar="NAME",
        help="this process in the Lease and in its requests' User-Agent; unique per process "
        "(default: $POD_NAME or the host name, the pid and a random suffix)",
    )
    group.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="I/N",
        help="reconcile only shard I of N (0 <= I < N): the Rollouts, Applications and SidecarSets whose "
        "namespace/name hashes (SHA-256) to I modulo N; run one operator Deployment per shard "
        "(default: 0/1, everything)",
    )


def add_metric_hosts_argument(parser: argparse.ArgumentParser) -> None:
    """`--metric-hosts HOST[:PORT]`, repeatable; `sluice sandbox` takes it too."""
    parser.add_argument(
        FLAG,
        action="append",
        default=[],
        type=_metric_host,
        metavar="HOST[:PORT]",
        help="also allow metric queries to this host (repeatable; any port unless one is given). "
        "By default only the host of --prometheus-url is allowed: a metric naming any other "
        "address is refused before a request is sent",
    )


def add_notification_arguments(parser: argparse.ArgumentParser) -> None:
    """`--notification-hosts HOST[:PORT]` (repeatable) and `--notifications-secret NAMESPACE/NAME`."""
    parser.add_argument(
        HOSTS_FLAG,
        action="append",
        default=[],
        type=_notification_host,
        metavar="HOST[:PORT]",
        help="allow a Rollout's notification targets (spec.notifications) to post to this host "
        "(repeatable; any port unless one is given); by default none is allowed",
    )
    parser.add_argument(
        SECRET_FLAG,
        type=_secret_name,
        metavar="NAMESPACE/NAME",
        help="a Secret of notification targets told about every Rollout's releases "
        "(keys slack, teams, webhook, cloudevents, events, cloudeventsMode)",
    )


def _notification_host(text: str) -> HostPattern:
    try:
        return parse_host(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("metric host", "notification host")) from None


def _secret_name(text: str) -> str:
    try:
        namespace, name = parse_secret_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{namespace}/{name}"


def _metric_host(text: str) -> HostPattern:
    try:
        return parse_host(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _metrics_port(text: str) -> int | None:
    if text == "off":
        return None
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (or 'off')") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 1 to 65535 (or 'off')")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def _whole_seconds(text: str) -> int:
    value = _seconds(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r}: a Lease counts whole seconds (leaseDurationSeconds)")
    return int(value)


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def handle(args: argparse.Namespace) -> int:
    leases = LeaseSettings(
        name=args.lease_name,
        namespace=args.lease_namespace,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
    )
    options = OperatorOptions(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces or not args.namespace,
        prometheus_url=args.prometheus_url,
        metric_hosts=[str(host) for host in args.metric_hosts],
        notification_hosts=[str(host) for host in args.notification_hosts],
        notifications_secret=args.notifications_secret,
        kubeconfig=args.kubeconfig,
        context=args.context,
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        metrics_port=args.metrics_port,
        component_types=args.component_types,
        webhook=webhook.options(args),
        leader_election=leases if args.leader_election else None,
        shard=args.shard,
        identity=args.identity,
    )
    problem = _election_problem(options)
    if problem:
        print(f"sluice run: error: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_operator(options))
    except ComponentTypeError as error:
        print(f"sluice run: error: {error}", file=sys.stderr)
        return 2
    return 0


def _election_problem(options: OperatorOptions) -> str | None:
    """What is wrong with the leader election flags, checked before anything starts."""
    if options.identity is not None and not options.identity.strip():
        return "--identity must not be empty"
    if options.leader_election is None:
        return None
    try:
        options.leader_election.config(options.identity or "check", options.shard)
    except ValueError as error:
        return str(error)
    return None
