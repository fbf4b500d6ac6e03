"""kubectl's connection flags for the commands that talk to a cluster, and the namespace they mean."""

from __future__ import annotations

import argparse

from kubernetes import config as k8s_config

from operators.foundation.cluster import Cluster, load_api_client


def add_connection_args(parser: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    parser.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")


def connect(args: argparse.Namespace) -> tuple[Cluster, str]:
    """The cluster of the kubeconfig and context asked for, and the namespace meant (as kubectl picks it)."""
    cluster = Cluster(load_api_client(args.kubeconfig, args.context))
    return cluster, args.namespace or context_namespace(args.kubeconfig, args.context)


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except (k8s_config.ConfigException, FileNotFoundError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")
