"""`sluice status|promote|abort|retry|restart`: drive a release from the terminal.

Commands are the same annotations plain kubectl can set; these just save typing
and show the status in a readable form.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from operators.api.rollout import RolloutStatus
from operators.cli.get import console
from operators.cli.kubeargs import add_connection_args, connect
from operators.cli.watching import watch_status
from operators.foundation.cluster import Cluster, KubeError
from operators.rollout.commands import Command
from operators.rollout.inventory import rollout_key


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
        (Command.RESTART, "replace the pods, same revision (no release)"),
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
    add_connection_args(parser)


def _connect(args: argparse.Namespace) -> tuple[Cluster, str]:
    return connect(args)


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
    body = cluster.get(rollout_key(namespace, args.name))
    if body is None:
        print(f"sluice: rollout {namespace}/{args.name} not found", file=sys.stderr)
        return 1
    if not args.watch:
        print(format_status(body), flush=True)
        return 0
    return watch_status(cluster, namespace, args.name, args.timeout, body, console(), format_status(body))


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
