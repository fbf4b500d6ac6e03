"""Analysis bookkeeping: counting checks, verdicts, the step gate and when to check next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operators.api.rollout import Analysis, AnalysisStatus, Check, MetricResult, Outcome
from operators.foundation.clock import format_time
from operators.rollout import verdicts
from operators.rollout.verdicts import Verdict

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
METRIC = {"name": "error-rate", "query": "errors", "thresholdRange": {"max": 0.01}}


def make_analysis(**fields: Any) -> Analysis:
    return Analysis.model_validate({"metrics": [METRIC], **fields})


def check(outcome: Outcome, at: float = 0, value: float | None = 0.5, message: str = "") -> Check:
    return Check(
        time=format_time(T0 + timedelta(seconds=at)),
        outcome=outcome,
        metrics=[MetricResult(name="error-rate", outcome=outcome, value=value, message=message)],
    )


# --- record_check ---------------------------------------------------------------------------------

START = AnalysisStatus(passed=3, failed=1, inconclusive=2, consecutive_errors=2, passed_at_step=1)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param(
            Outcome.PASSED,
            {"passed": 4, "failed": 1, "inconclusive": 2, "consecutive_errors": 0, "passed_at_step": 2},
            id="passed",
        ),
        pytest.param(
            Outcome.FAILED,
            {"passed": 3, "failed": 2, "inconclusive": 2, "consecutive_errors": 0, "passed_at_step": 1},
            id="failed",
        ),
        pytest.param(
            Outcome.INCONCLUSIVE,
            {"passed": 3, "failed": 1, "inconclusive": 3, "consecutive_errors": 0, "passed_at_step": 1},
            id="inconclusive",
        ),
        pytest.param(
            Outcome.ERROR,
            {"passed": 3, "failed": 1, "inconclusive": 2, "consecutive_errors": 3, "passed_at_step": 1},
            id="error",
        ),
    ],
)
def test_record_check(outcome: Outcome, expected: dict[str, int]) -> None:
    start = START.model_copy(deep=True)
    the_check = check(outcome, at=5)
    updated = verdicts.record_check(start, the_check)
    assert updated.model_dump(exclude={"last_check"}) == expected
    assert updated.last_check == the_check
    assert start == START, "the input status is not changed"


def test_record_check_counts_a_sequence() -> None:
    status = AnalysisStatus()
    for outcome in [
        Outcome.ERROR,
        Outcome.ERROR,
        Outcome.PASSED,
        Outcome.ERROR,
        Outcome.FAILED,
        Outcome.PASSED,
    ]:
        status = verdicts.record_check(status, check(outcome))
    assert (status.passed, status.failed, status.inconclusive, status.consecutive_errors) == (2, 1, 0, 0)
    status = verdicts.record_check(status, check(Outcome.ERROR))
    assert status.consecutive_errors == 1


# --- verdict and verdict_reason -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "counts", "expected", "reason"),
    [
        pytest.param({}, {}, Verdict.CONTINUE, "error-rate", id="nothing-yet"),
        pytest.param(
            {"failureLimit": 0},
            {"failed": 1},
            Verdict.ROLLBACK,
            "analysis failed 1 time(s) (failureLimit 0)",
            id="one-failure-over-zero",
        ),
        pytest.param({"failureLimit": 2}, {"failed": 2}, Verdict.CONTINUE, "", id="failures-at-limit"),
        pytest.param(
            {"failureLimit": 2},
            {"failed": 3},
            Verdict.ROLLBACK,
            "failed 3 time(s) (failureLimit 2)",
            id="failures-over-limit",
        ),
        pytest.param(
            {"errorLimit": 4}, {"consecutive_errors": 4}, Verdict.CONTINUE, "", id="errors-at-limit"
        ),
        pytest.param(
            {"errorLimit": 4},
            {"consecutive_errors": 5},
            Verdict.ROLLBACK,
            "metrics provider failed 5 times in a row (errorLimit 4)",
            id="errors-over-limit",
        ),
        pytest.param(
            {"inconclusiveLimit": 3}, {"inconclusive": 3}, Verdict.CONTINUE, "", id="inconclusive-at-limit"
        ),
        pytest.param(
            {"inconclusiveLimit": 3},
            {"inconclusive": 4},
            Verdict.PAUSE,
            "analysis inconclusive 4 time(s) (inconclusiveLimit 3)",
            id="inconclusive-over-limit",
        ),
        pytest.param(
            {"inconclusiveLimit": 0, "failureLimit": 0},
            {"inconclusive": 5, "failed": 1},
            Verdict.ROLLBACK,
            "analysis failed",
            id="rollback-beats-pause",
        ),
        pytest.param(
            {"inconclusiveLimit": 0, "errorLimit": 0},
            {"inconclusive": 5, "consecutive_errors": 1},
            Verdict.ROLLBACK,
            "metrics provider failed",
            id="errors-beat-pause",
        ),
    ],
)
def test_verdict(limits: dict[str, int], counts: dict[str, int], expected: Verdict, reason: str) -> None:
    analysis = make_analysis(**limits)
    status = AnalysisStatus(**counts, last_check=check(Outcome.FAILED, value=0.31, message="0.31 > max 0.01"))
    assert verdicts.verdict(analysis, status) == expected
    text = verdicts.verdict_reason(analysis, status)
    assert reason in text
    assert "error-rate=0.31 Failed (0.31 > max 0.01)" in text


def test_verdict_reason_without_a_check() -> None:
    assert verdicts.verdict_reason(make_analysis(), AnalysisStatus(failed=1)).endswith(": no check yet")


def test_verdict_reason_for_inconclusive_says_what_to_do() -> None:
    text = verdicts.verdict_reason(make_analysis(inconclusiveLimit=0), AnalysisStatus(inconclusive=1))
    assert "promote to go on, abort to roll back" in text


# --- describe_check -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "outcome", "expected"),
    [
        pytest.param(
            [("error-rate", Outcome.FAILED, 0.31, "0.31 > max 0.01")],
            Outcome.FAILED,
            "error-rate=0.31 Failed (0.31 > max 0.01)",
            id="failed-with-message",
        ),
        pytest.param(
            [("error-rate", Outcome.PASSED, 0.002, "")],
            Outcome.PASSED,
            "error-rate=0.002 Passed",
            id="passed-without-message",
        ),
        pytest.param(
            [("error-rate", Outcome.INCONCLUSIVE, None, "no data")],
            Outcome.INCONCLUSIVE,
            "error-rate=n/a Inconclusive (no data)",
            id="no-value",
        ),
        pytest.param(
            [("latency", Outcome.PASSED, 0.123456789, "")],
            Outcome.PASSED,
            "latency=0.123457 Passed",
            id="six-significant-digits",
        ),
        pytest.param(
            [("latency", Outcome.PASSED, 1.5e-05, "")],
            Outcome.PASSED,
            "latency=1.5e-05 Passed",
            id="small-value",
        ),
        pytest.param(
            [("error-rate", Outcome.PASSED, 0.0, ""), ("latency", Outcome.ERROR, None, "timeout")],
            Outcome.ERROR,
            "error-rate=0 Passed; latency=n/a Error (timeout)",
            id="two-metrics",
        ),
        pytest.param([], Outcome.ERROR, "Error", id="no-metrics"),
    ],
)
def test_describe_check(
    metrics: list[tuple[str, Outcome, float | None, str]], outcome: Outcome, expected: str
) -> None:
    results = [MetricResult(name=n, outcome=o, value=v, message=m) for n, o, v, m in metrics]
    assert verdicts.describe_check(Check(time=format_time(T0), outcome=outcome, metrics=results)) == expected


# --- gate_open ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_checks", "last", "passed_at_step", "is_open"),
    [
        pytest.param(1, None, 0, False, id="no-check-yet"),
        pytest.param(1, Outcome.PASSED, 0, False, id="passed-at-an-earlier-weight"),
        pytest.param(1, Outcome.PASSED, 1, True, id="enough-passed"),
        pytest.param(2, Outcome.PASSED, 1, False, id="not-enough-passed"),
        pytest.param(2, Outcome.PASSED, 3, True, id="more-than-enough"),
        pytest.param(1, Outcome.FAILED, 5, False, id="last-failed"),
        pytest.param(1, Outcome.ERROR, 5, False, id="last-error"),
        pytest.param(1, Outcome.INCONCLUSIVE, 5, False, id="last-inconclusive"),
        pytest.param(0, None, 0, True, id="min-zero-without-check"),
        pytest.param(0, Outcome.PASSED, 0, True, id="min-zero-passed"),
        pytest.param(0, Outcome.ERROR, 0, False, id="min-zero-still-held-by-error"),
        pytest.param(0, Outcome.FAILED, 0, False, id="min-zero-still-held-by-failure"),
    ],
)
def test_gate_open(min_checks: int, last: Outcome | None, passed_at_step: int, is_open: bool) -> None:
    status = AnalysisStatus(passed_at_step=passed_at_step, last_check=check(last) if last else None)
    assert verdicts.gate_open(make_analysis(minChecksPerStep=min_checks), status) is is_open


def test_gate_is_open_without_analysis() -> None:
    assert verdicts.gate_open(None, AnalysisStatus(last_check=check(Outcome.FAILED))) is True


# --- next_check_at --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "weight_changed", "last_check", "expected"),
    [
        pytest.param("30s", None, None, None, id="no-anchor"),
        pytest.param("30s", 0, None, 30, id="after-weight-change"),
        pytest.param("30s", None, 10, 40, id="after-last-check"),
        pytest.param("30s", 0, 10, 40, id="check-after-weight-change"),
        pytest.param("30s", 50, 10, 80, id="weight-change-after-check"),
        pytest.param("1m30s", 0, None, 90, id="compound-interval"),
        pytest.param("1s", 0, 0, 1, id="minimum-interval"),
    ],
)
def test_next_check_at(
    interval: str, weight_changed: float | None, last_check: float | None, expected: float | None
) -> None:
    analysis = make_analysis(interval=interval)
    status = AnalysisStatus(
        last_check=check(Outcome.PASSED, at=last_check) if last_check is not None else None
    )
    changed = format_time(T0 + timedelta(seconds=weight_changed)) if weight_changed is not None else None
    due = verdicts.next_check_at(analysis, status, changed)
    assert due == (None if expected is None else T0 + timedelta(seconds=expected))
