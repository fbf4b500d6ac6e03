"""What the dashboard shows: pure functions from objects (and what was seen of them) to JSON views.

A Rollout's status keeps only its last decisions (status.history, bounded) and its latest check
(status.analysis.lastCheck). The dashboard adds what it has watched since it started: every
canary weight and every check it saw. So the weight chart goes back as far as the older of the
two, and the metric charts to the dashboard's start (or the latest check before it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from operators.api.base import API_VERSION
from operators.foundation.clock import parse_time

# (kind, plural, namespaced): what the dashboard lists, all in Sluice's API group.
KINDS: tuple[tuple[str, str, bool], ...] = (
    ("Rollout", "rollouts", True),
    ("Application", "applications", True),
    ("SidecarSet", "sidecarsets", False),
)
MAX_POINTS = 500  # per series: a dashboard left open for days must not grow without bound
_WEIGHT_CHANGE = re.compile(r"canary weight (\d+)% -> (\d+)%")
# History actions after which the canary has no traffic, though no set-weight entry says so.
_ZERO_WEIGHT_ACTIONS = {"aborted", "rolled-back", "promoted"}


def object_id(kind: str, namespace: str | None, name: str) -> str:
    """The key the page knows an object by: Kind/namespace/name (Kind//name when cluster-scoped)."""
    return f"{kind}/{namespace or ''}/{name}"


def id_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return object_id(str(body.get("kind")), meta.get("namespace"), str(meta.get("name")))


def summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the list: kind, name, phase and how far along (a Rollout's step, an Application's
    ready components, a SidecarSet's updated targets)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    kind = str(body.get("kind"))
    row: dict[str, Any] = {
        "id": id_of(body),
        "kind": kind,
        "namespace": meta.get("namespace") or "",
        "name": meta.get("name"),
        "phase": status.get("phase") or _phase_from_conditions(status),
        "stalled": _condition(status, "Stalled") == "True",
        "message": status.get("message") or "",
        "progress": "",
    }
    if kind == "Rollout":
        steps = len(_steps(body))
        index = status.get("currentStepIndex")
        if index is not None and steps:
            row["progress"] = f"step {min(index + 1, steps)}/{steps}"
        row["weight"] = int(status.get("canaryWeight") or 0)
        row["paused"] = bool((body.get("spec") or {}).get("paused"))
    elif kind == "Application":
        row["progress"] = f"{status.get('readyComponents') or '0/0'} components ready"
    elif kind == "SidecarSet":
        row["progress"] = f"{status.get('updated', 0)}/{status.get('matched', 0)} updated"
    return row


def _condition(status: Mapping[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _phase_from_conditions(status: Mapping[str, Any]) -> str:
    ready = _condition(status, "Ready")
    return {"True": "Ready", "False": "NotReady"}.get(ready or "", "Pending")


def _steps(body: Mapping[str, Any]) -> list[Any]:
    canary = ((body.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    return list(canary.get("steps") or [])


def thresholds(body: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Each analysis metric's thresholdRange ({min, max}, either may be absent), by metric name."""
    strategy = (body.get("spec") or {}).get("strategy") or {}
    found: dict[str, dict[str, float]] = {}
    for block in (strategy.get("canary") or {}, strategy.get("blueGreen") or {}):
        for analysis_key in ("analysis", "prePromotionAnalysis", "postPromotionAnalysis"):
            for metric in (block.get(analysis_key) or {}).get("metrics") or []:
                limits = metric.get("thresholdRange") or {}
                found.setdefault(
                    str(metric.get("name")),
                    {k: float(v) for k, v in limits.items() if k in ("min", "max") and v is not None},
                )
    return found


def weights_from_history(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The canary weights status.history tells of, oldest first: each set-weight's new weight, and 0
    after a rollback or a promotion."""
    points = []
    for entry in reversed(history):  # status.history is newest first
        match = _WEIGHT_CHANGE.search(str(entry.get("message") or ""))
        if entry.get("action") == "set-weight" and match:
            points.append({"time": entry.get("time"), "weight": int(match.group(2))})
        elif entry.get("action") in _ZERO_WEIGHT_ACTIONS:
            points.append({"time": entry.get("time"), "weight": 0})
    return points


@dataclass
class Seen:
    """What the dashboard watched of one Rollout: weights and checks, in the order they came."""

    weights: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, body: Mapping[str, Any], now: str) -> None:
        """Record the Rollout's weight if it changed and its latest check if new. `now` (ISO 8601)
        dates a weight change seen while watching; the first weight seen is dated by
        status.weightChangedAt, which a rollback does not move (it is the last step's)."""
        status = body.get("status") or {}
        weight = int(status.get("canaryWeight") or 0)
        if not self.weights:
            self.weights.append({"time": status.get("weightChangedAt") or now, "weight": weight})
        elif self.weights[-1]["weight"] != weight:
            self.weights.append({"time": now, "weight": weight})
        check = (status.get("analysis") or {}).get("lastCheck")
        if check and (not self.checks or self.checks[-1]["time"] != check.get("time")):
            self.checks.append(check)
        del self.weights[:-MAX_POINTS], self.checks[:-MAX_POINTS]


def _when(point: Mapping[str, Any]) -> datetime:
    try:
        return parse_time(str(point.get("time")))
    except ValueError:  # not a time: first, rather than fail the whole page
        return datetime.min.replace(tzinfo=UTC)


def rollout_detail(body: Mapping[str, Any], seen: Seen, started: str) -> dict[str, Any]:
    """Everything the Rollout page draws: the weight over time, each metric's values against its
    thresholds, the history, and since when the dashboard has been watching (`started`)."""
    status = body.get("status") or {}
    history = list(status.get("history") or [])
    weights = sorted(weights_from_history(history) + seen.weights, key=_when)
    limits = thresholds(body)
    metrics: dict[str, dict[str, Any]] = {
        name: {"name": name, "threshold": limit, "values": []} for name, limit in limits.items()
    }
    for check in seen.checks:
        for result in check.get("metrics") or []:
            name = str(result.get("name"))
            series = metrics.setdefault(name, {"name": name, "threshold": {}, "values": []})
            series["values"].append(
                {"time": check.get("time"), "value": result.get("value"), "outcome": result.get("outcome")}
            )
    return {
        **summary(body),
        "watchingSince": started,
        "weights": weights,
        "metrics": list(metrics.values()),
        "history": history,
        "stableRevision": status.get("stableRevision"),
        "canaryRevision": status.get("canaryRevision"),
        "steps": len(_steps(body)),
        "apiVersion": API_VERSION,
    }
