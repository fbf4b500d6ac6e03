"""
The Job controller, simulated: runs the pods of every ``batch/v1`` Job and keeps its status.

A Job's pods are made from its ``spec.template`` (named ``<job>-<suffix>``, labelled
``batch.kubernetes.io/job-name``/``job-name`` and ``batch.kubernetes.io/controller-uid``/
``controller-uid``, owned by the Job); the kubelet (``kubelet.py``, run for them by the workload
simulator like any pod no Deployment controls) ends them ``sandbox.sluice.dev/run-seconds`` later
with their ``sandbox.sluice.dev/exit-code``. As in Kubernetes
(https://kubernetes.io/docs/concepts/workloads/controllers/job/):

- up to ``parallelism`` pods run at once until ``completions`` of them have succeeded: the Job is
  then ``Complete`` (with ``completionTime``);
- a failed pod is replaced until more than ``backoffLimit`` (default 6) have failed: the Job is
  then ``Failed``, reason ``BackoffLimitExceeded`` (retries start at once: the real controller's
  back-off of 10 s, 20 s... is not simulated);
- a Job active longer than ``activeDeadlineSeconds`` is ``Failed``, reason ``DeadlineExceeded``;
  its running pods are deleted.

Deleting a Job deletes its pods with it (the store's garbage collector, Background or Foreground
propagation; Orphan leaves them). Suspended Jobs, indexed completions, pod failure policies and
``ttlSecondsAfterFinished`` are not simulated.

The decisions are pure (:func:`plan_job`); :class:`JobController` follows Jobs and pods with
:meth:`Store.subscribe`, applies the plan, and plans again on any change to a Job or its pods, or at
a Job's deadline.
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sluice_sandbox.builtin_resources import DEFAULT_BACKOFF_LIMIT
from sluice_sandbox.resources import format_time, parse_time
from sluice_sandbox.store import DELETED, ApiError, Change, JsonObject, Store
from sluice_sandbox.tasks import cancel_and_wait
from sluice_sandbox.workloads import pod_from_template

logger = logging.getLogger(__name__)

JOBS = "batch/v1/jobs"
PODS = "v1/pods"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")

JobKey = tuple[str, str]  # (namespace, name)


# ----- The controller's decisions -----


def owned_by(job: Mapping[str, Any], pods: Iterable[JsonObject]) -> list[JsonObject]:
    """The pods the Job controls (by uid: a re-created Job is another owner), terminating or not."""
    uid = job["metadata"].get("uid")
    return [
        pod
        for pod in pods
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in pod["metadata"].get("ownerReferences") or []
        )
    ]


def is_finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def new_pod(job: Mapping[str, Any]) -> JsonObject:
    meta = job["metadata"]
    labels = {label: meta["name"] for label in JOB_NAME_LABELS}
    labels.update({label: meta["uid"] for label in CONTROLLER_UID_LABELS})
    template = (job.get("spec") or {}).get("template") or {}
    return pod_from_template(job, ("batch/v1", "Job"), template, f"{meta['name']}-", labels)


@dataclasses.dataclass(frozen=True)
class JobChanges:
    """What to do for a Job now: pods to create and delete, its new status, and when to look again."""

    create: int = 0
    delete: tuple[str, ...] = ()
    status: JsonObject | None = None  # None: unchanged
    wake_at: float | None = None


def _condition(kind: str, reason: str, message: str, timestamp: str) -> JsonObject:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": timestamp,
        "lastTransitionTime": timestamp,
    }


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def plan_job(job: Mapping[str, Any], pods: Iterable[JsonObject], at: float) -> JobChanges:
    """What the Job controller does now (``at``, epoch seconds) for ``job`` (``pods``: its own)."""
    if is_finished(job):
        return JobChanges()
    spec, old = job.get("spec") or {}, job.get("status") or {}
    timestamp = format_time(at)
    started = parse_time(old.get("startTime")) or at
    mine = list(pods)
    succeeded = sum(_phase(p) == "Succeeded" for p in mine)
    failed = sum(_phase(p) == "Failed" for p in mine)
    active = [
        p
        for p in mine
        if _phase(p) not in ("Succeeded", "Failed") and "deletionTimestamp" not in p["metadata"]
    ]
    completions = int(spec.get("completions") or 1)
    deadline = spec.get("activeDeadlineSeconds")
    ends = (
        started + float(deadline)
        if isinstance(deadline, int | float) and not isinstance(deadline, bool)
        else None
    )
    status: JsonObject = {
        "startTime": old.get("startTime") or timestamp,
        "succeeded": succeeded,
        "failed": failed,
    }
    ready = sum(
        any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        for p in active
    )
    if succeeded >= completions:
        condition = _condition(
            "Complete", "CompletionsReached", "Reached expected number of succeeded pods", timestamp
        )
        status.update(active=0, ready=0, completionTime=timestamp, conditions=[condition])
        return JobChanges(status=status)
    ending = None
    if failed > int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)):
        ending = BACKOFF_LIMIT_EXCEEDED
    elif ends is not None and at >= ends:
        ending = DEADLINE_EXCEEDED
    if ending is not None:
        reason, message = ending
        status.update(active=0, ready=0, conditions=[_condition("Failed", reason, message, timestamp)])
        return JobChanges(delete=tuple(sorted(p["metadata"]["name"] for p in active)), status=status)
    wanted = min(int(spec.get("parallelism", 1)), completions - succeeded)
    create = max(0, wanted - len(active))
    status.update(active=len(active) + create, ready=ready)
    changed = {k: v for k, v in status.items()} != {k: old.get(k) for k in status}
    return JobChanges(create=create, status=status if changed else None, wake_at=ends)


# ----- The loop -----


class JobController:
    """Runs the pods of every Job in the store and keeps the Jobs' status (see the module docs)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._jobs: dict[JobKey, JsonObject] = {}
        self._pods: dict[tuple[str, str], dict[str, JsonObject]] = {}  # (namespace, job uid) -> name -> pod
        self._dirty: set[JobKey] = set()
        self._timers: dict[JobKey, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        self._unsubscribe = [
            self._store.subscribe(JOBS, self._on_job),
            self._store.subscribe(PODS, self._on_pod),
        ]
        self._task = asyncio.create_task(self._work(), name="sandbox-job-controller")

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await cancel_and_wait(self._task)
        self._task = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _on_job(self, change: Change) -> None:
        meta = change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == DELETED:
            self._jobs.pop(key, None)
        else:
            self._jobs[key] = change.obj
        self._mark(key)

    def _on_pod(self, change: Change) -> None:
        meta = change.obj["metadata"]
        namespace = meta.get("namespace", "")
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") != "Job" or not ref.get("controller"):
                continue
            owned = self._pods.setdefault((namespace, ref.get("uid")), {})
            if change.type == DELETED:
                owned.pop(meta["name"], None)
            else:
                owned[meta["name"]] = change.obj
            self._mark((namespace, ref.get("name", "")))

    def _mark(self, key: JobKey) -> None:
        self._dirty.add(key)
        self._wakeup.set()

    def _schedule(self, key: JobKey, at: float | None) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if at is not None:
            delay = max(0.0, at - self._clock())
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._mark, key)

    async def _work(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._dirty:
                key = self._dirty.pop()
                try:
                    await self.reconcile(*key)
                except ApiError as e:
                    if e.status == 409:
                        self._mark(key)
                    elif e.status != 404:
                        logger.exception(f"Simulating Job {key[0]}/{key[1]} failed; retrying.")
                        self._schedule(key, self._clock() + 0.5)
                except Exception:
                    logger.exception(f"Simulating Job {key[0]}/{key[1]} failed; retrying.")
                    self._schedule(key, self._clock() + 0.5)

    async def reconcile(self, namespace: str, name: str) -> None:
        job = self._jobs.get((namespace, name))
        if job is None:
            self._schedule((namespace, name), None)
            return  # gone: its pods go with it (the store's garbage collector)
        pods = list(self._pods.get((namespace, job["metadata"]["uid"]), {}).values())
        changes = plan_job(job, owned_by(job, pods), self._clock())
        if changes.status is not None:
            # Conditional on the version planned from: a 409 means "plan again".
            await self._store.replace(
                JOBS, namespace, name, {**job, "status": changes.status}, subresource="status", shared=True
            )
        for _ in range(changes.create):
            await self._store.create(PODS, new_pod(job), namespace, shared=True)
        for pod_name in changes.delete:
            try:
                await self._store.delete(PODS, namespace, pod_name, shared=True)
            except ApiError as e:
                if e.status != 404:
                    raise
        self._schedule((namespace, name), changes.wake_at)
