"""`sluice status|promote|abort|retry`: drive a release from the terminal.

Commands are the same annotations plain kubectl can set; these just save typing
and show the status in a readable form.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import config as k8s_config

from operators.api.rollout import Phase, RolloutStatus
from operators.foundation.cluster import Cluster, KubeError, load_api_client
from operators.rollout.commands import Command
from operators.rollout.inventory import rollout_key

FINAL_PHASES = {Phase.HEALTHY.value, Phase.DEGRADED.value, Phase.ABORTED.value}


def add_parsers(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="show a Rollout's release", description="Show a Rollout's release."
    )
    _common(status)
    status.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="follow until the release is Healthy, Degraded, Aborted or stalled; exit 0 only for Healthy",
    )
    status.add_argument(
        "--timeout", type=float, default=0, metavar="SECONDS", help="give up watching after this"
    )
    status.set_defaults(handler=handle_status)
    for command, text in (
        (Command.PROMOTE, "end the current pause"),
        (Command.ABORT, "roll the release back now"),
        (Command.RETRY, "start a rolled-back release again"),
    ):
        parser = commands.add_parser(
            command.value,
            help=text,
            description=f"{text} (sets the annotation {command.annotation}"
            + (f"; with --full, {Command.PROMOTE_FULL.annotation}" if command == Command.PROMOTE else "")
            + ").",
        )
        _common(parser)
        if command == Command.PROMOTE:
            parser.add_argument("--full", action="store_true", help="skip all remaining steps and analysis")
        parser.set_defaults(handler=handle_command, command_name=command.value)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the Rollout")
    parser.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")


def _connect(args: argparse.Namespace) -> tuple[Cluster, str]:
    cluster = Cluster(load_api_client(args.kubeconfig, args.context))
    return cluster, args.namespace or _context_namespace(args.kubeconfig, args.context)


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except (k8s_config.ConfigException, FileNotFoundError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def handle_command(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    command = Command.PROMOTE_FULL if getattr(args, "full", False) else Command(args.command_name)
    value = str(time.time_ns())
    try:
        cluster.merge_patch(
            rollout_key(namespace, args.name), {"metadata": {"annotations": {command.annotation: value}}}
        )
    except KubeError as error:
        print(f"sluice: {command.value} {namespace}/{args.name} failed: {error.message}", file=sys.stderr)
        return 1
    print(f"rollout {namespace}/{args.name}: {command.annotation}={value}")
    return 0


def handle_status(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    shown = ""
    while True:
        body = cluster.get(rollout_key(namespace, args.name))
        if body is None:
            print(f"sluice: rollout {namespace}/{args.name} not found", file=sys.stderr)
            return 1
        text = format_status(body)
        if text != shown:
            print(text, flush=True)
            shown = text
        phase = (body.get("status") or {}).get("phase")
        if not args.watch:
            return 0
        if _observed_current(body) and (phase in FINAL_PHASES or _stalled(body)):
            # Stalled (an invalid spec, a conflict) keeps the old phase, e.g. Healthy for the
            # previous revision, yet the spec just applied will not be released: a failure.
            return 0 if phase == Phase.HEALTHY.value and not _stalled(body) else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"sluice: still {phase} after {args.timeout:g}s", file=sys.stderr)
            return 2
        time.sleep(1.0)  # polling the API server between reads, not waiting for a result


def _observed_current(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    return bool(status.get("observedGeneration") == body.get("metadata", {}).get("generation"))


def _stalled(body: Mapping[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Stalled" and c.get("status") == "True" for c in conditions)


def format_status(body: Mapping[str, Any]) -> str:
    """A Rollout's status for people: phase, step, weights, revisions, analysis, recent history."""
    meta = body.get("metadata", {})
    status = RolloutStatus.model_validate(body.get("status") or {})
    spec = body.get("spec") or {}
    stalled = any(c.type == "Stalled" and c.status == "True" for c in status.conditions)
    phase = f"{status.phase.value if status.phase else 'Pending'}{' (stalled)' if stalled else ''}"
    lines = [f"Rollout {meta.get('namespace')}/{meta.get('name')}: {phase}"]
    steps = (spec.get("strategy", {}).get("canary", {}) or {}).get("steps") or []
    if status.current_step_index is not None:
        lines.append(
            f"  Step:      {min(status.current_step_index + 1, len(steps) or 1)}/{len(steps) or '?'}"
        )
    lines.append(f"  Traffic:   stable {100 - status.canary_weight}%  canary {status.canary_weight}%")
    lines.append(f"  Stable:    {status.stable_revision or '-'}  ({status.replicas.stable} ready)")
    if status.canary_revision:
        lines.append(
            f"  Canary:    {status.canary_revision}  ({status.replicas.canary_ready}/"
            f"{status.replicas.canary} ready)"
        )
    analysis = status.analysis
    if analysis.last_check is not None:
        lines.append(
            f"  Analysis:  {analysis.passed} passed, {analysis.failed} failed, {analysis.inconclusive} "
            f"inconclusive, {analysis.consecutive_errors} errors in a row"
        )
        for metric in analysis.last_check.metrics:
            value = "n/a" if metric.value is None else f"{metric.value:.6g}"
            lines.append(
                f"             {metric.name} = {value}  {metric.outcome.value} {metric.message}".rstrip()
            )
    if status.message:
        lines.append(f"  Message:   {status.message}")
    for entry in status.history[:5]:
        lines.append(f"  {entry.time}  {entry.action}: {entry.message}")
    return "\n".join(lines)
