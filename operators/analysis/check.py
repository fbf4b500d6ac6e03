"""One analysis check: every metric rendered, queried and judged, combined into a `Check`."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from operators.analysis.provider import MetricsProvider, ProviderError
from operators.analysis.templates import QueryContext, QueryTemplateError, render_query
from operators.analysis.thresholds import combine, evaluate
from operators.api.base import parse_duration
from operators.api.rollout import Check, Metric, MetricResult, Outcome, ThresholdRange

logger = logging.getLogger(__name__)

NO_ADDRESS = (
    "no Prometheus address: set prometheus.address on the metric or run the operator with --prometheus-url"
)
NO_DATA = "no data"

# Metrics are queried in parallel so that one slow Prometheus (up to its
# timeout) does not add up across metrics and delay the whole check.
_MAX_PARALLEL_QUERIES = 8


def format_value(value: float) -> str:
    """Numbers as PromQL prints them: 0.31, 1.5e-05, +Inf."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def _verdict(value: float, threshold: ThresholdRange) -> str:
    if threshold.min is not None and value < threshold.min:
        return f"{format_value(value)} < min {format_value(threshold.min)}"
    if threshold.max is not None and value > threshold.max:
        return f"{format_value(value)} > max {format_value(threshold.max)}"
    return ""


def rfc3339(moment: datetime) -> str:
    """``2026-01-01T00:00:00Z``; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_metric(
    metric: Metric, context: QueryContext, provider: MetricsProvider, default_address: str | None
) -> MetricResult:
    """One metric's result. Never raises: every problem becomes an Error result with its reason."""

    def error(message: str) -> MetricResult:
        return MetricResult(name=metric.name, outcome=Outcome.ERROR, message=message)

    try:
        promql = render_query(metric, context)
    except QueryTemplateError as err:
        return error(str(err))
    address = metric.prometheus.address or default_address
    if not address:
        return error(NO_ADDRESS)
    try:
        value = provider.query(address, promql, parse_duration(metric.prometheus.timeout).total_seconds())
    except ProviderError as err:
        return error(str(err))
    except Exception as err:  # a provider bug must not take the whole check (or the operator) down
        logger.exception("metrics provider failed on metric %r", metric.name)
        return error(f"metrics provider failed: {type(err).__name__}: {err}"[:300])
    outcome = evaluate(value, metric.threshold_range, metric.no_data)
    if value is None or math.isnan(value):
        # NaN cannot be stored in a Kubernetes status (JSON has no NaN): no data is None.
        return MetricResult(name=metric.name, outcome=outcome, value=None, message=NO_DATA)
    return MetricResult(
        name=metric.name, outcome=outcome, value=value, message=_verdict(value, metric.threshold_range)
    )


def run_check(
    metrics: Sequence[Metric],
    context: QueryContext,
    provider: MetricsProvider,
    default_address: str | None,
    now: datetime,
) -> Check:
    """Query every metric (in parallel) and combine their outcomes into one check at time `now`."""
    if len(metrics) <= 1:
        results = [run_metric(metric, context, provider, default_address) for metric in metrics]
    else:
        with ThreadPoolExecutor(max_workers=min(len(metrics), _MAX_PARALLEL_QUERIES)) as pool:
            results = list(pool.map(lambda m: run_metric(m, context, provider, default_address), metrics))
    return Check(time=rfc3339(now), outcome=combine(r.outcome for r in results), metrics=results)


def validate_queries(metrics: Sequence[Metric], context: QueryContext) -> list[str]:
    """The template problems of these metrics, without querying anything (empty when all render).

    Run before a release starts, so that a typo stops it before anything is deployed.
    """
    problems: list[str] = []
    for metric in metrics:
        try:
            render_query(metric, context)
        except QueryTemplateError as err:
            problems.append(str(err))
    return problems
