"""Kubernetes Jobs run for Rollouts: a job metric's check (and, reused, a lifecycle hook).

`JobRunner.run(body)` creates a Job and returns a future of its outcome, so no
thread waits per Job: one waiter thread creates the Jobs asked for, then, while
any is running, lists each namespace's Sluice Jobs once per poll (one request a
namespace, however many Jobs run there; none at all while no Job runs). A
finished Job is deleted (Background propagation: its pods go with it); a
Rollout's Jobs go with it through their owner reference.

What a Job is called, what it looks like and what its status means are pure
functions (`job_name`, `analysis_job`, `job_result`); the runner only applies them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from operators.api.base import API_VERSION as ROLLOUT_API_VERSION
from operators.foundation.cluster import Cluster, KubeError, object_path
from operators.foundation.keys import ObjectKey
from operators.metrics.base import ProviderError, shorten
from operators.metrics.job import JobSource

logger = logging.getLogger(__name__)

API_VERSION, KIND = "batch/v1", "Job"
MANAGED_BY = "app.kubernetes.io/managed-by"
# What a Job is for: "analysis" (a job metric's check), or a lifecycle hook's kind ("preRollout"...).
PURPOSE_LABEL = "sluice.dev/job"
METRIC_LABEL = "sluice.dev/metric"
HOOK_LABEL = "sluice.dev/hook"
# The label of every object Sluice manages for a Rollout (`operators.rollout.ownership.ROLLOUT_LABEL`,
# a layer above analysis): a Rollout's Jobs are listed by it like its other objects.
ROLLOUT_LABEL = "sluice.dev/rollout"
SELECTOR = f"{MANAGED_BY}=sluice,{PURPOSE_LABEL}"
MAX_NAME = 63
POLL_SECONDS = 1.0
# How long past its own deadline a Job may stay unfinished before the runner gives up on it
# (a cluster without a working Job controller): the check is then an Error, never a hang.
GRACE_SECONDS = 60.0


class JobOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"


@dataclass(frozen=True)
class JobResult:
    name: str
    outcome: JobOutcome
    message: str  # the Job's own words (its condition's reason and message)


@dataclass(frozen=True)
class JobOwner:
    """The Rollout a Job runs for: its namespace, name and uid (for the owner reference)."""

    namespace: str
    name: str
    uid: str


def _dns_label(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def job_name(rollout: str, purpose: str, at: datetime) -> str:
    """``<rollout>-<purpose>-<hash>``: unique per check, at most 63 characters, a DNS label."""
    digest = hashlib.sha256(f"{rollout}/{purpose}/{at.isoformat()}".encode()).hexdigest()[:8]
    stem = _dns_label(f"{rollout}-{purpose}")[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{stem}-{digest}" if stem else digest


def job_body(
    owner: JobOwner, name: str, spec: Mapping[str, Any], deadline_seconds: int, labels: Mapping[str, str]
) -> dict[str, Any]:
    """A Job owned by the Rollout, labelled as Sluice's, with a deadline (its own if it has one)."""
    job_spec = {**spec}
    job_spec.setdefault("activeDeadlineSeconds", deadline_seconds)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        # The runner finds its Jobs by PURPOSE_LABEL: always there, whatever `labels` says.
        "labels": {PURPOSE_LABEL: "job", **labels, MANAGED_BY: "sluice", ROLLOUT_LABEL: owner.name},
    }
    if owner.uid:
        metadata["ownerReferences"] = [
            {"apiVersion": ROLLOUT_API_VERSION, "kind": "Rollout", "name": owner.name, "uid": owner.uid}
        ]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": job_spec}


def analysis_job(owner: JobOwner, metric: str, source: JobSource, at: datetime) -> dict[str, Any]:
    """The Job of one check of a job metric."""
    labels = {PURPOSE_LABEL: "analysis", METRIC_LABEL: _dns_label(metric)[:MAX_NAME].strip("-") or "metric"}
    name = job_name(owner.name, metric, at)
    return job_body(owner, name, source.spec, source.deadline_seconds(), labels)


def hook_job(owner: JobOwner, kind: str, hook: str, source: JobSource, at: datetime) -> dict[str, Any]:
    """The Job of one run of a lifecycle hook (`kind` as in `strategy.canary.hooks`, e.g. preRollout)."""
    labels = {PURPOSE_LABEL: kind, HOOK_LABEL: _dns_label(hook)[:MAX_NAME].strip("-") or "hook"}
    name = job_name(owner.name, f"{kind}-{hook}", at)
    return job_body(owner, name, source.spec, source.deadline_seconds(), labels)


def job_result(job: Mapping[str, Any]) -> JobResult | None:
    """What a Job's status says: None while it runs."""
    name = str((job.get("metadata") or {}).get("name"))
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        reason, message = str(condition.get("reason") or ""), str(condition.get("message") or "")
        said = shorten(f"{reason}: {message}" if reason and message else reason or message)
        if condition.get("type") == "Complete":
            return JobResult(name, JobOutcome.SUCCEEDED, said)
        if condition.get("type") == "Failed":
            outcome = JobOutcome.DEADLINE_EXCEEDED if reason == "DeadlineExceeded" else JobOutcome.FAILED
            return JobResult(name, outcome, said)
    return None


@dataclass
class _Running:
    body: dict[str, Any]
    future: Future[JobResult]
    give_up_at: float
    created: bool = False


class JobRunner:
    """Runs Jobs and tells their outcome; thread-safe. One per operator (`MetricSources.jobs`)."""

    def __init__(self, cluster: Cluster, poll_seconds: float = POLL_SECONDS) -> None:
        self._cluster = cluster
        self._poll_seconds = poll_seconds
        self._running: list[_Running] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def run(self, body: dict[str, Any]) -> Future[JobResult]:
        """Create the Job `body` (a full batch/v1 Job with a name and namespace) and follow it.

        The future fails with ProviderError when the Job cannot be created, disappears, or
        never finishes; it is cancelled when the runner closes.
        """
        future: Future[JobResult] = Future()
        deadline = float(body.get("spec", {}).get("activeDeadlineSeconds") or 0)
        with self._wake:
            if self._closed:
                future.cancel()
                return future
            self._running.append(_Running(body, future, time.monotonic() + deadline + GRACE_SECONDS))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sluice-jobs", daemon=True)
                self._thread.start()
            self._wake.notify()
        return future

    def close(self) -> None:
        with self._wake:
            self._closed = True
            running, self._running = self._running, []
            self._wake.notify()
        for item in running:
            item.future.cancel()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._running and not self._closed:
                    self._wake.wait()  # nothing runs: no request at all
                if self._closed:
                    return
                running = list(self._running)
            try:
                self._step(running)
            except Exception:  # a bug must not leave every future hanging: try again next poll
                logger.exception("following analysis Jobs failed")
            with self._wake:
                if not self._closed and any(item.created for item in self._running):
                    self._wake.wait(self._poll_seconds)

    def _step(self, running: list[_Running]) -> None:
        for item in running:
            if not item.created:
                self._create(item)
        namespaces = {item.body["metadata"]["namespace"] for item in running if item.created}
        for namespace in sorted(namespaces):
            try:
                listed = self._cluster.list_objects(API_VERSION, KIND, namespace, label_selector=SELECTOR)
            except KubeError as error:
                logger.warning("could not list the Jobs of namespace %s: %s", namespace, error)
                continue
            jobs = {job["metadata"]["name"]: job for job in listed}
            for item in running:
                if item.created and item.body["metadata"]["namespace"] == namespace:
                    self._follow(item, jobs.get(item.body["metadata"]["name"]))

    def _create(self, item: _Running) -> None:
        name = item.body["metadata"]["name"]
        try:
            self._cluster.create(item.body)
        except KubeError as error:
            self._finish(item, error=ProviderError(shorten(f"could not create Job {name}: {error}")))
            return
        except Exception as error:  # no answer at all (a refused connection): this check's Error,
            # never a retry at once (the loop only waits while some Job was created)
            reason = shorten(f"could not create Job {name}: {type(error).__name__}: {error}")
            self._finish(item, error=ProviderError(reason))
            return
        item.created = True

    def _follow(self, item: _Running, job: Mapping[str, Any] | None) -> None:
        name = item.body["metadata"]["name"]
        if job is None:
            self._finish(item, error=ProviderError(f"Job {name} was deleted before it finished"))
            return
        result = job_result(job)
        if result is not None:
            self._finish(item, result=result)
        elif time.monotonic() > item.give_up_at:
            self._finish(item, error=ProviderError(f"Job {name} did not finish by its deadline"))

    def _finish(
        self, item: _Running, result: JobResult | None = None, error: Exception | None = None
    ) -> None:
        with self._wake:
            if item in self._running:
                self._running.remove(item)
        # The answer first: a Job that cannot be deleted must not leave its check waiting for ever.
        if not item.future.done():
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)  # type: ignore[arg-type]
        if item.created:
            self._delete(item.body)

    def _delete(self, body: Mapping[str, Any]) -> None:
        """Delete a finished Job with its pods (Kubernetes orphans a Job's pods by default)."""
        meta = body["metadata"]
        key = ObjectKey(API_VERSION, KIND, meta["namespace"], meta["name"])
        try:
            self._cluster.request("DELETE", object_path(key), query={"propagationPolicy": "Background"})
        except KubeError as error:
            if error.status != 404:
                logger.warning("could not delete Job %s/%s: %s", meta["namespace"], meta["name"], error)
        except Exception as error:  # no answer: the Job stays until its Rollout goes (owner reference)
            logger.warning("could not delete Job %s/%s: %s", meta["namespace"], meta["name"], error)
