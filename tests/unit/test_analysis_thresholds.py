"""Threshold evaluation and how one check's metric outcomes combine."""

from __future__ import annotations

import math

import pytest

from operators.analysis.thresholds import combine, evaluate
from operators.api.rollout import NoDataPolicy, Outcome, ThresholdRange

INF = math.inf
NAN = math.nan
# N as in "no verdict": Inconclusive.
P, F, N, E = Outcome.PASSED, Outcome.FAILED, Outcome.INCONCLUSIVE, Outcome.ERROR
MAX = ThresholdRange(max=0.01)
MIN = ThresholdRange(min=0.9)
BOTH = ThresholdRange(min=1, max=2)


@pytest.mark.parametrize(
    ("value", "threshold", "expected"),
    [
        (0.0, MAX, P),
        (0.01, MAX, P),  # bounds are inclusive
        (0.0100001, MAX, F),
        (-5, MAX, P),
        (0.9, MIN, P),
        (0.89, MIN, F),
        (100, MIN, P),
        (1, BOTH, P),
        (2, BOTH, P),
        (1.5, BOTH, P),
        (0.999, BOTH, F),
        (2.001, BOTH, F),
        (INF, MAX, F),
        (-INF, MAX, P),
        (INF, MIN, P),
        (-INF, MIN, F),
        (INF, BOTH, F),
        (-INF, BOTH, F),
        (0, ThresholdRange(min=0, max=0), P),
    ],
)
def test_evaluate_values(value: float, threshold: ThresholdRange, expected: Outcome) -> None:
    for policy in NoDataPolicy:  # the policy only matters without data
        assert evaluate(value, threshold, policy) is expected


@pytest.mark.parametrize("value", [None, NAN])
@pytest.mark.parametrize(
    ("policy", "expected"),
    [(NoDataPolicy.INCONCLUSIVE, N), (NoDataPolicy.FAIL, F), (NoDataPolicy.PASS, P)],
)
def test_no_data_follows_policy(value: float | None, policy: NoDataPolicy, expected: Outcome) -> None:
    for threshold in (MAX, MIN, BOTH):
        assert evaluate(value, threshold, policy) is expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], P),
        ([P], P),
        ([P, P], P),
        ([P, N], N),
        ([N, N], N),
        ([P, E], E),
        ([N, E], E),
        ([E, N, P], E),
        ([P, F], F),
        ([F, E], F),
        ([E, F, N, P], F),
        ([N, F], F),
    ],
)
def test_combine(outcomes: list[Outcome], expected: Outcome) -> None:
    assert combine(outcomes) is expected
    assert combine(iter(outcomes)) is expected  # any iterable, consumed once
