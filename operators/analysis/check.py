"""One analysis check: every metric rendered, queried and judged, combined into a `Check`.

`start_check` returns a future and holds no thread while it waits: a metric
with a grouped form (a built-in template, on a provider that can group) goes to
the operator's query fan-in (`fanin.QueryFanIn`), any other is one query in the
analysis' query pool (`pool.query_pool`). So a thousand checks in flight cost
the pool's threads, not a thousand. `run_check` is the same check, waited for.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from operators.analysis.fanin import QueryFanIn
from operators.analysis.jobs import JobOutcome, JobOwner, JobResult, JobRunner, analysis_job
from operators.analysis.pool import query_pool
from operators.analysis.templates import QueryContext, QueryTemplateError, grouped_query, render_query
from operators.analysis.thresholds import combine, evaluate
from operators.api.base import parse_duration
from operators.api.rollout import JOB_METRIC_FIELD, Check, Metric, MetricResult, Outcome, ThresholdRange
from operators.foundation.clock import format_time
from operators.metrics.base import GroupingProvider, MetricProvider, ProviderError
from operators.metrics.hosts import AllowedHosts
from operators.metrics.registry import PROVIDERS

logger = logging.getLogger(__name__)

NO_ADDRESS = "no address: set {field}.address on the metric or run the operator with --prometheus-url"
NO_DATA = "no data"
STOPPED = "analysis stopped before the query was answered"


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
    """``2026-01-01T00:00:00Z``, with milliseconds when there are any; naive is taken as UTC.

    Milliseconds matter: the next check is due one interval after this time, and
    a time truncated to the second would make it due up to a second early.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)


@dataclass(frozen=True)
class MetricSources:
    """What the analysis may ask: the providers, their default addresses, and the hosts allowed."""

    allowed: AllowedHosts = field(default_factory=AllowedHosts)
    # A provider's address when the metric names none, e.g. {"prometheus": --prometheus-url}.
    default_addresses: Mapping[str, str] = field(default_factory=dict)
    providers: Mapping[str, MetricProvider] = field(default_factory=lambda: PROVIDERS)
    # Gathers the grouped queries of many Rollouts into one (the operator has one);
    # None: every metric is one query per Rollout.
    fanin: QueryFanIn | None = None
    # Runs the Jobs of job metrics (the operator has one); None: a job metric is an Error.
    jobs: JobRunner | None = None

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


def _error(metric: Metric, message: str) -> MetricResult:
    return MetricResult(name=metric.name, outcome=Outcome.ERROR, message=message)


def _judge(metric: Metric, value: float | None) -> MetricResult:
    outcome = evaluate(value, metric.threshold_range, metric.no_data)
    if value is None or math.isnan(value):
        # NaN cannot be stored in a Kubernetes status (JSON has no NaN): no data is None.
        return MetricResult(name=metric.name, outcome=outcome, value=None, message=NO_DATA)
    return MetricResult(
        name=metric.name, outcome=outcome, value=value, message=_verdict(value, metric.threshold_range)
    )


def _judged(metric: Metric, answer: Future[float | None]) -> Future[MetricResult]:
    """The metric's result once `answer` is in: a value judged, or the reason there is none."""
    result: Future[MetricResult] = Future()

    def done(answered: Future[float | None]) -> None:
        if answered.cancelled():
            result.set_result(_error(metric, STOPPED))
            return
        err = answered.exception()
        if err is None:
            result.set_result(_judge(metric, answered.result()))
        elif isinstance(err, ProviderError):
            result.set_result(_error(metric, str(err)))
        else:  # a provider bug must not take the whole check (or the operator) down
            logger.error("metrics provider failed on metric %r", metric.name, exc_info=err)
            result.set_result(_error(metric, f"metrics provider failed: {type(err).__name__}"))

    answer.add_done_callback(done)
    return result


def _finished(result: MetricResult) -> Future[MetricResult]:
    future: Future[MetricResult] = Future()
    future.set_result(result)
    return future


def _unix(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken to be UTC already (as `rfc3339` does)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def start_metric(
    metric: Metric, context: QueryContext, sources: MetricSources, now: datetime
) -> Future[MetricResult]:
    """One metric's result, to come. Never fails: every problem becomes an Error result with its reason.

    Rendering (cached, in the template workers) and the address checks happen
    here, in the caller's thread; only the query itself is waited for.
    """
    if _runs_a_job(metric):
        return start_job_metric(metric, context, sources, now)
    try:
        query = render_query(metric, context)
        provider, config, address = sources.resolve(metric)
    except (QueryTemplateError, ProviderError) as err:
        return _finished(_error(metric, str(err)))
    if not sources.allowed.allows(address):  # checked at validation too; never send one regardless
        return _finished(_error(metric, sources.allowed.refusal(address)))
    try:
        timeout = query_timeout(provider.timeout_seconds(config), context)
        answer: Future[float | None] | None = None
        if sources.fanin is not None and isinstance(provider, GroupingProvider):
            grouped = grouped_query(metric, context)  # None: no grouped form, one query of its own
            if grouped is not None:
                answer = sources.fanin.request(provider, config, address, grouped, timeout, _unix(now))
        if answer is None:
            answer = query_pool().submit(provider.query, config, address, query, timeout)
    except Exception as err:  # a provider's or the pool's failure is this metric's Error, never a crash
        logger.exception("could not start the query of metric %r", metric.name)
        return _finished(_error(metric, f"metrics provider failed: {type(err).__name__}"))
    return _judged(metric, answer)


def _runs_a_job(metric: Metric) -> bool:
    return getattr(metric, JOB_METRIC_FIELD, None) is not None


NO_JOB_RUNNER = "job metrics need the operator's Job runner"


def start_job_metric(
    metric: Metric, context: QueryContext, sources: MetricSources, now: datetime
) -> Future[MetricResult]:
    """A job metric's check: one Job, its value 1 when it succeeds and 0 when it fails.

    A Job past its deadline, or one that cannot be created, is an Error; the result's
    message names the Job either way.
    """
    if sources.jobs is None:
        return _finished(_error(metric, NO_JOB_RUNNER))
    owner = JobOwner(context.namespace, context.rollout_name, context.rollout_uid)
    _, config = metric.source()
    outcome = sources.jobs.run(analysis_job(owner, metric.name, config, now))
    value: Future[float | None] = Future()
    result: Future[MetricResult] = Future()

    def judged(done: Future[MetricResult]) -> None:
        judgement = done.result()
        if not outcome.cancelled() and outcome.exception() is None:
            job = outcome.result()
            said = f"Job {job.name} {job.outcome.value.lower()}" + (
                f" ({job.message})" if job.message else ""
            )
            if judgement.message and judgement.value is not None:
                said += f": {judgement.message}"
            judgement = judgement.model_copy(update={"message": said})
        result.set_result(judgement)

    def answered(done: Future[JobResult]) -> None:
        if done.cancelled():
            value.cancel()
        elif (err := done.exception()) is not None:
            value.set_exception(err)
        elif done.result().outcome == JobOutcome.DEADLINE_EXCEEDED:
            job = done.result()
            value.set_exception(ProviderError(f"Job {job.name} ran past its deadline ({job.message})"))
        else:
            value.set_result(1.0 if done.result().outcome == JobOutcome.SUCCEEDED else 0.0)

    _judged(metric, value).add_done_callback(judged)
    outcome.add_done_callback(answered)
    return result


def start_check(
    metrics: Sequence[Metric], context: QueryContext, sources: MetricSources, now: datetime
) -> Future[Check]:
    """Start querying every metric (at once); the future is the check at time `now`, once all answered.

    Never fails: a metric that cannot be queried is an Error result in the check.
    """
    check: Future[Check] = Future()
    results = [start_metric(metric, context, sources, now) for metric in metrics]
    remaining = len(results)
    lock = threading.Lock()

    def finish() -> None:
        done = [future.result() for future in results]  # in spec order, whatever answered first
        check.set_result(Check(time=rfc3339(now), outcome=combine(r.outcome for r in done), metrics=done))

    def one_done(_: Future[MetricResult]) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            last = remaining == 0
        if last:
            finish()

    if not results:
        finish()
    for future in results:
        future.add_done_callback(one_done)
    return check


def run_check(
    metrics: Sequence[Metric], context: QueryContext, sources: MetricSources, now: datetime
) -> Check:
    """`start_check`, waited for (tests and tools; the operator never waits in a thread)."""
    return start_check(metrics, context, sources, now).result()


def validate_metrics(metrics: Sequence[Metric], context: QueryContext, sources: MetricSources) -> list[str]:
    """The problems of these metrics, without querying anything (empty when all can run).

    Templates that do not render, and addresses that are not allowed: run before
    a release starts, so that a typo or a forbidden address stops it before
    anything is deployed or any request is sent.
    """
    problems: list[str] = []
    for metric in metrics:
        if _runs_a_job(metric):
            continue  # a Job has no query to render and no address to allow
        try:
            render_query(metric, context)
        except QueryTemplateError as err:
            problems.append(str(err))
        refused = sources.problem(metric)
        if refused:
            problems.append(refused)
    return problems
