"""A Rollout's operator metrics, taken from the status a pass wrote (never from inside the engine).

`what_happened` is pure: from the status before and after a pass, the checks recorded and the
releases finished. `RolloutTelemetry` sets the gauges and counters of foundation/telemetry.py
from it, and removes a Rollout's series when it is gone.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from operators.api.rollout import HistoryEntry, Outcome, Phase, RolloutStatus
from operators.foundation import telemetry as t

# History actions that end a release, and the outcome each is counted as.
FINISHING_ACTIONS = {"promoted": "promoted", "rolled-back": "rolled_back", "aborted": "aborted"}


@dataclass(frozen=True)
class Happened:
    """What one pass did that counters count."""

    # (metric name, outcome) of each metric of a check recorded by this pass.
    checks: list[tuple[str, str]] = field(default_factory=list)
    # The outcome of each release that ended in this pass (FINISHING_ACTIONS' values).
    finished: list[str] = field(default_factory=list)


def new_history(before: list[HistoryEntry], after: list[HistoryEntry]) -> list[HistoryEntry]:
    """The entries `after` has that `before` had not: the newest come first, down to before's newest."""
    if not before:
        return list(after)
    newest = before[0]
    added: list[HistoryEntry] = []
    for entry in after:
        if entry == newest:
            return added
        added.append(entry)
    return added  # before's newest is gone (a status reset): all of after is new


def what_happened(before: RolloutStatus, after: RolloutStatus) -> Happened:
    check = after.analysis.last_check
    previous = before.analysis.last_check
    checks = (
        [(result.name, result.outcome.value) for result in check.metrics]
        if check is not None and check != previous
        else []
    )
    finished = [
        FINISHING_ACTIONS[entry.action]
        for entry in new_history(before.history, after.history)
        if entry.action in FINISHING_ACTIONS
    ]
    return Happened(checks=checks, finished=finished)


def step_of(status: RolloutStatus) -> int:
    return -1 if status.current_step_index is None else status.current_step_index


class RolloutTelemetry:
    """The series of each Rollout this operator reconciles; thread-safe (passes run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per Rollout: the info labels exported now (replaced when a revision changes), and the
        # metric names whose check counters exist (to remove them with the Rollout).
        self._info: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._metrics: dict[tuple[str, str], set[str]] = {}

    def record(self, namespace: str, name: str, before: RolloutStatus, after: RolloutStatus) -> None:
        """After a pass whose status was written: gauges from `after`, counters from the change."""
        key = (namespace, name)
        happened = what_happened(before, after)
        with self._lock:
            for phase in Phase:
                t.ROLLOUT_PHASE.labels(namespace, name, phase.value).set(1 if after.phase == phase else 0)
            info = (after.strategy or "", after.stable_revision or "", after.canary_revision or "")
            if self._info.get(key) != info:
                if key in self._info:
                    t.ROLLOUT_INFO.remove(namespace, name, *self._info[key])
                t.ROLLOUT_INFO.labels(namespace, name, *info).set(1)
                self._info[key] = info
            t.CANARY_WEIGHT.labels(namespace, name).set(after.canary_weight)
            t.CURRENT_STEP.labels(namespace, name).set(step_of(after))
            if key not in self._metrics:
                # Every outcome from the start, at 0: "no rollbacks" is a series, not a gap.
                for outcome in t.FINISH_OUTCOMES:
                    t.RELEASES_FINISHED.labels(namespace, name, outcome)
                self._metrics[key] = set()
            for outcome in happened.finished:
                t.RELEASES_FINISHED.labels(namespace, name, outcome).inc()
            for metric in {metric for metric, _ in happened.checks} - self._metrics[key]:
                for each in Outcome:
                    t.ANALYSIS_CHECKS.labels(namespace, name, metric, each.value)
                self._metrics[key].add(metric)
            for metric, outcome in happened.checks:
                t.ANALYSIS_CHECKS.labels(namespace, name, metric, outcome).inc()

    def forget(self, namespace: str, name: str) -> None:
        """The Rollout is gone: remove every series it had."""
        key = (namespace, name)
        with self._lock:
            if key not in self._metrics and key not in self._info:
                return
            for phase in Phase:
                _remove(t.ROLLOUT_PHASE, namespace, name, phase.value)
            if key in self._info:
                _remove(t.ROLLOUT_INFO, namespace, name, *self._info.pop(key))
            _remove(t.CANARY_WEIGHT, namespace, name)
            _remove(t.CURRENT_STEP, namespace, name)
            for outcome in t.FINISH_OUTCOMES:
                _remove(t.RELEASES_FINISHED, namespace, name, outcome)
            for metric in self._metrics.pop(key, set()):
                for each in Outcome:
                    _remove(t.ANALYSIS_CHECKS, namespace, name, metric, each.value)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set (a Rollout forgotten before its first status)
        metric.remove(*labels)
