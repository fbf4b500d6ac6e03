"""How a simulated pod serves requests: its error rate and latency, as its spec asks.

A version is made bad in the sandbox the way it would be in a release: through its
pod template. Each setting is read from

- the pod annotations ``sandbox.sluice.dev/error-rate`` (0..1) and ``sandbox.sluice.dev/latency-ms``,
- the environment variables ``SANDBOX_ERROR_RATE`` and ``SANDBOX_LATENCY_MS`` of any container or
  init container (so that a sidecar, e.g. one a SidecarSet injects, can make a version bad),

and the worst (highest) value found wins. Without any, a pod is healthy. A value that is not a
number in range is ignored and reported as a problem, never fatal: a typo in one annotation must
not stop the simulation of every other pod.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ERROR_RATE_ANNOTATION = "sandbox.sluice.dev/error-rate"
LATENCY_ANNOTATION = "sandbox.sluice.dev/latency-ms"
ERROR_RATE_ENV = "SANDBOX_ERROR_RATE"
LATENCY_ENV = "SANDBOX_LATENCY_MS"
DEFAULT_LATENCY_SECONDS = 0.02


@dataclass(frozen=True, order=True)
class Behaviour:
    error_rate: float = 0.0
    latency_seconds: float = DEFAULT_LATENCY_SECONDS


@dataclass(frozen=True)
class _Knob:
    """One setting: where it is read, its valid range (in the unit users write) and its scale."""

    annotation: str
    env: str
    low: float
    high: float
    scale: float  # user unit -> Behaviour's unit


_ERROR_RATE = _Knob(ERROR_RATE_ANNOTATION, ERROR_RATE_ENV, 0.0, 1.0, 1.0)
_LATENCY = _Knob(LATENCY_ANNOTATION, LATENCY_ENV, 0.0, math.inf, 0.001)


def _sources(pod: Mapping[str, Any], knob: _Knob) -> Iterator[tuple[str, Any]]:
    """(where, raw value) of every place the pod sets `knob`."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    if knob.annotation in annotations:
        yield f"annotation {knob.annotation}", annotations[knob.annotation]
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in container.get("env") or []:
            # `valueFrom` (a ConfigMap, a Secret) cannot be resolved here: only literal values count.
            if env.get("name") == knob.env and "value" in env:
                yield f"env {knob.env} of container {container.get('name')}", env["value"]


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _worst(pod: Mapping[str, Any], knob: _Knob, problems: list[str]) -> float | None:
    values = []
    for where, raw in _sources(pod, knob):
        value = _number(raw)
        if value is None or not knob.low <= value <= knob.high:
            upper = "" if math.isinf(knob.high) else f" and {knob.high:g}"
            problems.append(f"{where}={raw!r} is not a number between {knob.low:g}{upper}: ignored")
        else:
            values.append(value * knob.scale)
    return max(values, default=None)


def pod_behaviour(pod: Mapping[str, Any]) -> tuple[Behaviour, tuple[str, ...]]:
    """The pod's behaviour, and the problems found reading it (bad values, which are ignored)."""
    problems: list[str] = []
    error_rate = _worst(pod, _ERROR_RATE, problems)
    latency = _worst(pod, _LATENCY, problems)
    default = Behaviour()
    behaviour = Behaviour(
        error_rate=default.error_rate if error_rate is None else error_rate,
        latency_seconds=default.latency_seconds if latency is None else latency,
    )
    return behaviour, tuple(problems)
