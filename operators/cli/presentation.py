"""How Rollouts read in a terminal: pure functions from objects (dicts) to text, no cluster, no clock.

`sluice get` and `sluice status --watch` draw with these; the unit tests check them directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from operators.foundation.model import parse_duration

SPARK_BARS = "▁▂▃▄▅▆▇█"


def status_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})


def steps_of(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    canary = ((body.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    return list(canary.get("steps") or [])


def strategy_of(body: Mapping[str, Any]) -> str:
    status = status_of(body)
    if status.get("strategy"):
        return str(status["strategy"])
    return "BlueGreen" if ((body.get("spec") or {}).get("strategy") or {}).get("blueGreen") else "Canary"


def is_stalled(body: Mapping[str, Any]) -> bool:
    conditions = status_of(body).get("conditions") or []
    return any(c.get("type") == "Stalled" and c.get("status") == "True" for c in conditions)


def phase_text(body: Mapping[str, Any]) -> str:
    phase = str(status_of(body).get("phase") or "Pending")
    return f"{phase} (stalled)" if is_stalled(body) else phase


def step_position(body: Mapping[str, Any]) -> tuple[int, int] | None:
    """(steps done, steps in all) of a canary release in progress, or None when there is none."""
    steps = steps_of(body)
    index = status_of(body).get("currentStepIndex")
    if index is None or not steps:
        return None
    return min(int(index), len(steps)), len(steps)


def step_text(body: Mapping[str, Any]) -> str:
    position = step_position(body)
    if position is None:
        return "-"
    done, total = position
    return f"{min(done + 1, total)}/{total}"


def weight_text(body: Mapping[str, Any]) -> str:
    return f"{int(status_of(body).get('canaryWeight') or 0)}%"


def age_text(created: str | None, now: datetime) -> str:
    """kubectl's AGE: the largest unit or two (45s, 3m12s, 5h, 2d3h)."""
    if not created:
        return "<unknown>"
    seconds = max(0, int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if hours < 3:
        return f"{minutes}m"
    if days < 2:
        return f"{hours}h"
    return f"{days}d{hours % 24}h" if days < 8 else f"{days}d"


ROLLOUT_COLUMNS = ["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]


def rollout_row(body: Mapping[str, Any], now: datetime) -> list[str]:
    """A Rollout's row under ROLLOUT_COLUMNS."""
    meta = body.get("metadata") or {}
    status = status_of(body)
    return [
        str(meta.get("name")),
        strategy_of(body),
        phase_text(body),
        step_text(body),
        weight_text(body),
        str(status.get("stableRevision") or "-"),
        str(status.get("canaryRevision") or "-"),
        age_text(meta.get("creationTimestamp"), now),
    ]


APPLICATION_COLUMNS = ["NAME", "PHASE", "COMPONENTS", "AGE"]


def application_row(body: Mapping[str, Any], now: datetime) -> list[str]:
    meta = body.get("metadata") or {}
    status = status_of(body)
    components = status.get("components") or []
    ready = sum(1 for c in components if c.get("ready"))
    return [
        str(meta.get("name")),
        str(status.get("phase") or "Pending"),
        f"{ready}/{len((body.get('spec') or {}).get('components') or [])} ready",
        age_text(meta.get("creationTimestamp"), now),
    ]


SIDECARSET_COLUMNS = ["NAME", "MATCHED", "UPDATED", "READY", "AGE"]


def sidecarset_row(body: Mapping[str, Any], now: datetime) -> list[str]:
    meta = body.get("metadata") or {}
    status = status_of(body)
    return [
        str(meta.get("name")),
        str(status.get("matchedPods", 0)),
        str(status.get("updatedPods", 0)),
        str(status.get("readyPods", 0)),
        age_text(meta.get("creationTimestamp"), now),
    ]


def metric_specs(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The Rollout's analysis metrics by name (canary analysis, then postPromotion and blue-green ones)."""
    strategy = (body.get("spec") or {}).get("strategy") or {}
    found: dict[str, dict[str, Any]] = {}
    for block in (strategy.get("canary") or {}, strategy.get("blueGreen") or {}):
        for key in ("analysis", "postPromotionAnalysis", "prePromotionAnalysis"):
            for metric in (block.get(key) or {}).get("metrics") or []:
                found.setdefault(str(metric.get("name")), dict(metric))
    return found


def threshold_text(metric: Mapping[str, Any] | None) -> str:
    """What a metric must stay within: `<= 0.1`, `>= 0.9`, `0.9..1`, or against the stable."""
    if not metric:
        return "-"
    bounds = metric.get("thresholdRange") or {}
    low, high = bounds.get("min"), bounds.get("max")
    if low is not None and high is not None:
        return f"{low:g}..{high:g}"
    if high is not None:
        return f"<= {high:g}"
    if low is not None:
        return f">= {low:g}"
    compare = metric.get("compare") or {}
    limits = []
    if compare.get("maxIncrease") is not None:
        limits.append(f"+{compare['maxIncrease']:g}")
    if compare.get("maxRatio") is not None:
        limits.append(f"x{compare['maxRatio']:g}")
    return f"stable {' and '.join(limits)}" if limits else "-"


def value_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def sparkline(values: Sequence[float | None]) -> str:
    """One bar per value, scaled between the lowest and highest; a gap for a check with no value."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low
    bars = []
    for value in values:
        if value is None:
            bars.append(" ")
        elif span == 0:
            bars.append(SPARK_BARS[0] if high == 0 else SPARK_BARS[len(SPARK_BARS) // 2])
        else:
            bars.append(SPARK_BARS[round((value - low) / span * (len(SPARK_BARS) - 1))])
    return "".join(bars)


def pause_left(body: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds left of the current step's timed pause (stepStartedAt + duration), or None."""
    status = status_of(body)
    steps = steps_of(body)
    index = status.get("currentStepIndex")
    if index is None or not 0 <= int(index) < len(steps) or status.get("phase") != "Paused":
        return None
    pause = steps[int(index)].get("pause")
    started = status.get("stepStartedAt")
    if not isinstance(pause, Mapping) or not pause.get("duration") or not started:
        return None
    began = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    left = parse_duration(str(pause["duration"])).total_seconds() - (now - began).total_seconds()
    return max(0.0, left)


def summary_line(body: Mapping[str, Any]) -> str:
    """One line of the release as it is: for logs and CI, where nothing redraws."""
    status = status_of(body)
    meta = body.get("metadata") or {}
    parts = [f"{meta.get('namespace')}/{meta.get('name')}", phase_text(body)]
    if step_position(body) is not None:
        parts.append(f"step {step_text(body)}")
    parts.append(f"weight {weight_text(body)}")
    last_check = (status.get("analysis") or {}).get("lastCheck") or {}
    specs = metric_specs(body)
    for metric in last_check.get("metrics") or []:
        name = str(metric.get("name"))
        value, threshold = value_text(metric.get("value")), threshold_text(specs.get(name))
        parts.append(f"{name}={value} ({threshold}) {metric.get('outcome')}")
    if status.get("message"):
        parts.append(f"- {status['message']}")
    return "  ".join(parts)
