"""Rollouts that are valid but cannot do what they were surely meant to: pure functions of the spec.

- a canary step at 100% before any analysis check could run: the release is
  complete before anything measured it (an error);
- timed pauses without any analysis (or hooks): the release advances on the clock alone,
  with nothing that could roll it back (a warning: a deliberate timed canary
  exists, but it is rarely what is meant);
- a threshold no value can meet: a verdict that fails every check (an error).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from operators.api.rollout import JOB_METRIC_FIELD, Canary, Metric, RolloutSpec
from operators.cli.lint.analyses import CANARY, analyses
from operators.cli.lint.documents import FieldPath, Severity

INFINITY = float("inf")

# The values a built-in template can take: all are counts, rates or durations, never negative;
# an error rate is a ratio of requests.
BUILTIN_RANGES: Mapping[str, tuple[float, float]] = {
    "request-error-rate": (0.0, 1.0),
    "request-duration-p99": (0.0, INFINITY),
    "request-count": (0.0, INFINITY),
    "slo-burn-rate": (0.0, INFINITY),
}
JOB_RANGE = (0.0, 1.0)  # a job metric is 1 when its Job succeeds, 0 when it fails


@dataclass(frozen=True)
class Issue:
    """A sanity problem at a path of the Rollout's document."""

    path: FieldPath
    severity: Severity
    message: str


def sanity_issues(spec: RolloutSpec, user_templates: frozenset[str] = frozenset()) -> list[Issue]:
    """Every sanity problem of a valid RolloutSpec. `user_templates`: names a MetricTemplate or
    ClusterMetricTemplate defines (they shadow a built-in of the same name, whose range is unknown)."""
    issues: list[Issue] = []
    canary = spec.strategy.canary
    if canary is not None:
        issues += full_weight_before_analysis(canary)
        issues += timed_pauses_without_analysis(canary)
    for path, analysis in analyses(spec):
        for index, metric in enumerate(analysis.metrics):
            issues += unreachable_thresholds((*path, "metrics", index), metric, user_templates)
    return issues


def _step_path(canary: Canary, index: int) -> FieldPath:
    return (*CANARY, "steps", index, "setWeight") if canary.steps is not None else (*CANARY, "stepWeight")


def full_weight_before_analysis(canary: Canary) -> Iterator[Issue]:
    """The first step to 100% when no check could run before it (analysis configured).

    A check runs while the canary receives requests; it holds a step when
    minChecksPerStep is at least 1, else only a pause gives it time to come.
    """
    if canary.analysis is None:
        return
    holds = canary.analysis.min_checks_per_step >= 1
    receiving = checked = False
    for index, step in enumerate(canary.effective_steps()):
        if step.set_weight is not None:
            receiving = step.set_weight > 0
        elif step.sets_routes():
            receiving = True
        if step.set_weight == 100 and not checked:
            where = "the first step" if index == 0 else f"the step at index {index}"
            yield Issue(
                _step_path(canary, index),
                Severity.ERROR,
                f"{where} sets the weight to 100 before any analysis check could run: the release "
                "is complete before anything measured the canary; add a smaller setWeight step first"
                + ("" if holds else " and a pause (minChecksPerStep is 0: no step waits for a check)"),
            )
            return
        if receiving and (holds or step.pause is not None):
            checked = True


def timed_pauses_without_analysis(canary: Canary) -> Iterator[Issue]:
    """The first timed pause of a canary that has no analysis at all (nor hooks, which can fail it)."""
    if canary.analysis is not None or canary.post_promotion_analysis is not None or canary.hooks is not None:
        return
    for index, step in enumerate(canary.steps or []):
        if step.pause is not None and step.pause.duration is not None:
            yield Issue(
                (*CANARY, "steps", index, "pause"),
                Severity.WARNING,
                "a timed pause with no analysis: the release advances on the clock alone and nothing "
                "can roll it back; add canary.analysis, or pause without a duration to promote by hand",
            )
            return


def value_range(metric: Metric, user_templates: frozenset[str]) -> tuple[float, float] | None:
    """The values the metric can take, when known (a job, a built-in template), else None."""
    if getattr(metric, JOB_METRIC_FIELD, None) is not None:
        return JOB_RANGE
    if metric.query is None and metric.template is not None and metric.template not in user_templates:
        return BUILTIN_RANGES.get(metric.template)
    return None


def unreachable_thresholds(
    path: FieldPath, metric: Metric, user_templates: frozenset[str]
) -> Iterator[Issue]:
    """A thresholdRange that no value the metric can take meets: every check fails."""
    limits, known = metric.threshold_range, value_range(metric, user_templates)
    if limits is None or known is None:
        return
    low, high = known
    what = "a job metric" if getattr(metric, JOB_METRIC_FIELD, None) is not None else f'"{metric.template}"'
    if limits.max is not None and limits.max < low:
        yield Issue(
            (*path, "thresholdRange", "max"),
            Severity.ERROR,
            f'metric "{metric.name}": thresholdRange.max {limits.max:g} is below {low:g}, the least '
            f"{what} can be: every check fails",
        )
    if limits.min is not None and limits.min > high:
        yield Issue(
            (*path, "thresholdRange", "min"),
            Severity.ERROR,
            f'metric "{metric.name}": thresholdRange.min {limits.min:g} is above {high:g}, the most '
            f"{what} can be: every check fails",
        )
