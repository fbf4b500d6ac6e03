"""Judging (issue #14): canary against stable, minRequests, dry run, and the slo-burn-rate template.

The pure functions directly, and whole checks with a provider that answers from a table (the
rendered PromQL -> value), as tests/unit/test_analysis_check.py does.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from operators.analysis.check import request_counter, run_check, start_check, validate_metrics
from operators.analysis.fanin import QueryFanIn
from operators.analysis.judging import compare_values, gating_outcome, judge, with_min_requests
from operators.analysis.templates import QueryContext, QueryTemplateError, grouped_query, render_query
from operators.api.rollout import (
    COMPARE_NEEDS_A_LIMIT,
    VERDICT_NEEDED,
    Analysis,
    Check,
    Compare,
    Metric,
    MetricResult,
    Outcome,
)
from operators.metrics.base import ProviderError
from operators.rollout.verdicts import describe_check, dry_run_notes
from tests.unit.test_analysis_check import NOW, FakeProvider, sources
from tests.unit.test_fanin import GroupingFake, clocks, fanin
from tests.unit.test_fanin import context as fanin_context
from tests.unit.test_fanin import sources as fanin_sources
from tests.unit.test_sandbox_cel import REPO, causes, refusal, served, sluice_crd, write

__all__ = ["clocks", "fanin"]  # the fan-in's fixtures, from its tests

CONTEXT = QueryContext("shop", "web", "web-canary", "web", "c4n4ry", "30s", stable_revision="st4bl3")
# A user's query per track, through the new `target` variable.
ERRORS = 'errors{service="{{ target.service }}",revision="{{ target.revision }}",track="{{ target.track }}"}'
CANARY_Q = 'errors{service="web-canary",revision="c4n4ry",track="canary"}'
STABLE_Q = 'errors{service="web",revision="st4bl3",track="stable"}'
COUNT_Q = 'sum(increase(http_requests_total{namespace="shop",service="web-canary"}[30s]))'


def compared(**extra: Any) -> Metric:
    extra.setdefault("compare", {"maxIncrease": 0.01})
    return Metric.model_validate({"name": "errors", "query": ERRORS, **extra})


# ---- the API -----------------------------------------------------------------------------------------


def test_a_metric_needs_a_threshold_or_a_comparison() -> None:
    with pytest.raises(ValidationError, match="a metric needs thresholdRange, compare or both"):
        Metric.model_validate({"name": "errors", "query": "x"})
    assert compared().threshold_range is None


def test_compare_needs_a_limit_and_sane_ones() -> None:
    with pytest.raises(ValidationError, match="compare needs maxIncrease, maxRatio or both"):
        Compare.model_validate({"against": "stable"})
    with pytest.raises(ValidationError):
        Compare.model_validate({"against": "canary", "maxIncrease": 0.1})
    with pytest.raises(ValidationError):
        Compare.model_validate({"maxRatio": 0})
    with pytest.raises(ValidationError):
        Compare.model_validate({"maxIncrease": -0.1})


def test_min_requests_is_positive() -> None:
    metric = {"name": "m", "query": "x", "thresholdRange": {"max": 1}}
    assert Analysis.model_validate({"minRequests": 200, "metrics": [metric]}).min_requests == 200
    with pytest.raises(ValidationError):
        Analysis.model_validate({"minRequests": 0, "metrics": [metric]})


def test_the_crd_carries_the_same_rules_for_the_api_server() -> None:
    schema = Metric.model_json_schema(by_alias=True)
    rules = [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]
    assert "has(self.thresholdRange) || has(self.compare) || has(self.job)" in rules
    compare = Compare.model_json_schema(by_alias=True)
    assert [r["rule"] for r in compare["x-kubernetes-validations"]] == [
        "has(self.maxIncrease) || has(self.maxRatio)"
    ]


# ---- canary against stable ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "limits", "outcome", "message"),
    [
        (0.021, 0.019, {"maxIncrease": 0.01}, Outcome.PASSED, "canary 0.021 vs stable 0.019 (+0.002 ≤ 0.01)"),
        (0.2, 0.02, {"maxIncrease": 0.01}, Outcome.FAILED, "canary 0.2 vs stable 0.02 (+0.18 > 0.01)"),
        (0.02, 0.02, {"maxIncrease": 0}, Outcome.PASSED, "canary 0.02 vs stable 0.02 (+0 ≤ 0)"),
        (0.01, 0.02, {"maxIncrease": 0}, Outcome.PASSED, "canary 0.01 vs stable 0.02 (-0.01 ≤ 0)"),
        (0.3, 0.2, {"maxRatio": 1.5}, Outcome.PASSED, "canary 0.3 vs stable 0.2 (ratio 1.5 ≤ 1.5)"),
        (0.31, 0.2, {"maxRatio": 1.5}, Outcome.FAILED, "canary 0.31 vs stable 0.2 (ratio 1.55 > 1.5)"),
        # Both limits must hold: within maxIncrease, but more than twice the stable's.
        (
            0.005,
            0.002,
            {"maxIncrease": 0.01, "maxRatio": 2},
            Outcome.FAILED,
            "canary 0.005 vs stable 0.002 (+0.003 ≤ 0.01, ratio 2.5 > 2)",
        ),
        # A ratio of a stable at 0: any canary above it is infinitely worse.
        (0.001, 0.0, {"maxRatio": 2}, Outcome.FAILED, "canary 0.001 vs stable 0 (ratio +Inf > 2)"),
        (0.0, 0.0, {"maxRatio": 2}, Outcome.PASSED, "canary 0 vs stable 0 (ratio 1 ≤ 2)"),
    ],
)
def test_compare_values(
    canary: float, stable: float, limits: dict[str, float], outcome: Outcome, message: str
) -> None:
    assert compare_values(canary, stable, Compare.model_validate(limits)) == (outcome, message)


def test_a_comparison_without_stable_data_follows_the_no_data_policy() -> None:
    result = judge(compared(), 0.01, math.nan)
    assert (result.outcome, result.value, result.stable_value) == (Outcome.INCONCLUSIVE, 0.01, None)
    assert result.message == "no data for the stable: nothing to compare with"
    assert judge(compared(noData="fail"), 0.01, None).outcome is Outcome.FAILED
    assert judge(compared(noData="pass"), 0.01, None).outcome is Outcome.PASSED


def test_threshold_and_comparison_both_hold() -> None:
    both = compared(thresholdRange={"max": 0.05})
    # As good as the stable, but the stable is above the absolute limit too.
    bad_day = judge(both, 0.1, 0.1)
    assert bad_day.outcome is Outcome.FAILED
    assert bad_day.message == "0.1 > max 0.05; canary 0.1 vs stable 0.1 (+0 ≤ 0.01)"
    assert judge(both, 0.03, 0.025).outcome is Outcome.PASSED


def test_a_compare_check_asks_both_tracks_and_shows_both_values() -> None:
    provider = FakeProvider({CANARY_Q: 0.021, STABLE_Q: 0.019})
    check = run_check([compared()], CONTEXT, sources(provider), NOW)
    assert sorted(query for _, query, _ in provider.calls) == sorted([CANARY_Q, STABLE_Q])
    [result] = check.metrics
    assert (check.outcome, result.value, result.stable_value) == (Outcome.PASSED, 0.021, 0.019)
    assert result.to_api()["stableValue"] == 0.019
    assert describe_check(check) == "errors=0.021 Passed (canary 0.021 vs stable 0.019 (+0.002 ≤ 0.01))"


def test_a_stable_query_that_fails_is_an_error_naming_the_stable() -> None:
    provider = FakeProvider({CANARY_Q: 0.01, STABLE_Q: ProviderError("Prometheus said 503")})
    [result] = run_check([compared()], CONTEXT, sources(provider), NOW).metrics
    assert (result.outcome, result.message) == (Outcome.ERROR, "stable: Prometheus said 503")


def test_builtins_render_for_either_track_and_group_the_stable_with_the_canary() -> None:
    metric = Metric(name="e", template="request-error-rate", compare={"maxIncrease": 0.01})
    canary, stable = render_query(metric, CONTEXT), render_query(metric, CONTEXT, "stable")
    assert 'service="web-canary"' in canary and 'service="web"' not in canary
    assert stable == canary.replace('service="web-canary"', 'service="web"')
    # The fan-in: one grouped text for both tracks, told apart by their series only.
    one, other = grouped_query(metric, CONTEXT), grouped_query(metric, CONTEXT, "stable")
    assert one is not None and other is not None and one.text == other.text
    assert (one.series, other.series) == (("shop", "web-canary"), ("shop", "web"))


def test_the_old_variables_still_name_the_canary() -> None:
    metric = Metric(name="m", query="{{ canary.service }}/{{ stable.service }}", threshold_range={"max": 1})
    assert render_query(metric, CONTEXT) == "web-canary/web"
    assert render_query(metric, CONTEXT, "stable") == "web-canary/web"


# ---- minRequests ----------------------------------------------------------------------------------------


def results(*outcomes: Outcome) -> list[MetricResult]:
    return [MetricResult(name=f"m{i}", outcome=o, message=f"msg{i}") for i, o in enumerate(outcomes)]


def test_too_few_requests_make_passed_and_failed_inconclusive_and_say_how_many() -> None:
    low = with_min_requests(results(Outcome.PASSED, Outcome.FAILED, Outcome.ERROR), 12.4, 200, "30s")
    assert [r.outcome for r in low] == [Outcome.INCONCLUSIVE, Outcome.INCONCLUSIVE, Outcome.ERROR]
    assert low[0].message == (
        "the canary served 12 requests in 30s, fewer than minRequests 200 (measured Passed: msg0)"
    )
    assert low[2].message == "msg2"  # an outage still counts against errorLimit
    assert "served 0 requests" in with_min_requests(results(Outcome.PASSED), None, 1, "30s")[0].message
    enough = results(Outcome.PASSED)
    assert with_min_requests(enough, 200, 200, "30s") == enough


def test_a_check_counts_the_canarys_requests_when_min_requests_is_set() -> None:
    provider = FakeProvider({CANARY_Q: 0.0, COUNT_Q: 15.0})
    metric = Metric(name="errors", query=ERRORS, threshold_range={"max": 0.01})
    low = run_check([metric], CONTEXT, sources(provider), NOW, min_requests=200)
    assert (low.outcome, low.canary_requests) == (Outcome.INCONCLUSIVE, 15.0)
    assert "the canary served 15 requests in 30s, fewer than minRequests 200" in low.metrics[0].message

    provider.answers[COUNT_Q] = 250.0
    high = run_check([metric], CONTEXT, sources(provider), NOW, min_requests=200)
    assert (high.outcome, high.canary_requests, high.metrics[0].message) == (Outcome.PASSED, 250.0, "")
    assert run_check([metric], CONTEXT, sources(provider), NOW).canary_requests is None  # not asked


def test_requests_that_cannot_be_counted_pass_nothing() -> None:
    provider = FakeProvider({CANARY_Q: 0.0, COUNT_Q: ProviderError("connection refused")})
    metric = Metric(name="errors", query=ERRORS, threshold_range={"max": 0.01})
    check = run_check([metric], CONTEXT, sources(provider), NOW, min_requests=10)
    assert check.outcome is Outcome.ERROR
    assert check.metrics[0].message.startswith(
        "cannot count the canary's requests for minRequests: connection refused"
    )


def test_the_request_count_asks_the_analysis_prometheus() -> None:
    own = Metric.model_validate(
        {"name": "e", "query": "x", "thresholdRange": {"max": 1}, "prometheus": {"address": "http://p:9090"}}
    )
    counter = request_counter([own])
    assert counter.template == "request-count"
    assert counter.source()[1].address == "http://p:9090"
    assert render_query(counter, CONTEXT) == COUNT_Q


# ---- dry run ---------------------------------------------------------------------------------------


def test_a_failing_dry_run_metric_is_recorded_but_never_gates() -> None:
    provider = FakeProvider({"good": 0.0, "bad": 0.5})
    good = Metric(name="good", query="good", threshold_range={"max": 0.01})
    bad = Metric(name="bad", query="bad", threshold_range={"max": 0.01}, dry_run=True)
    check = run_check([good, bad], CONTEXT, sources(provider), NOW)
    assert check.outcome is Outcome.PASSED
    assert (check.metrics[1].outcome, check.metrics[1].dry_run) == (Outcome.FAILED, True)
    assert "dryRun" not in check.metrics[0].to_api()  # only dry-run results say so
    assert dry_run_notes(check) == [
        "dry-run metric bad Failed (not gating): bad=0.5 Failed [dry run] (0.5 > max 0.01)"
    ]
    assert gating_outcome([check.metrics[1]]) is Outcome.PASSED  # all dry run: nothing gates


def test_a_passing_dry_run_metric_makes_no_event() -> None:
    check = Check(
        time="t", outcome=Outcome.PASSED, metrics=[MetricResult(name="x", outcome="Passed", dry_run=True)]
    )
    assert dry_run_notes(check) == []


# ---- slo-burn-rate ----------------------------------------------------------------------------------------


def burn(**args: str) -> Metric:
    return Metric(name="burn", template="slo-burn-rate", args=args, threshold_range={"max": 14.4})


def test_slo_burn_rate_is_the_lower_of_the_two_windows_burn_rates() -> None:
    query = render_query(burn(objective="0.999"), CONTEXT)
    long = (
        '((sum(rate(http_requests_total{namespace="shop",service="web-canary",code=~"5.."}[1h]))) '
        "or vector(0))\n  /\n"
        '  sum(rate(http_requests_total{namespace="shop",service="web-canary"}[1h]))\n  / (1 - 0.999)'
    )
    assert long in query and long.replace("[1h]", "[5m]") in query
    # min(long, short) as "long < short or short <= long": empty when either has no data.
    assert query.count("\n< ") == 1 and query.count("\n<= ") == 1 and query.count("\nor\n") == 1
    custom = render_query(burn(objective=".995", longWindow="1.5h", shortWindow="30m"), CONTEXT)
    assert "[5400s]" in custom and "[30m]" in custom and "(1 - .995)" in custom


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, 'slo-burn-rate needs args.objective, the SLO as a ratio, e.g. "0.999"'),
        ({"objective": "99.9"}, 'args.objective "99.9" must be a number between 0 and 1 (exclusive)'),
        ({"objective": "1"}, 'args.objective "1" must be a number'),
        ({"objective": "0.0"}, 'args.objective "0.0" must be a number'),
        ({"objective": "0.9_9"}, 'args.objective "0.9_9" must be a number'),
        ({"objective": "0.99) or vector(1"}, 'args.objective "0.99) or vector(1" must be a number'),
        (
            {"objective": "0.99", "longWindow": "soon"},
            'args.longWindow "soon" must be a duration of at least 1s',
        ),
        (
            {"objective": "0.99", "longWindow": "5m", "shortWindow": "1h"},
            'args.shortWindow "1h" must be shorter than args.longWindow "5m"',
        ),
    ],
)
def test_slo_burn_rate_args_are_checked_with_clear_messages(args: dict[str, str], message: str) -> None:
    with pytest.raises(QueryTemplateError) as raised:
        render_query(burn(**args), CONTEXT)
    assert str(raised.value).startswith(f'metric "burn": {message}')
    # The same message stops the release before it starts.
    assert validate_metrics([burn(**args)], CONTEXT, sources(FakeProvider({})))[0] == str(raised.value)


# ---- the API server (the CRD's CEL rules, in the sandbox) -----------------------------------------------


def compare_example() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / "analysis" / "compare.yaml").read_text()))


def test_the_api_server_refuses_a_metric_without_a_verdict_and_a_compare_without_a_limit() -> None:
    rollouts = served(sluice_crd("Rollout"))
    rollout = compare_example()
    metrics = rollout["spec"]["strategy"]["canary"]["analysis"]["metrics"]
    del metrics[0]["compare"]
    metrics[1]["compare"] = {"against": "stable"}
    assert causes(refusal(rollouts, rollout)) == [
        (
            "spec.strategy.canary.analysis.metrics[0]",
            "FieldValueInvalid",
            f'Invalid value: "object": {VERDICT_NEEDED}',
        ),
        (
            "spec.strategy.canary.analysis.metrics[1].compare",
            "FieldValueInvalid",
            f'Invalid value: "object": {COMPARE_NEEDS_A_LIMIT}',
        ),
    ]
    assert write(rollouts, compare_example())["spec"]["strategy"]["canary"]["analysis"]["metrics"][0][
        "compare"
    ] == {
        "against": "stable",
        "maxIncrease": 0.01,
        "maxRatio": 1.5,
    }


# ---- the query fan-in -----------------------------------------------------------------------------


def test_through_the_fanin_the_stable_and_the_request_count_cost_no_query_of_their_own(
    fanin: QueryFanIn,
) -> None:
    provider = GroupingFake(
        series={
            ("shop", "a-canary"): 0.021,
            ("shop", "a"): 0.019,
            ("shop", "b-canary"): 0.2,
            ("shop", "b"): 0.02,
        }
    )
    compare = Metric(name="errors", template="request-error-rate", compare={"maxIncrease": 0.01})
    src = fanin_sources(provider, fanin)
    checks = [start_check([compare], fanin_context(rollout=r), src, NOW) for r in ("a", "b")]
    fanin.flush()
    assert len(provider.grouped) == 1 and provider.single == []  # two Rollouts, two tracks: one query
    a, b = (check.result().metrics[0] for check in checks)
    assert (a.outcome, a.value, a.stable_value) == (Outcome.PASSED, 0.021, 0.019)
    assert (b.outcome, b.value, b.stable_value) == (Outcome.FAILED, 0.2, 0.02)

    # minRequests: one more grouped query (request-count) for all of them.
    provider.series = {("shop", "a-canary"): 12.0, ("shop", "a"): 300.0}
    counted = start_check([compare], fanin_context(rollout="a"), src, NOW, min_requests=100)
    fanin.flush()
    assert len(provider.grouped) == 3 and provider.single == []
    assert (counted.result().outcome, counted.result().canary_requests) == (Outcome.INCONCLUSIVE, 12.0)
