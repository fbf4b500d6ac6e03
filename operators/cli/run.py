"""`sluice run`: the operator, against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from operators.application.types import ComponentTypeError
from operators.cli import webhook
from operators.metrics.hosts import FLAG, HostPattern, parse_host
from operators.operator import DEFAULT_LIVENESS, PROMETHEUS_URL_ENV, OperatorOptions, run_operator


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
        "--component-types",
        metavar="DIR",
        help="add the component types in DIR, one <type>.yaml.j2 file each (e.g. a mounted ConfigMap); "
        "read again whenever its files change",
    )
    webhook.add_arguments(parser)
    parser.set_defaults(handler=handle)


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


def _metric_host(text: str) -> HostPattern:
    try:
        return parse_host(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def handle(args: argparse.Namespace) -> int:
    options = OperatorOptions(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces or not args.namespace,
        prometheus_url=args.prometheus_url,
        metric_hosts=[str(host) for host in args.metric_hosts],
        kubeconfig=args.kubeconfig,
        context=args.context,
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        component_types=args.component_types,
        webhook=webhook.options(args),
    )
    try:
        asyncio.run(run_operator(options))
    except ComponentTypeError as error:
        print(f"sluice run: error: {error}", file=sys.stderr)
        return 2
    return 0
