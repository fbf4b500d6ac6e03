"""Judging a metric's values: against its thresholdRange, against the stable, and at low traffic. Pure.

- `judge`: one metric's result from the canary's value (and the stable's, for a
  `compare` metric). With both thresholdRange and compare, both must hold.
- No data: the canary's, or the stable's for a compare metric (the stable
  served no requests in the window, e.g. at a 100% step: there is nothing to
  compare with), follows the metric's noData policy (Inconclusive by default).
  A comparison never passes blind.
- `with_min_requests`: a check whose canary served fewer than minRequests
  requests in its window judges nothing by traffic: its Passed and Failed
  traffic metrics (those with a query) become Inconclusive (a few requests
  prove neither), its Errors stay Errors (an outage is counted against
  errorLimit whatever the traffic). A `web` or `job` metric does not measure
  the canary's requests: its verdict stands (a failed smoke test is a failure).
- `gating_outcome`: a check's outcome, dry-run metrics left out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from operators.analysis.thresholds import combine, evaluate, is_no_data, no_data_outcome
from operators.api.rollout import Compare, Metric, MetricResult, Outcome, ThresholdRange

NO_DATA = "no data"
NO_STABLE_DATA = "no data for the stable: nothing to compare with"


def format_value(value: float) -> str:
    """Numbers as PromQL prints them: 0.31, 1.5e-05, +Inf."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def _signed(value: float) -> str:
    return format_value(value) if value < 0 or math.isinf(value) else f"+{format_value(value)}"


def threshold_breach(value: float, threshold: ThresholdRange) -> str:
    """``0.31 > max 0.01``, or "" inside the range."""
    if threshold.min is not None and value < threshold.min:
        return f"{format_value(value)} < min {format_value(threshold.min)}"
    if threshold.max is not None and value > threshold.max:
        return f"{format_value(value)} > max {format_value(threshold.max)}"
    return ""


def compare_values(canary: float, stable: float, compare: Compare) -> tuple[Outcome, str]:
    """Passed while canary <= stable + maxIncrease and (given) canary <= maxRatio * stable.

    The message shows both values and each limit: ``canary 0.021 vs stable 0.019 (+0.002 <= 0.01)``.
    """
    clauses: list[str] = []
    passed = True
    if compare.max_increase is not None:
        within = canary <= stable + compare.max_increase
        passed &= within
        increase = canary - stable if not (math.isinf(canary) and math.isinf(stable)) else 0.0
        sign = "≤" if within else ">"
        clauses.append(f"{_signed(increase)} {sign} {format_value(compare.max_increase)}")
    if compare.max_ratio is not None:
        within = canary <= compare.max_ratio * stable
        passed &= within
        ratio = canary / stable if stable else (math.inf if canary > 0 else 1.0)
        sign = "≤" if within else ">"
        clauses.append(f"ratio {format_value(ratio)} {sign} {format_value(compare.max_ratio)}")
    message = f"canary {format_value(canary)} vs stable {format_value(stable)} ({', '.join(clauses)})"
    return (Outcome.PASSED if passed else Outcome.FAILED), message


def judge(metric: Metric, value: float | None, stable: float | None = None) -> MetricResult:
    """The metric's result for the canary's `value` (and the `stable`'s, when it compares)."""
    canary = None if is_no_data(value) else value  # NaN cannot be stored in a status (JSON has no NaN)
    baseline = None if is_no_data(stable) else stable
    outcomes: list[Outcome] = []
    messages: list[str] = []
    if canary is None:
        outcomes.append(no_data_outcome(metric.no_data))
        messages.append(NO_DATA)
    else:
        if metric.threshold_range is not None:
            outcomes.append(evaluate(canary, metric.threshold_range, metric.no_data))
            if breach := threshold_breach(canary, metric.threshold_range):
                messages.append(breach)
        if metric.compare is not None:
            if baseline is None:
                outcomes.append(no_data_outcome(metric.no_data))
                messages.append(NO_STABLE_DATA)
            else:
                outcome, message = compare_values(canary, baseline, metric.compare)
                outcomes.append(outcome)
                messages.append(message)
    return MetricResult(
        name=metric.name,
        outcome=combine(outcomes),
        value=canary,
        stable_value=baseline if metric.compare is not None else None,
        dry_run=metric.dry_run or None,
        message="; ".join(messages),
    )


def too_few_requests(seen: float | None, min_requests: int, window: str) -> str:
    """What a low-traffic check says: how many requests it saw, of how many needed."""
    count = 0.0 if is_no_data(seen) else seen
    return f"the canary served {count:.0f} requests in {window}, fewer than minRequests {min_requests}"


def with_min_requests(
    results: Sequence[MetricResult],
    seen: float | None,
    min_requests: int,
    window: str,
    counted: Collection[str] | None = None,
) -> list[MetricResult]:
    """The results as a check with `seen` canary requests (None: no series, i.e. none) judges them.

    Only the metrics named in `counted` (None: all) depend on the canary's traffic; the others
    (web, job) keep their verdicts.
    """
    if not is_no_data(seen) and seen is not None and seen >= min_requests:
        return list(results)
    why = too_few_requests(seen, min_requests, window)
    return [_inconclusive(result, why) if _counts(result, counted) else result for result in results]


def without_request_count(
    results: Sequence[MetricResult], problem: str, counted: Collection[str] | None = None
) -> list[MetricResult]:
    """The results when the canary's requests could not be counted: no traffic metric (those named
    in `counted`; None: all) may pass unseen."""
    why = f"cannot count the canary's requests for minRequests: {problem}"
    return [
        result.model_copy(update={"outcome": Outcome.ERROR, "message": _joined(why, result.message)})
        if result.outcome in (Outcome.PASSED, Outcome.FAILED) and _counts(result, counted)
        else result
        for result in results
    ]


def _counts(result: MetricResult, counted: Collection[str] | None) -> bool:
    return counted is None or result.name in counted


def _inconclusive(result: MetricResult, why: str) -> MetricResult:
    if result.outcome not in (Outcome.PASSED, Outcome.FAILED):
        return result
    measured = f"measured {result.outcome.value}" + (f": {result.message}" if result.message else "")
    return result.model_copy(update={"outcome": Outcome.INCONCLUSIVE, "message": f"{why} ({measured})"})


def _joined(first: str, second: str) -> str:
    return f"{first} ({second})" if second else first


def gating_outcome(results: Sequence[MetricResult]) -> Outcome:
    """The check's outcome: its metrics combined, dry-run ones left out (all dry run: Passed)."""
    return combine(result.outcome for result in results if not result.dry_run)
