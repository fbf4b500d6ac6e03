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
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from operators.analysis.fanin import QueryFanIn
from operators.analysis.jobs import JobOutcome, JobOwner, JobResult, JobRunner, analysis_job
from operators.analysis.judging import (
    format_value,
    gating_outcome,
    judge,
    with_min_requests,
    without_request_count,
)
from operators.analysis.pool import query_pool
from operators.analysis.templates import (
    CANARY_TRACK,
    REQUEST_COUNT,
    STABLE_TRACK,
    QueryContext,
    QueryTemplateError,
    Track,
    grouped_query,
    render_query,
)
from operators.api.base import parse_duration
from operators.api.rollout import JOB_METRIC_FIELD, Check, Metric, MetricResult, Outcome
from operators.foundation.clock import format_time
from operators.foundation.telemetry import observe_query
from operators.metrics.base import (
    CredentialedProvider,
    GroupingProvider,
    MetricProvider,
    ProviderError,
    takes_query,
)
from operators.metrics.credentials import SecretReader
from operators.metrics.hosts import AllowedHosts
from operators.metrics.registry import PROVIDERS

logger = logging.getLogger(__name__)

NO_ADDRESS = "no address: set {field}.address on the metric or run the operator with --prometheus-url"
STOPPED = "analysis stopped before the query was answered"
__all__ = ["format_value"]  # re-exported: tests and tools format values as the messages do


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
    # Reads the Secrets metrics name (credentials, CA bundles) in their Rollout's namespace, cached
    # (the operator's reads through the API); None: a metric naming a Secret is an Error.
    secrets: SecretReader | None = None
    # Runs the Jobs of job metrics (the operator has one); None: a job metric is an Error.
    jobs: JobRunner | None = None

    def bind(self, provider: MetricProvider, config: object, namespace: str) -> object:
        """The block with the credentials it names, for a provider that has any; ProviderError if missing."""
        if isinstance(provider, CredentialedProvider):
            return provider.bind(config, namespace, self.secrets)
        return config

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
    return MetricResult(
        name=metric.name, outcome=Outcome.ERROR, dry_run=metric.dry_run or None, message=message
    )


def _problem(metric: Metric, answered: Future[float | None]) -> str | None:
    """Why a finished query has no value (cancelled, refused, a provider's bug); None when it has one."""
    if answered.cancelled():
        return STOPPED
    err = answered.exception()
    if err is None:
        return None
    if isinstance(err, ProviderError):
        return str(err)
    # a provider bug must not take the whole check (or the operator) down
    logger.error("metrics provider failed on metric %r", metric.name, exc_info=err)
    return f"metrics provider failed: {type(err).__name__}"


def _judged(
    metric: Metric, answer: Future[float | None], stable: Future[float | None] | None = None
) -> Future[MetricResult]:
    """The metric's result once `answer` (and the `stable`'s, when it compares) is in: the values
    judged, or the reason there are none."""
    result: Future[MetricResult] = Future()
    answers = [answer] if stable is None else [answer, stable]
    remaining = len(answers)
    lock = threading.Lock()

    def done(_: Future[float | None]) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            if remaining:
                return
        problems = [(track, _problem(metric, a)) for track, a in zip(("", "stable: "), answers, strict=False)]
        problem = next((f"{track}{p}" for track, p in problems if p is not None), None)
        if problem is not None:
            result.set_result(_error(metric, problem))
        else:
            result.set_result(judge(metric, answer.result(), stable.result() if stable else None))

    for each in answers:
        each.add_done_callback(done)
    return result


def _finished(result: MetricResult) -> Future[MetricResult]:
    future: Future[MetricResult] = Future()
    future.set_result(result)
    return future


class _NotAsked(Exception):
    """The query was not sent (it did not render, or its address is missing or refused): why."""


def _unix(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken to be UTC already (as `rfc3339` does)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _render(metric: Metric, context: QueryContext, track: Track = CANARY_TRACK) -> str:
    """The metric's rendered query for `track`; empty for a provider whose block says it all (`web`)."""
    provider, _ = metric.source()
    return render_query(metric, context, track) if takes_query(provider) else ""


def _ask(
    metric: Metric, context: QueryContext, sources: MetricSources, now: datetime, track: Track
) -> Future[float | None]:
    """The metric's value for `track`, to come; raises _NotAsked when the query cannot be sent.

    Rendering (cached, in the template workers) and the address checks happen
    here, in the caller's thread; only the query itself is waited for.
    """
    try:
        query = _render(metric, context, track)
        provider, config, address = sources.resolve(metric)
    except (QueryTemplateError, ProviderError) as err:
        raise _NotAsked(str(err)) from None
    if not sources.allowed.allows(address):  # checked at validation too; never send one regardless
        raise _NotAsked(sources.allowed.refusal(address))
    try:  # after the address check: no Secret is read for a metric that may not be sent anywhere
        config = sources.bind(provider, config, context.namespace)
    except ProviderError as err:
        raise _NotAsked(str(err)) from None
    try:
        timeout = query_timeout(provider.timeout_seconds(config), context)
        if sources.fanin is not None and isinstance(provider, GroupingProvider):
            # A compare metric's stable is one more member of the same batch: one query for both.
            grouped = grouped_query(metric, context, track)  # None: no grouped form, a query of its own
            if grouped is not None:
                return timed(
                    provider.field,
                    sources.fanin.request(provider, config, address, grouped, timeout, _unix(now)),
                )
        return timed(provider.field, query_pool().submit(provider.query, config, address, query, timeout))
    except Exception as err:  # a provider's or the pool's failure is this metric's Error, never a crash
        logger.exception("could not start the query of metric %r", metric.name)
        raise _NotAsked(f"metrics provider failed: {type(err).__name__}") from None


def timed(provider: str, answer: Future[float | None]) -> Future[float | None]:
    """`answer`, its time from now until it is in observed as the provider's query duration."""
    started = time.monotonic()
    answer.add_done_callback(lambda _: observe_query(provider, time.monotonic() - started))
    return answer


def start_metric(
    metric: Metric, context: QueryContext, sources: MetricSources, now: datetime
) -> Future[MetricResult]:
    """One metric's result, to come. Never fails: every problem becomes an Error result with its reason.

    A `compare` metric asks the same query of both tracks, at once.
    """
    if _runs_a_job(metric):
        return start_job_metric(metric, context, sources, now)
    try:
        answer = _ask(metric, context, sources, now, CANARY_TRACK)
        stable = _ask(metric, context, sources, now, STABLE_TRACK) if metric.compare is not None else None
    except _NotAsked as err:
        return _finished(_error(metric, str(err)))
    return _judged(metric, answer, stable)


def traffic_metrics(metrics: Sequence[Metric]) -> list[Metric]:
    """The metrics `analysis.minRequests` applies to: those with a query (Prometheus), which measure
    the canary's requests. A `web` or `job` metric's verdict does not depend on the traffic."""
    return [metric for metric in metrics if takes_query(metric.source()[0])]


def request_counter(metrics: Sequence[Metric]) -> Metric:
    """What `analysis.minRequests` asks: the built-in `request-count` of the canary, of the
    provider (and its block: address, credentials) of the analysis' first metric on a provider
    that can run it (Prometheus), else the default provider's defaults."""
    block: dict[str, object] = {}
    for metric in metrics:
        provider, config = metric.source()
        if isinstance(provider, GroupingProvider):
            block = {provider.field: config}
            break
    return Metric.model_validate(
        {"name": "minRequests", "template": REQUEST_COUNT, "thresholdRange": {"min": 0}, **block}
    )


def _count_requests(
    metrics: Sequence[Metric], context: QueryContext, sources: MetricSources, now: datetime
) -> Future[float | None]:
    """The canary's requests in the window, to come (failed with _NotAsked when it cannot be asked)."""
    try:
        return _ask(request_counter(metrics), context, sources, now, CANARY_TRACK)
    except _NotAsked as err:
        failed: Future[float | None] = Future()
        failed.set_exception(err)
        return failed


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
    metrics: Sequence[Metric],
    context: QueryContext,
    sources: MetricSources,
    now: datetime,
    min_requests: int | None = None,
) -> Future[Check]:
    """Start querying every metric (at once); the future is the check at time `now`, once all answered.

    Never fails: a metric that cannot be queried is an Error result in the check.
    With `min_requests`, the canary's requests are counted too (`judging.with_min_requests`),
    when any metric measures them (`traffic_metrics`).
    Dry-run metrics are in the check's results, not in its outcome.
    """
    check: Future[Check] = Future()
    results = [start_metric(metric, context, sources, now) for metric in metrics]
    # Only traffic metrics are held to minRequests; without any, the requests are not even counted.
    traffic = traffic_metrics(metrics) if min_requests is not None else []
    counted = {metric.name for metric in traffic}
    count = _count_requests(traffic, context, sources, now) if traffic else None
    waiting: list[Future[Any]] = [*results, *([count] if count is not None else [])]
    remaining = len(waiting)
    lock = threading.Lock()

    def finish() -> None:
        done = [future.result() for future in results]  # in spec order, whatever answered first
        seen = None
        if count is not None and min_requests is not None:
            problem = _problem(request_counter(traffic), count)
            if problem is not None:
                done = without_request_count(done, problem, counted)
            else:
                seen = count.result()
                seen = 0.0 if seen is None or math.isnan(seen) else seen  # no series: no requests
                done = with_min_requests(done, seen, min_requests, context.interval, counted)
        check.set_result(
            Check(time=rfc3339(now), outcome=gating_outcome(done), metrics=done, canary_requests=seen)
        )

    def one_done(_: Future[Any]) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            last = remaining == 0
        if last:
            finish()

    if not waiting:
        finish()
    for future in waiting:
        future.add_done_callback(one_done)
    return check


def run_check(
    metrics: Sequence[Metric],
    context: QueryContext,
    sources: MetricSources,
    now: datetime,
    min_requests: int | None = None,
) -> Check:
    """`start_check`, waited for (tests and tools; the operator never waits in a thread)."""
    return start_check(metrics, context, sources, now, min_requests).result()


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
            _render(metric, context)
            if metric.compare is not None:
                _render(metric, context, STABLE_TRACK)
        except QueryTemplateError as err:
            problems.append(str(err))
        refused = sources.problem(metric)
        if refused:
            problems.append(refused)
    return problems
