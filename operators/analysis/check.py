"""One analysis check: every metric rendered, queried and judged, combined into a `Check`."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from operators.analysis.templates import QueryContext, QueryTemplateError, render_query
from operators.analysis.thresholds import combine, evaluate
from operators.api.base import parse_duration
from operators.api.rollout import Check, Metric, MetricResult, Outcome, ThresholdRange
from operators.metrics.base import MetricProvider, ProviderError
from operators.metrics.hosts import AllowedHosts
from operators.metrics.registry import PROVIDERS

logger = logging.getLogger(__name__)

NO_ADDRESS = "no address: set {field}.address on the metric or run the operator with --prometheus-url"
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


@dataclass(frozen=True)
class MetricSources:
    """What the analysis may ask: the providers, their default addresses, and the hosts allowed."""

    allowed: AllowedHosts = field(default_factory=AllowedHosts)
    # A provider's address when the metric names none, e.g. {"prometheus": --prometheus-url}.
    default_addresses: Mapping[str, str] = field(default_factory=dict)
    providers: Mapping[str, MetricProvider] = field(default_factory=lambda: PROVIDERS)

    def resolve(self, metric: Metric) -> tuple[MetricProvider, object, str]:
        """The metric's provider, its block and the address to ask; ProviderError when there is none.

        The same provider instance registered under the metric's provider field
        is used, so tests can stand a fake Prometheus in its place.
        """
        registered, config = metric.source()
        provider = self.providers.get(registered.field, registered)
        address = provider.address(config) or self.default_addresses.get(registered.field)
        if not address:
            raise ProviderError(NO_ADDRESS.format(field=registered.field))
        return provider, config, address

    def problem(self, metric: Metric) -> str | None:
        """Why this metric's address may not be queried, or None when it may (or has none yet)."""
        try:
            _, _, address = self.resolve(metric)
        except ProviderError:
            return None  # no address at all is reported by the check itself, as an Error
        if self.allowed.allows(address):
            return None
        return f'metric "{metric.name}": {self.allowed.refusal(address)}'


# No query may take longer than this, whatever its metric says (documented in the README).
MAX_QUERY_SECONDS = 30.0


def query_timeout(configured: float, context: QueryContext) -> float:
    """The metric's timeout, at most one analysis interval and at most MAX_QUERY_SECONDS.

    A check longer than its interval would only delay the next one (and a
    rollback with it); a hung backend is an Error soon enough to count.
    """
    try:
        interval = parse_duration(context.interval).total_seconds()
    except ValueError:
        interval = MAX_QUERY_SECONDS
    return min(configured, interval, MAX_QUERY_SECONDS)


def run_metric(metric: Metric, context: QueryContext, sources: MetricSources) -> MetricResult:
    """One metric's result. Never raises: every problem becomes an Error result with its reason."""

    def error(message: str) -> MetricResult:
        return MetricResult(name=metric.name, outcome=Outcome.ERROR, message=message)

    try:
        query = render_query(metric, context)
        provider, config, address = sources.resolve(metric)
    except QueryTemplateError as err:
        return error(str(err))
    except ProviderError as err:
        return error(str(err))
    if not sources.allowed.allows(address):  # checked at validation too; never send one regardless
        return error(sources.allowed.refusal(address))
    try:
        value = provider.query(
            config, address, query, query_timeout(provider.timeout_seconds(config), context)
        )
    except ProviderError as err:
        return error(str(err))
    except Exception as err:  # a provider bug must not take the whole check (or the operator) down
        logger.exception("metrics provider failed on metric %r", metric.name)
        return error(f"metrics provider failed: {type(err).__name__}")
    outcome = evaluate(value, metric.threshold_range, metric.no_data)
    if value is None or math.isnan(value):
        # NaN cannot be stored in a Kubernetes status (JSON has no NaN): no data is None.
        return MetricResult(name=metric.name, outcome=outcome, value=None, message=NO_DATA)
    return MetricResult(
        name=metric.name, outcome=outcome, value=value, message=_verdict(value, metric.threshold_range)
    )


def run_check(
    metrics: Sequence[Metric], context: QueryContext, sources: MetricSources, now: datetime
) -> Check:
    """Query every metric (in parallel) and combine their outcomes into one check at time `now`."""
    if len(metrics) <= 1:
        results = [run_metric(metric, context, sources) for metric in metrics]
    else:
        with ThreadPoolExecutor(max_workers=min(len(metrics), _MAX_PARALLEL_QUERIES)) as pool:
            results = list(pool.map(lambda m: run_metric(m, context, sources), metrics))
    return Check(time=rfc3339(now), outcome=combine(r.outcome for r in results), metrics=results)


def validate_metrics(metrics: Sequence[Metric], context: QueryContext, sources: MetricSources) -> list[str]:
    """The problems of these metrics, without querying anything (empty when all can run).

    Templates that do not render, and addresses that are not allowed: run before
    a release starts, so that a typo or a forbidden address stops it before
    anything is deployed or any request is sent.
    """
    problems: list[str] = []
    for metric in metrics:
        try:
            render_query(metric, context)
        except QueryTemplateError as err:
            problems.append(str(err))
        refused = sources.problem(metric)
        if refused:
            problems.append(refused)
    return problems
