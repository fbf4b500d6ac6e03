"""`sluice status NAME --watch`: follow a release until it ends, by watching the Rollout (not polling).

On a terminal a live view redraws in place (rich's Live): the step progress bar, the weights,
each metric's latest value against its threshold with a sparkline, a pause countdown, the
message. Anywhere else (CI logs) the status is printed once, then one line per change.

The sparkline is of the checks this watch has seen: the Rollout's status keeps only the last
check, so the history starts when the watch does.

Exit codes: 0 Healthy; 1 Degraded, Aborted or stalled (a spec the operator refused keeps its old
phase, but the release asked for will not happen); 2 when --timeout passes first.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from operators.api.base import GROUP, VERSION
from operators.api.rollout import PLURAL, Phase
from operators.cli import presentation as p
from operators.foundation.cluster import Cluster
from operators.rollout.inventory import rollout_key

FINAL_PHASES = {Phase.HEALTHY.value, Phase.DEGRADED.value, Phase.ABORTED.value}
SPARK_LENGTH = 20  # checks kept per metric for the sparkline
WATCH_SECONDS = 30  # one watch request at most this long; then it resumes from the last resourceVersion
POLL_SECONDS = 2.0  # only when watching fails (no watch permission, a proxy that cuts streams)
TIMED_OUT = 2


def verdict(body: Mapping[str, Any]) -> int | None:
    """The exit code once the release of the current spec has ended, else None (keep watching)."""
    status = p.status_of(body)
    if status.get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        return None  # the operator has not looked at the spec as it is now: its phase is about an older one
    stalled = p.is_stalled(body)
    phase = status.get("phase")
    if phase in FINAL_PHASES or stalled:
        return 0 if phase == Phase.HEALTHY.value and not stalled else 1
    return None


class MetricHistory:
    """The values of each metric in the checks this watch saw (a new check: a new lastCheck.time)."""

    def __init__(self) -> None:
        self.values: dict[str, deque[float | None]] = {}
        self._last_check: str | None = None

    def record(self, body: Mapping[str, Any]) -> None:
        check = (p.status_of(body).get("analysis") or {}).get("lastCheck") or {}
        if not check or check.get("time") == self._last_check:
            return
        self._last_check = check.get("time")
        for metric in check.get("metrics") or []:
            series = self.values.setdefault(str(metric.get("name")), deque(maxlen=SPARK_LENGTH))
            series.append(metric.get("value"))


class LiveView:
    """What the terminal shows, drawn anew at each refresh (so the pause countdown runs between events)."""

    def __init__(self, body: Mapping[str, Any], history: MetricHistory) -> None:
        self.body = body
        self.history = history

    def render(self) -> RenderableType:
        body, now = self.body, datetime.now(UTC)
        meta, status = body.get("metadata") or {}, p.status_of(body)
        parts: list[RenderableType] = [
            Text.from_markup(
                f"[bold]Rollout {meta.get('namespace')}/{meta.get('name')}[/]  {p.strategy_of(body)}  "
                f"[bold]{p.phase_text(body)}[/]"
            )
        ]
        position = p.step_position(body)
        if position is not None:
            done, total = position
            bar = Table.grid(padding=(0, 1))
            bar.add_row(f"Step {p.step_text(body)}", ProgressBar(total=total, completed=done, width=40))
            parts.append(bar)
        weight = int(status.get("canaryWeight") or 0)
        traffic = f"Traffic: stable {100 - weight}%  canary {weight}%"
        routed = status.get("routedCanaryWeight")
        if routed is not None and routed != weight:
            traffic += f"  (routed to canary now: {routed}%)"
        parts.append(Text(traffic))
        left = p.pause_left(body, now)
        if left is not None:
            parts.append(Text(f"Paused: {math.ceil(left)}s left"))
        last_check = (status.get("analysis") or {}).get("lastCheck") or {}
        if last_check.get("metrics"):
            specs = p.metric_specs(body)
            metrics = Table(box=None, pad_edge=False, header_style="bold")
            for column in ("METRIC", "VALUE", "THRESHOLD", "RECENT", "OUTCOME"):
                metrics.add_column(column, no_wrap=True)
            for metric in last_check["metrics"]:
                name = str(metric.get("name"))
                metrics.add_row(
                    name,
                    p.value_text(metric.get("value")),
                    p.threshold_text(specs.get(name)),
                    p.sparkline(list(self.history.values.get(name, []))),
                    str(metric.get("outcome")),
                )
            parts.append(metrics)
        if status.get("message"):
            style = "red" if verdict(body) == 1 else ""
            parts.append(Text(f"Message: {status['message']}", style=style))
        return Group(*parts)


def watch_status(
    cluster: Cluster,
    namespace: str,
    name: str,
    timeout: float,
    first: Mapping[str, Any],
    out: Console,
    intro: str,
) -> int:
    """Follow the Rollout `first` (as just read) until its release ends or `timeout` seconds pass.
    `intro` (the full status) is printed first where nothing redraws."""
    deadline = time.monotonic() + timeout if timeout else None
    history = MetricHistory()
    history.record(first)
    latest: Mapping[str, Any] = first
    try:
        if out.is_terminal:
            view = LiveView(first, history)
            with Live(get_renderable=view.render, console=out, refresh_per_second=4):
                for latest in _changes(cluster, namespace, name, first, deadline):
                    history.record(latest)
                    view.body = latest
        else:
            print(intro, flush=True)
            shown = p.summary_line(first)
            for latest in _changes(cluster, namespace, name, first, deadline):
                line = p.summary_line(latest)
                if line != shown:
                    print(f"{datetime.now(UTC):%H:%M:%S} {line}", flush=True)
                    shown = line
    except RolloutGone:
        print(f"sluice: rollout {namespace}/{name} was deleted", file=sys.stderr)
        return 1
    return _ending(latest, timeout)


class RolloutGone(Exception):
    """The watched Rollout was deleted."""


def _ending(body: Mapping[str, Any], timeout: float) -> int:
    code = verdict(body)
    if code is None:
        print(f"sluice: still {p.status_of(body).get('phase')} after {timeout:g}s", file=sys.stderr)
        return TIMED_OUT
    return code


def _changes(
    cluster: Cluster, namespace: str, name: str, first: Mapping[str, Any], deadline: float | None
) -> Iterator[dict[str, Any]]:
    """The Rollout each time it changes, until its release ends or the deadline passes."""
    body: Mapping[str, Any] = first
    version = str((first.get("metadata") or {}).get("resourceVersion") or "")
    polling = False
    api = k8s.CustomObjectsApi(cluster.api)
    while verdict(body) is None:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        if polling:
            time.sleep(min(POLL_SECONDS, remaining or POLL_SECONDS))  # watching failed: read at an interval
            fresh = cluster.get(rollout_key(namespace, name))
            if fresh is None:
                raise RolloutGone
            body = fresh
            yield fresh
            continue
        seconds = WATCH_SECONDS if remaining is None else max(1, min(WATCH_SECONDS, math.ceil(remaining)))
        stream = k8s_watch.Watch()
        try:
            for event in stream.stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=version,
                timeout_seconds=seconds,
                _request_timeout=seconds + 10,
            ):
                obj = event["object"]
                if event["type"] == "DELETED":
                    raise RolloutGone
                if event["type"] not in ("ADDED", "MODIFIED") or not isinstance(obj, dict):
                    continue
                version = str(obj["metadata"].get("resourceVersion") or version)
                body = obj
                yield obj
                if verdict(obj) is not None or (deadline is not None and time.monotonic() > deadline):
                    stream.stop()
                    return
        except ApiException as error:
            if error.status == 410:  # too old a resourceVersion: read afresh and watch from there
                fresh = cluster.get(rollout_key(namespace, name))
                if fresh is None:
                    raise RolloutGone from error
                body, version = fresh, str(fresh["metadata"].get("resourceVersion") or "")
                yield fresh
                continue
            polling = _fall_back(f"{error.status} {error.reason}")
        except (urllib3.exceptions.HTTPError, OSError) as error:
            polling = _fall_back(str(error) or type(error).__name__)


def _fall_back(why: str) -> bool:
    print(
        f"sluice: watching the Rollout failed ({why}); reading it every {POLL_SECONDS:g}s instead",
        file=sys.stderr,
    )
    return True
