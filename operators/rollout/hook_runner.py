"""Runs the lifecycle hooks the engine asked for (status.hooks' Pending runs), beside the release loop.

Like analysis checks (operators/analysis/background.py), a hook call never runs in a reconcile
pass: the pass that finds Pending hooks starts them in the analysis' query pool and goes on; the
pass after they finish (woken by `on_done`) hands their answers to the engine. At most one batch
per Rollout is in flight. Every URL must pass the operator's allowed hosts, checked before a
release starts (`hook_problems`) and again here before anything is sent; redirects are never
followed, so a hook cannot be bounced to a host that is not allowed.

A `job` hook's Job is run by the operator's Job runner (operators/analysis/jobs.py), which follows
it without a thread per Job and deletes it once judged: the hook holds no pool thread while it runs.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from operators.analysis.jobs import JobOutcome, JobOwner, JobResult, JobRunner, hook_job
from operators.analysis.pool import query_pool
from operators.api.base import parse_duration
from operators.api.hooks import MAX_HOOK_SECONDS, HookOutcome, HookRun, JobHook, WebHook
from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.foundation.clock import format_time, utc_now
from operators.metrics.base import ProviderError
from operators.metrics.hosts import AllowedHosts
from operators.rollout import hooks

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
# How much of a failing answer's body the status and the Event quote.
BODY_EXCERPT = 200
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
NO_JOB_RUNNER = "job hooks need the operator's Job runner"


def hook_problems(spec: RolloutSpec, allowed: AllowedHosts) -> list[str]:
    """The hooks whose URL may not be called: reported before the release starts, like metrics'."""
    configured = hooks.hooks_of(spec)
    if configured is None:
        return []
    return [
        f'{kind.value} hook "{hook.name}": {allowed.refusal(hook.web.url)}'
        for kind, listed in configured.by_kind().items()
        for hook in listed
        if hook.web is not None and not allowed.allows(hook.web.url)
    ]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None  # a 3xx is then an HTTPError: the hook fails, naming the answer


_OPENER = urllib.request.build_opener(_NoRedirects())


def call_web_hook(web: WebHook, payload: dict[str, str], allowed: AllowedHosts) -> tuple[HookOutcome, str]:
    """One call: Passed on a 2xx answer, else Failed with what was answered (or why nothing was)."""
    if not allowed.allows(web.url):
        return HookOutcome.FAILED, allowed.refusal(web.url)
    body = web.body
    headers = dict(web.headers)
    if body is None and web.method in METHODS_WITH_BODY:
        body = json.dumps(payload)
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(
        web.url, data=body.encode() if body is not None else None, headers=headers, method=web.method
    )
    timeout = min(parse_duration(web.timeout).total_seconds(), MAX_HOOK_SECONDS)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return HookOutcome.PASSED, f"HTTP {answer.status} from {web.method} {web.url}"
    except urllib.error.HTTPError as error:
        excerpt = error.read(BODY_EXCERPT).decode(errors="replace").strip()
        said = f": {excerpt}" if excerpt else ""
        return HookOutcome.FAILED, f"HTTP {error.code} from {web.method} {web.url}{said}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return HookOutcome.FAILED, f"no answer from {web.method} {web.url}: {reason}"


def job_hook_answer(done: Future[JobResult]) -> tuple[HookOutcome, str]:
    """What a hook's finished Job means: Passed when it succeeded, else Failed naming the Job and why.

    Pending when the runner was stopped (the operator shuts down): the hook is asked again later.
    """
    if done.cancelled():
        return HookOutcome.PENDING, ""
    error = done.exception()
    if error is not None:  # could not be created, deleted meanwhile, never finished: the runner says which
        reason = (
            str(error) if isinstance(error, ProviderError) else f"hook Job failed: {type(error).__name__}"
        )
        return HookOutcome.FAILED, reason
    job = done.result()
    said = f" ({job.message})" if job.message else ""
    if job.outcome == JobOutcome.SUCCEEDED:
        return HookOutcome.PASSED, f"Job {job.name} succeeded{said}"
    if job.outcome == JobOutcome.DEADLINE_EXCEEDED:
        return HookOutcome.FAILED, f"Job {job.name} ran past its deadline{said}"
    return HookOutcome.FAILED, f"Job {job.name} failed{said}"


Caller = Callable[[WebHook, dict[str, str], AllowedHosts], tuple[HookOutcome, str]]


class HookRunner:
    def __init__(
        self, allowed: AllowedHosts, call: Caller = call_web_hook, jobs: JobRunner | None = None
    ) -> None:
        self.allowed = allowed
        self._call = call
        # Runs job hooks' Jobs (the operator's, shared with job metrics); None: a job hook fails.
        self.jobs = jobs
        self._running: dict[Key, Future[list[HookRun]]] = {}
        self._lock = threading.Lock()
        # Called (from the thread that finished them) when a Rollout's hooks are answered.
        self.on_done: Callable[[str, str], None] = lambda namespace, name: None

    def collect_or_start(self, ref: RolloutRef, spec: RolloutSpec, runs: Sequence[HookRun]) -> list[HookRun]:
        """The answers of a finished batch; else start one for the Pending `runs`. [] meanwhile."""
        key = (ref.namespace, ref.name)
        with self._lock:
            future = self._running.get(key)
            if future is not None:
                if not future.done():
                    return []
                del self._running[key]
                return future.result()
            due = hooks.pending(runs)
            if not due:
                return []
            batch: Future[list[HookRun]] = Future()
            self._running[key] = batch
        calls = [self._start(ref, spec, run) for run in due]
        remaining = len(calls)

        def one_done(_: Future[HookRun]) -> None:
            nonlocal remaining
            with self._lock:
                remaining -= 1
                last = remaining == 0
            if last:
                batch.set_result([call.result() for call in calls])
                self.on_done(*key)

        for call in calls:
            call.add_done_callback(one_done)
        return []

    def forget(self, key: Key) -> None:
        """The Rollout is gone: drop its batch (running calls finish unheard)."""
        with self._lock:
            self._running.pop(key, None)

    def _start(self, ref: RolloutRef, spec: RolloutSpec, run: HookRun) -> Future[HookRun]:
        """The run's answer, to come: a job hook's from its Job (no thread waits for it), a web
        hook's from a call in the query pool."""
        hook = hooks.find_hook(spec, run.kind, run.name)
        if hook is not None and hook.job is not None:
            return self._start_job(ref, run, hook.job)
        return query_pool().submit(self._run, ref, spec, run)

    def _start_job(self, ref: RolloutRef, run: HookRun, job: JobHook) -> Future[HookRun]:
        answer: Future[HookRun] = Future()
        if self.jobs is None:
            answer.set_result(_answered(run, HookOutcome.FAILED, NO_JOB_RUNNER))
            return answer
        owner = JobOwner(ref.namespace, ref.name, ref.uid)
        try:
            outcome = self.jobs.run(hook_job(owner, run.kind.value, run.name, job, utc_now()))
        except Exception as error:  # a bug here must fail the hook, never hang its release
            logger.exception("hook %s of Rollout %s/%s failed", run.name, ref.namespace, ref.name)
            answer.set_result(_answered(run, HookOutcome.FAILED, f"hook Job failed: {type(error).__name__}"))
            return answer

        def judged(done: Future[JobResult]) -> None:
            outcome, message = job_hook_answer(done)
            answer.set_result(run if outcome == HookOutcome.PENDING else _answered(run, outcome, message))

        outcome.add_done_callback(judged)
        return answer

    def _run(self, ref: RolloutRef, spec: RolloutSpec, run: HookRun) -> HookRun:
        hook = hooks.find_hook(spec, run.kind, run.name)
        if hook is None:
            outcome, message = HookOutcome.FAILED, "no longer in the spec"
        elif hook.web is None:  # a job hook is started by _start_job, never here
            outcome, message = HookOutcome.FAILED, "not a web hook"
        else:
            payload = {
                "rollout": ref.name,
                "namespace": ref.namespace,
                "hook": run.name,
                "kind": run.kind.value,
                "revision": run.revision,
            }
            try:
                outcome, message = self._call(hook.web, payload, self.allowed)
            except Exception as error:  # a bug here must fail the hook, never hang its release
                logger.exception("hook %s of Rollout %s/%s failed", run.name, ref.namespace, ref.name)
                outcome, message = HookOutcome.FAILED, f"hook call failed: {type(error).__name__}"
        return _answered(run, outcome, message)


def _answered(run: HookRun, outcome: HookOutcome, message: str) -> HookRun:
    return run.model_copy(update={"outcome": outcome, "message": message, "time": format_time(utc_now())})
