"""What analysis results mean for a release: pure bookkeeping and verdicts.

A *check* evaluates every metric once. Counters accumulate over the release;
``passedAtStep`` counts passing checks since the weight last changed, which is
what gates each step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from operators.api.base import parse_duration
from operators.api.rollout import Analysis, AnalysisStatus, Check, Outcome
from operators.foundation.clock import parse_time


class Verdict(StrEnum):
    CONTINUE = "continue"
    ROLLBACK = "rollback"
    PAUSE = "pause"


def record_check(status: AnalysisStatus, check: Check) -> AnalysisStatus:
    """The counters after one more check."""
    updated = status.model_copy(deep=True)
    updated.last_check = check
    if check.outcome == Outcome.ERROR:
        updated.consecutive_errors += 1
        return updated
    updated.consecutive_errors = 0
    if check.outcome == Outcome.PASSED:
        updated.passed += 1
        updated.passed_at_step += 1
    elif check.outcome == Outcome.FAILED:
        updated.failed += 1
    else:
        updated.inconclusive += 1
    return updated


def verdict(analysis: Analysis, status: AnalysisStatus) -> Verdict:
    """Rollback beats pause: failures and provider errors past their limits end the release."""
    if status.failed > analysis.failure_limit or status.consecutive_errors > analysis.error_limit:
        return Verdict.ROLLBACK
    if status.inconclusive > analysis.inconclusive_limit:
        return Verdict.PAUSE
    return Verdict.CONTINUE


def verdict_reason(analysis: Analysis, status: AnalysisStatus) -> str:
    """Why the verdict was reached, naming the metrics and their values."""
    detail = describe_check(status.last_check) if status.last_check else "no check yet"
    if status.failed > analysis.failure_limit:
        return f"analysis failed {status.failed} time(s) (failureLimit {analysis.failure_limit}): {detail}"
    if status.consecutive_errors > analysis.error_limit:
        return (
            f"metrics provider failed {status.consecutive_errors} times in a row "
            f"(errorLimit {analysis.error_limit}): {detail}"
        )
    if status.inconclusive > analysis.inconclusive_limit:
        return (
            f"analysis inconclusive {status.inconclusive} time(s) (inconclusiveLimit "
            f"{analysis.inconclusive_limit}): {detail}; promote to go on, abort to roll back"
        )
    return detail


def describe_check(check: Check) -> str:
    """``error-rate=0.31 Failed (0.31 > max 0.01)``, one clause per metric; dry-run ones say so."""
    parts = []
    for metric in check.metrics:
        value = "n/a" if metric.value is None else f"{metric.value:.6g}"
        clause = f"{metric.name}={value} {metric.outcome.value}"
        if metric.dry_run:
            clause += " [dry run]"
        if metric.message:
            clause += f" ({metric.message})"
        parts.append(clause)
    return "; ".join(parts) or check.outcome.value


DRY_RUN_REASON = "DryRunMetric"


def dry_run_notes(check: Check) -> list[str]:
    """An Event's message for each dry-run metric that would have held or failed the release."""
    return [
        f"dry-run metric {metric.name} {metric.outcome.value} (not gating): "
        + describe_check(Check(time=check.time, outcome=metric.outcome, metrics=[metric]))
        for metric in check.metrics
        if metric.dry_run and metric.outcome != Outcome.PASSED
    ]


def gate_open(analysis: Analysis | None, status: AnalysisStatus) -> bool:
    """May the release leave its current step, as far as analysis is concerned?

    Without analysis, yes. Otherwise the latest check must not be an error or a
    failure (a provider outage holds the release rather than advancing blind),
    and enough checks must have passed at the current weight.
    """
    if analysis is None:
        return True
    last = status.last_check
    if last is not None and last.outcome in (Outcome.ERROR, Outcome.FAILED, Outcome.INCONCLUSIVE):
        return False
    if analysis.min_checks_per_step == 0:
        return True
    return last is not None and status.passed_at_step >= analysis.min_checks_per_step


def next_check_at(
    analysis: Analysis, status: AnalysisStatus, weight_changed_at: str | None
) -> datetime | None:
    """When the next check is due: one interval after the later of the last check and the
    last weight change, so every check counted at a weight measured traffic at that weight."""
    last_check = status.last_check.time if status.last_check else None
    anchors = [parse_time(t) for t in (weight_changed_at, last_check) if t]
    if not anchors:
        return None
    return max(anchors) + timedelta(seconds=parse_duration(analysis.interval).total_seconds())
