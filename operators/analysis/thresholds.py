"""Threshold evaluation: one value against its SLO, and one check's metrics combined. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable

from operators.api.rollout import NoDataPolicy, Outcome, ThresholdRange

_NO_DATA_OUTCOME = {
    NoDataPolicy.INCONCLUSIVE: Outcome.INCONCLUSIVE,
    NoDataPolicy.FAIL: Outcome.FAILED,
    NoDataPolicy.PASS: Outcome.PASSED,
}

# Worst first: one failing metric fails the whole check, and a provider error
# outranks "inconclusive" so that outages are counted against errorLimit.
_SEVERITY = (Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.PASSED)


def is_no_data(value: float | None) -> bool:
    """None (empty result) and NaN (e.g. 0/0 when there is no traffic) both mean "no data"."""
    return value is None or math.isnan(value)


def no_data_outcome(no_data: NoDataPolicy) -> Outcome:
    """What a metric's noData policy makes of no data."""
    return _NO_DATA_OUTCOME[no_data]


def evaluate(value: float | None, threshold: ThresholdRange, no_data: NoDataPolicy) -> Outcome:
    """Passed inside [min, max] (inclusive), Failed outside; no data follows the metric's policy."""
    if value is None or math.isnan(value):
        return _NO_DATA_OUTCOME[no_data]
    # ±Inf compares like any number: +Inf fails a max, -Inf fails a min.
    if threshold.min is not None and value < threshold.min:
        return Outcome.FAILED
    if threshold.max is not None and value > threshold.max:
        return Outcome.FAILED
    return Outcome.PASSED


def combine(outcomes: Iterable[Outcome]) -> Outcome:
    """One check's outcome: Failed > Error > Inconclusive > Passed; no metrics at all passes."""
    seen = set(outcomes)
    return next((outcome for outcome in _SEVERITY if outcome in seen), Outcome.PASSED)
