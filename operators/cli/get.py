"""`sluice get [NAME]`: Rollouts as a table, one Rollout as a tree of what it runs (kubectl's conventions).

Output goes through rich: tables and trees with colour on a terminal, plain text (no escape codes,
no wrapping) when piped, as kubectl does. `-o json|yaml` prints the objects themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from operators.api import application, sidecarset
from operators.api.base import API_VERSION
from operators.api.refs import RolloutRef
from operators.api.rollout import KIND, RolloutSpec
from operators.cli import presentation as p
from operators.cli.kubeargs import add_connection_args, connect
from operators.foundation.cluster import Cluster
from operators.foundation.keys import ObjectKey
from operators.rollout.inventory import canary_deployment_key, rollout_key, stable_deployment_key
from operators.rollout.routing import routing_of

OUTPUTS = ("json", "yaml", "wide")


def add_parsers(commands: Any) -> None:
    parser = commands.add_parser(
        "get",
        help="list Rollouts, or show one as a tree",
        description="List Rollouts (with --all also Applications and SidecarSets); for one Rollout, a tree: "
        "its route weights, stable and canary Deployments, their pods, and the last check's metrics.",
    )
    parser.add_argument("name", nargs="?", help="one Rollout: show its tree")
    add_connection_args(parser, all_namespaces=True)
    parser.add_argument("--all", action="store_true", help="also Applications and SidecarSets")
    parser.add_argument("-o", "--output", choices=OUTPUTS, help="json|yaml: the objects; wide: more columns")
    parser.set_defaults(handler=handle_get)


def console() -> Console:
    """A terminal gets colour and its width; a pipe gets plain text that is never wrapped."""
    found = Console()
    return found if found.is_terminal else Console(width=1000, no_color=True, highlight=False)


def handle_get(args: argparse.Namespace) -> int:
    cluster, namespace = connect(args)
    scope = None if args.all_namespaces else namespace
    out = console()
    now = datetime.now(UTC)
    if args.name:
        if args.all_namespaces:
            print("sluice get: a name needs a namespace: use -n, not -A", file=sys.stderr)
            return 2
        body = cluster.get(rollout_key(namespace, args.name))
        if body is None:
            print(f'sluice get: rollout "{args.name}" not found in namespace {namespace}', file=sys.stderr)
            return 1
        if args.output in ("json", "yaml"):
            print_objects([body], args.output)
            return 0
        out.print(rollout_tree(body, related_objects(cluster, body)))
        return 0
    rollouts = cluster.list_objects(API_VERSION, KIND, scope)
    found = {"Rollout": rollouts}
    if args.all:
        found["Application"] = cluster.list_objects(API_VERSION, application.KIND, scope)
        found["SidecarSet"] = cluster.list_objects(API_VERSION, sidecarset.KIND, None)
    if args.output in ("json", "yaml"):
        print_objects([obj for objects in found.values() for obj in objects], args.output)
        return 0
    if not any(found.values()):
        where = "any namespace" if scope is None else f"namespace {scope}"
        print(f"No resources found in {where}.", file=sys.stderr)
        return 0
    wide = args.output == "wide"
    for kind, objects in found.items():
        if objects:
            out.print(table(kind, objects, now, all_namespaces=scope is None, wide=wide))
    return 0


def print_objects(objects: Sequence[Mapping[str, Any]], output: str) -> None:
    """One object as itself, several as a kubectl List, as `kubectl get -o` prints them."""
    document: Any = (
        dict(objects[0])
        if len(objects) == 1
        else {"apiVersion": "v1", "kind": "List", "items": list(objects), "metadata": {}}
    )
    if output == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False), end="")


def table(
    kind: str, objects: Sequence[Mapping[str, Any]], now: datetime, *, all_namespaces: bool, wide: bool
) -> Table:
    columns, row = {
        "Rollout": (p.ROLLOUT_COLUMNS, p.rollout_row),
        "Application": (p.APPLICATION_COLUMNS, p.application_row),
        "SidecarSet": (p.SIDECARSET_COLUMNS, p.sidecarset_row),
    }[kind]
    namespaced = all_namespaces and kind != "SidecarSet"
    headers = (["NAMESPACE"] if namespaced else []) + columns + (["MESSAGE"] if wide else [])
    # kubectl's look: no borders, two spaces between columns, never wrapped.
    result = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold")
    for header in headers:
        result.add_column(header, no_wrap=True)
    ordered = sorted(objects, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
    for obj in ordered:
        cells = row(obj, now)
        if namespaced:
            cells = [str(obj["metadata"].get("namespace")), *cells]
        if wide:
            cells.append(str(p.status_of(obj).get("message") or ""))
        result.add_row(*cells)
    return result


def related_objects(cluster: Cluster, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the tree shows besides the Rollout: its route, its Deployments and their pods."""
    meta = body["metadata"]
    ref = RolloutRef(meta["name"], meta["namespace"], meta.get("uid", ""))
    try:
        spec = RolloutSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return {"routes": [], "deployments": []}  # an invalid spec: the status says why
    routes: list[tuple[ObjectKey, str]] = []
    routing = routing_of(ref, spec)
    if routing is not None:
        objects = {key: cluster.get(key) for key in routing.keys()}  # noqa: SIM118 (a method, not a dict)
        weights = routing.observed(objects)
        for key, obj in objects.items():
            text = "not found" if obj is None else "no weights"
            if obj is not None and weights is not None:
                text = (
                    f"{routing.target.stable_service} {weights.stable}%, "
                    f"{routing.target.canary_service} {weights.canary}%"
                )
            routes.append((key, text))
    deployments = []
    for track, key in (
        ("stable", stable_deployment_key(ref, spec)),
        ("canary", canary_deployment_key(ref, spec)),
    ):
        deployment = cluster.get(key)
        pods: list[dict[str, Any]] = []
        if deployment is not None:
            labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            pods = cluster.list_objects("v1", "Pod", ref.namespace, selector) if selector else []
        deployments.append({"track": track, "key": key, "object": deployment, "pods": pods})
    return {"routes": routes, "deployments": deployments}


def rollout_tree(body: Mapping[str, Any], related: Mapping[str, Any]) -> Tree:
    meta = body["metadata"]
    status = p.status_of(body)
    head = f"[bold]Rollout[/] {meta['namespace']}/{meta['name']}  {p.strategy_of(body)}  {p.phase_text(body)}"
    if p.step_position(body) is not None:
        head += f"  step {p.step_text(body)}"
    tree = Tree(head + f"  canary weight {p.weight_text(body)}")
    if status.get("message"):
        tree.add(f"Message: {status['message']}")
    for key, text in related.get("routes") or []:
        tree.add(f"[bold]{key.kind}[/] {key.name}: {text}")
    revisions = {"stable": status.get("stableRevision"), "canary": status.get("canaryRevision")}
    for item in related.get("deployments") or []:
        deployment, key = item["object"], item["key"]
        if deployment is None:
            tree.add(f"[bold]Deployment[/] {key.name} ({item['track']}): not found")
            continue
        wanted = int((deployment.get("spec") or {}).get("replicas") or 0)
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        revision = revisions[item["track"]] or "-"
        branch = tree.add(
            f"[bold]Deployment[/] {key.name} ({item['track']}, revision {revision}): {ready}/{wanted} ready"
        )
        for pod in sorted(item["pods"], key=lambda pod: pod["metadata"]["name"]):
            branch.add(f"Pod {pod['metadata']['name']}  {pod_state(pod)}")
    last_check = (status.get("analysis") or {}).get("lastCheck")
    if last_check:
        specs = p.metric_specs(body)
        checks = tree.add(
            f"[bold]Analysis[/] last check {last_check.get('time')}: {last_check.get('outcome')}"
        )
        for metric in last_check.get("metrics") or []:
            name = str(metric.get("name"))
            value, threshold = p.value_text(metric.get("value")), p.threshold_text(specs.get(name))
            checks.add(f"{name} = {value}  (threshold {threshold})  {metric.get('outcome')}")
    return tree


def pod_state(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return f"{status.get('phase') or 'Pending'}  {'ready' if ready else 'not ready'}"
