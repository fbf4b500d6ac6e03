"""
The workload simulator: plays the Deployment controller and the kubelet for the sandbox.

What the kubelet writes on a pod (its start, and the restart of a container whose image is changed
in place) is decided in ``kubelet.py``; this module runs it for every pod that is not terminating:
a Deployment's pods as part of its pass (below), any other pod (created by hand, or by a controller
the sandbox does not simulate) on its own.

For every Deployment it runs Pods (``v1`` pods in the store) named ``<deployment>-<hash>-<suffix>``,
with the template's labels (plus ``pod-template-hash``), annotations and containers, and an owner
reference to the Deployment (no ReplicaSets: pods are owned by the Deployment directly). A new
pod is ``Pending`` for ``ready_delay`` seconds, then ``Running`` and ``Ready``; a pod annotated
``sandbox.sluice.dev/ready: "false"`` (from its template) runs but never gets ready, for testing
progress deadlines. The Deployment's status is derived from its pods, as the real controller's is.

The status is written only once none of the Deployment's pods is starting (``Pending``): a spec
change shows in the status ``ready_delay`` later, in one step (scale-downs at once). The real
controller also reports the pods on their way, but clients (and tests) that read a Deployment
right after writing it then race with the simulator; this way they do not, as with the earlier
status-only simulator.

A template change is a rolling update: all new pods are created at once (an unlimited
``maxSurge``, so a rollout takes one ``ready_delay`` whatever the replica count), and old pods go
as soon as enough pods are ready to honour ``maxUnavailable``. Old pods that are not ready go at
once: they serve nothing.

Pods terminate as in Kubernetes (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination):
a deleted pod (by a scale-down or a rollout here, by anyone, or by the garbage collector with its
Deployment) is only marked by the store (``deletionTimestamp``, see ``store.py``) and stays, Running
and still ready, while its containers stop; the kubelet removes it once they have: after
``min(grace period, stop_delay)`` (:func:`stop_time`), whoever owns it. A terminating pod no longer
counts for its Deployment: not in its status, and not among the replicas it keeps (its replacement
is created at once, as the ReplicaSet controller does).

The decisions are pure (:func:`plan_pods`, :func:`stop_time`, :func:`kubelet_status`);
:class:`WorkloadSimulator` only reads the store (through indexes the store keeps current, see the
class), applies the plan, writes the status, and plans again on any change to a Deployment or its
pods, or when a pod is due to become ready; runs the kubelet likewise for pods no Deployment
controls; and removes terminating pods when they are due.
"""

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

from sluice_sandbox.kubelet import READY_ANNOTATION as READY_ANNOTATION
from sluice_sandbox.kubelet import is_ready as is_ready
from sluice_sandbox.kubelet import kubelet_status as kubelet_status
from sluice_sandbox.kubelet import never_ready as never_ready
from sluice_sandbox.kubelet import pending_status as pending_status
from sluice_sandbox.kubelet import running_status as running_status
from sluice_sandbox.resources import format_time as format_time
from sluice_sandbox.resources import parse_time as parse_time
from sluice_sandbox.store import DELETED, ApiError, Change, JsonObject, Store, now
from sluice_sandbox.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
TEMPLATE_HASH_LABEL = "pod-template-hash"
DEFAULT_READY_DELAY = 0.2
DEFAULT_STOP_DELAY = 1.0  # how long a terminating pod's containers take to stop (at most its grace period)
DEFAULT_MAX_UNAVAILABLE = "25%"  # the API server's default for RollingUpdate

DeploymentKey = tuple[str, str]  # (namespace, name)
PodKey = tuple[str, str]  # (namespace, name)
OwnerKey = tuple[str, str]  # (namespace, uid) of a pod's controller


# ----- Reading a Deployment and its pods -----


def desired_replicas(deployment: Mapping[str, Any]) -> int:
    replicas = deployment.get("spec", {}).get("replicas")
    return 1 if replicas is None else int(replicas)  # the API server's default


def pod_template_hash(deployment: Mapping[str, Any]) -> str:
    """Stable for the same pod template, like the controller's ``pod-template-hash``."""
    template = json.dumps(deployment.get("spec", {}).get("template", {}), sort_keys=True)
    return hashlib.sha256(template.encode()).hexdigest()[:10]


def replica_set_name(deployment: Mapping[str, Any]) -> str:
    """Like the controller's ``NAME-<pod-template-hash>`` (named in the status conditions)."""
    return f"{deployment['metadata']['name']}-{pod_template_hash(deployment)}"


def max_unavailable(deployment: Mapping[str, Any]) -> int:
    """How many desired pods may be missing during a rollout (a percentage rounds down, as in k8s)."""
    replicas = desired_replicas(deployment)
    strategy = deployment.get("spec", {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return replicas
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE)
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(replicas * float(value[:-1]) / 100)
    return int(value)


def is_terminating(pod: Mapping[str, Any]) -> bool:
    """Whether a pod is being deleted (its containers stopping, or stopped but for finalizers)."""
    return "deletionTimestamp" in (pod.get("metadata") or {})


def owner_key(pod: Mapping[str, Any]) -> DeploymentKey | None:
    """The Deployment that controls a pod, if any."""
    meta = pod.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and ref.get("controller"):
            return meta.get("namespace", ""), ref.get("name", "")
    return None


def _owned_pods(deployment: Mapping[str, Any], pods: Iterable[JsonObject]) -> list[JsonObject]:
    """
    The live pods the Deployment controls (by uid: a re-created Deployment is another owner).
    Terminating pods are not live: they count for nothing, and are replaced at once.
    """
    uid = deployment["metadata"].get("uid")
    return [
        pod
        for pod in pods
        if not is_terminating(pod)
        and any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in pod["metadata"].get("ownerReferences") or []
        )
    ]


# ----- The kubelet (what it writes on a pod: see kubelet.py; here, when it removes one) -----


def stop_time(pod: Mapping[str, Any], stop_delay: float = DEFAULT_STOP_DELAY) -> float | None:
    """
    When the kubelet has stopped a terminating pod's containers and removes it (epoch seconds):
    ``min(grace period, stop_delay)`` after its deletion. None: not terminating, or nothing to
    wait for (a grace period of 0: the store removes it as soon as its finalizers are gone).
    The store's ``deletionTimestamp`` is the end of the grace period (pods carry sub-second
    timestamps, as the simulator's delays are sub-second).
    """
    meta = pod.get("metadata") or {}
    deadline = parse_time(meta.get("deletionTimestamp"))
    grace = meta.get("deletionGracePeriodSeconds") or 0
    if deadline is None or not isinstance(grace, int | float) or grace <= 0:
        return None
    return deadline - grace + min(grace, max(0.0, stop_delay))


# ----- The Deployment controller -----


@dataclasses.dataclass(frozen=True)
class ReplicaCounts:
    """The pods of a Deployment as its status counts them (minReadySeconds is not simulated)."""

    replicas: int = 0  # all pods, of every template
    updated: int = 0  # pods of the current template
    ready: int = 0

    @classmethod
    def of(cls, pods: Sequence[Mapping[str, Any]], template_hash: str) -> Self:
        return cls(
            replicas=len(pods),
            updated=sum(_hash_of(pod) == template_hash for pod in pods),
            ready=sum(is_ready(pod) for pod in pods),
        )


@dataclasses.dataclass(frozen=True)
class PodChanges:
    """What to do to a Deployment's pods now, and how they count once done."""

    counts: ReplicaCounts
    # New pods (with ``generateName``). Their ``status`` is written right after the create,
    # since a create ignores it.
    create: tuple[JsonObject, ...] = ()
    delete: tuple[str, ...] = ()  # pod names
    statuses: tuple[tuple[str, JsonObject], ...] = ()  # (pod name, new status): the kubelet's writes
    wake_at: float | None = None  # when a pod is due to become ready: plan again then
    starting: int = 0  # pods still Pending once done: the status waits for them

    @property
    def empty(self) -> bool:
        return not (self.create or self.delete or self.statuses)


def _hash_of(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("metadata", {}).get("labels") or {}).get(TEMPLATE_HASH_LABEL)


def pod_from_template(
    owner: Mapping[str, Any],
    owner_kind: tuple[str, str],
    template: Mapping[str, Any],
    generate_name: str,
    labels: Mapping[str, str],
) -> JsonObject:
    """A pod as a controller makes it from its owner's pod template: the template's labels (and
    `labels`), annotations and spec, owned by `owner` (of `owner_kind`: apiVersion, kind) as its
    controller. Its status is the caller's."""
    meta = owner["metadata"]
    template_meta = template.get("metadata") or {}
    pod_meta: JsonObject = {
        "generateName": generate_name,
        "namespace": meta.get("namespace"),
        "labels": {**(template_meta.get("labels") or {}), **labels},
        "ownerReferences": [
            {
                "apiVersion": owner_kind[0],
                "kind": owner_kind[1],
                "name": meta["name"],
                "uid": meta.get("uid"),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = copy.deepcopy(template_meta["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def new_pod(deployment: Mapping[str, Any], template_hash: str, at: float) -> JsonObject:
    template = deployment.get("spec", {}).get("template") or {}
    name = f"{deployment['metadata']['name']}-{template_hash}-"
    labels = {TEMPLATE_HASH_LABEL: template_hash}
    pod = pod_from_template(deployment, ("apps/v1", "Deployment"), template, name, labels)
    pod["status"] = pending_status(at)
    return pod


def _removal_order(pod: Mapping[str, Any]) -> tuple[bool, float, str]:
    """Which pods to remove first: not ready, then the youngest (as the controller does)."""
    started = parse_time((pod.get("status") or {}).get("startTime")) or 0.0
    return is_ready(pod), -started, pod["metadata"]["name"]


def plan_pods(
    deployment: Mapping[str, Any],
    pods: Iterable[JsonObject],
    at: float,
    *,
    ready_delay: float = DEFAULT_READY_DELAY,
) -> PodChanges:
    """
    What the kubelet and the Deployment controller do now (``at``, epoch seconds) to the pods of
    ``deployment`` (``pods`` may include others': only those it controls count).
    """
    statuses: list[tuple[str, JsonObject]] = []
    wakes: list[float] = []
    live: list[JsonObject] = []
    for pod in _owned_pods(deployment, pods):
        status, wake = kubelet_status(pod, at, ready_delay)
        if status is not None:
            statuses.append((pod["metadata"]["name"], status))
            pod = {**pod, "status": status}  # decide on what the pod will be once written
        if wake is not None:
            wakes.append(wake)
        live.append(pod)

    desired, template_hash = desired_replicas(deployment), pod_template_hash(deployment)
    current = sorted((p for p in live if _hash_of(p) == template_hash), key=_removal_order)
    old = sorted((p for p in live if _hash_of(p) != template_hash), key=_removal_order)
    surplus = current[: max(0, len(current) - desired)]
    kept = current[len(surplus) :]
    create = tuple(new_pod(deployment, template_hash, at) for _ in range(desired - len(kept)))
    if create:
        wakes.append(at + ready_delay)

    # Old pods go once enough pods are ready without them: `desired - maxUnavailable`.
    # Unready old pods serve nothing, so they go first and always.
    min_ready = desired - max_unavailable(deployment)
    spare_ready = sum(is_ready(p) for p in kept) + sum(is_ready(p) for p in old) - min_ready
    retired = [p for p in old if not is_ready(p)]
    retired += [p for p in old if is_ready(p)][: max(0, spare_ready)]

    deleted = {p["metadata"]["name"] for p in [*surplus, *retired]}
    remaining = [p for p in live if p["metadata"]["name"] not in deleted] + list(create)
    return PodChanges(
        counts=ReplicaCounts.of(remaining, template_hash),
        create=create,
        delete=tuple(sorted(deleted)),
        statuses=tuple((name, status) for name, status in statuses if name not in deleted),
        wake_at=min(wakes, default=None),
        starting=sum((p.get("status") or {}).get("phase") == "Pending" for p in remaining),
    )


def settled_counts(deployment: Mapping[str, Any]) -> ReplicaCounts:
    """The counts once the current template is fully rolled out (as far as it can get ready)."""
    replicas = desired_replicas(deployment)
    template = deployment.get("spec", {}).get("template") or {}
    return ReplicaCounts(replicas=replicas, updated=replicas, ready=0 if never_ready(template) else replicas)


def deployment_status(
    deployment: Mapping[str, Any], counts: ReplicaCounts | None = None, *, timestamp: str | None = None
) -> JsonObject:
    """
    The status the controller reports for ``deployment`` with its pods counted as ``counts``
    (by default: :func:`settled_counts`). Ready pods are also available (no minReadySeconds).
    """
    timestamp = timestamp or now()
    if counts is None:
        counts = settled_counts(deployment)
    desired = desired_replicas(deployment)
    available = counts.ready >= desired - max_unavailable(deployment)
    complete = counts.updated == counts.replicas == desired and counts.ready >= desired
    replica_set = replica_set_name(deployment)
    status: JsonObject = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": counts.replicas,
        "updatedReplicas": counts.updated,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.ready,
    }
    if counts.ready < desired:
        status["unavailableReplicas"] = desired - counts.ready
    previous = {cond.get("type"): cond for cond in deployment.get("status", {}).get("conditions", [])}
    status["conditions"] = [
        _condition(
            previous,
            "Available",
            available,
            timestamp,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        ),
        _condition(
            previous,
            "Progressing",
            True,
            timestamp,
            "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
            f'ReplicaSet "{replica_set}" has successfully progressed.'
            if complete
            else f'ReplicaSet "{replica_set}" is progressing.',
        ),
    ]
    return status


def _condition(
    previous: Mapping[str, Any], kind: str, value: bool, timestamp: str, reason: str, message: str
) -> JsonObject:
    status = "True" if value else "False"
    old = previous.get(kind) or {}
    # As in Kubernetes: the transition time moves only when the condition's status flips.
    transition = old.get("lastTransitionTime") if old.get("status") == status else None
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": timestamp,
        "lastTransitionTime": transition or timestamp,
        "reason": reason,
        "message": message,
    }


def status_differs(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` changes anything but the conditions' update times."""

    def essence(status: Mapping[str, Any] | None) -> JsonObject:
        result = dict(status or {})
        result["conditions"] = [
            {k: v for k, v in c.items() if k != "lastUpdateTime"} for c in result.get("conditions") or []
        ]
        return result

    return essence(old) != essence(new)


def needs_status(deployment: Mapping[str, Any]) -> bool:
    """Whether the controller has not reported on the Deployment's latest spec yet."""
    observed = deployment.get("status", {}).get("observedGeneration")
    return bool(observed != deployment["metadata"].get("generation"))


# ----- The loop -----


class WorkloadSimulator:
    """
    Runs the pods of every Deployment in the store and keeps the Deployments' status; runs the
    kubelet for every other pod that is not terminating; removes every terminating pod
    ``min(grace period, stop_delay)`` seconds after its deletion.
    The clock must be the wall clock's (as the store's timestamps).

    It follows Deployments and pods with :meth:`Store.subscribe`, into indexes that are current
    whenever it plans: the Deployments by key, and the pods by namespace and controller uid. So a
    Deployment's pass reads only its own pods, whatever else the namespace holds, and copies none.
    """

    def __init__(
        self,
        store: Store,
        ready_delay: float = DEFAULT_READY_DELAY,
        clock: Callable[[], float] = time.time,
        *,
        stop_delay: float = DEFAULT_STOP_DELAY,
    ) -> None:
        self._store = store
        self._ready_delay = ready_delay
        self._stop_delay = stop_delay
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._dirty: set[DeploymentKey] = set()
        self._wakeup = asyncio.Event()
        self._timers: dict[DeploymentKey, asyncio.TimerHandle] = {}
        # Terminating pods: the timer that makes them due, then the uid of those due for removal.
        self._stopping: dict[PodKey, asyncio.TimerHandle] = {}
        self._stopped: dict[PodKey, str] = {}
        # The store's own objects (never changed in place): what the simulator reads.
        self._deployments: dict[DeploymentKey, JsonObject] = {}
        self._pods: dict[OwnerKey, dict[str, JsonObject]] = {}  # by (namespace, controller uid), name
        self._pod_owners: dict[PodKey, tuple[OwnerKey, ...]] = {}  # where each pod is in _pods
        # Pods no Deployment controls, which the kubelet runs on their own: the latest of each, those
        # due for a pass, and the timer that makes one due (when a container is due to start).
        self._unowned: dict[PodKey, JsonObject] = {}
        self._unowned_dirty: set[PodKey] = set()
        self._unowned_timers: dict[PodKey, asyncio.TimerHandle] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        self._follow()
        self._task = asyncio.create_task(self.run(), name="sandbox-workload-simulator")

    async def stop(self) -> None:
        for timer in [*self._timers.values(), *self._stopping.values(), *self._unowned_timers.values()]:
            timer.cancel()
        self._timers.clear()
        self._stopping.clear()
        self._unowned_timers.clear()
        await cancel_and_wait(self._task)
        self._task = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    async def run(self) -> None:
        """Simulate until cancelled."""
        self._follow()
        await self._work()

    def _follow(self) -> None:
        """Follow the store (once; again after a stop, into fresh indexes)."""
        if not self._unsubscribe:
            self._deployments, self._pods, self._pod_owners = {}, {}, {}
            self._unowned, self._unowned_dirty = {}, set()
            self._unsubscribe = [
                self._store.subscribe(DEPLOYMENTS, self._on_deployment),
                self._store.subscribe(PODS, self._on_pod),
            ]

    def _on_deployment(self, change: Change) -> None:
        meta = change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == DELETED:
            self._deployments.pop(key, None)
        else:
            self._deployments[key] = change.obj
        self._mark(key)

    def _on_pod(self, change: Change) -> None:
        pod = change.obj
        meta = pod["metadata"]
        pod_key = (meta.get("namespace", ""), meta["name"])
        self._index_pod(pod_key, None if change.type == DELETED else pod)
        key = owner_key(pod)
        if key is not None:
            self._mark(key)
        running = change.type != DELETED and key is None and not is_terminating(pod)
        self._track_unowned(pod_key, pod if running else None)
        timer = self._stopping.pop(pod_key, None)
        if timer is not None:
            timer.cancel()
        self._stopped.pop(pod_key, None)
        at = None if change.type == DELETED else stop_time(pod, self._stop_delay)
        if at is not None:
            self._schedule_removal(pod_key, meta["uid"], at)

    def _track_unowned(self, key: PodKey, pod: JsonObject | None) -> None:
        """Follow a pod the kubelet runs on its own (None: no longer, if it did)."""
        if pod is None:
            self._unowned.pop(key, None)
            self._unowned_dirty.discard(key)
            self._schedule_pod(key, None)
            return
        self._unowned[key] = pod
        self._mark_pod(key)

    def _index_pod(self, pod_key: PodKey, pod: JsonObject | None) -> None:
        """File the pod (None: gone) under each controller it names, as plan_pods matches them."""
        namespace, name = pod_key
        for owner in self._pod_owners.pop(pod_key, ()):
            owned = self._pods.get(owner)
            if owned is not None:
                owned.pop(name, None)
                if not owned:
                    del self._pods[owner]
        if pod is None:
            return
        owners = tuple(
            (namespace, ref["uid"])
            for ref in pod["metadata"].get("ownerReferences") or []
            if ref.get("controller") and isinstance(ref.get("uid"), str)
        )
        for owner in owners:
            self._pods.setdefault(owner, {})[name] = pod
        if owners:
            self._pod_owners[pod_key] = owners

    def pods_of(self, deployment: Mapping[str, Any]) -> list[JsonObject]:
        """
        The pods of the Deployment's namespace that name it as their controller, terminating or
        not, in the API's order (by name): all the pods :func:`plan_pods` would count of the namespace.
        """
        meta = deployment["metadata"]
        owned = self._pods.get((meta.get("namespace", ""), meta.get("uid")), {})
        return [pod for _, pod in sorted(owned.items())]

    def _mark(self, key: DeploymentKey) -> None:
        self._dirty.add(key)
        self._wakeup.set()

    def _mark_pod(self, key: PodKey) -> None:
        if key in self._unowned:
            self._unowned_dirty.add(key)
            self._wakeup.set()

    def _schedule_pod(self, key: PodKey, at: float | None) -> None:
        timer = self._unowned_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if at is not None:
            delay = max(0.0, at - self._clock())
            self._unowned_timers[key] = asyncio.get_running_loop().call_later(delay, self._mark_pod, key)

    def _schedule_removal(self, key: PodKey, uid: str, at: float) -> None:
        def due() -> None:
            self._stopping.pop(key, None)
            self._stopped[key] = uid
            self._wakeup.set()

        delay = max(0.0, at - self._clock())
        self._stopping[key] = asyncio.get_running_loop().call_later(delay, due)

    async def _work(self) -> None:
        # One worker: a Deployment is never planned twice at once, and events that arrive
        # while it is busy (mostly its own writes) fold into one more pass.
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._stopped or self._dirty or self._unowned_dirty:
                if self._stopped:
                    await self._remove(*self._stopped.popitem())
                elif self._dirty:
                    await self._sync(self._dirty.pop())
                else:
                    await self._run_pod(self._unowned_dirty.pop())

    async def _remove(self, key: PodKey, uid: str) -> None:
        """The kubelet, once a terminating pod's containers have stopped: the pod goes."""
        namespace, name = key
        try:
            await self._store.delete(
                PODS, namespace, name, grace_period=0, preconditions={"uid": uid}, shared=True
            )
        except Exception as e:
            if isinstance(e, ApiError) and e.status in (404, 409):  # gone already, or another pod's name
                return
            logger.exception(f"Removing the terminating pod {namespace}/{name} failed; retrying.")
            self._schedule_removal(key, uid, self._clock() + max(self._ready_delay, 0.1))

    async def _run_pod(self, key: PodKey) -> None:
        """The kubelet, for a pod no Deployment controls: its next status, if any, and when to look again."""
        pod = self._unowned.get(key)
        if pod is None:
            return
        status, wake_at = kubelet_status(pod, self._clock(), self._ready_delay)
        if status is not None:
            namespace, name = key
            # Conditional on the version decided from: a pod changed meanwhile (e.g. its image,
            # again) is a 409, and its change has already made it due for another pass.
            patch = {"metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]}, "status": status}
            try:
                await self._store.patch_status(PODS, namespace, name, patch, shared=True)
            except Exception as e:
                if isinstance(e, ApiError) and e.status in (404, 409):  # gone, or changed since
                    return
                logger.exception(f"Running the pod {namespace}/{name} failed; retrying.")
                wake_at = self._clock() + max(self._ready_delay, 0.1)
        self._schedule_pod(key, wake_at)

    async def _sync(self, key: DeploymentKey) -> None:
        try:
            wake_at = await self.reconcile(*key)
        except ApiError as e:
            if e.status == 409:  # someone wrote in between: plan again on the fresh state
                self._mark(key)
            elif e.status != 404:  # 404: the Deployment is gone; its pods terminate (see _on_pod)
                logger.exception(f"Simulating Deployment {key[0]}/{key[1]} failed; retrying.")
                self._schedule(key, self._clock() + self._ready_delay)
        except Exception:
            logger.exception(f"Simulating Deployment {key[0]}/{key[1]} failed; retrying.")
            self._schedule(key, self._clock() + self._ready_delay)
        else:
            self._schedule(key, wake_at)

    def _schedule(self, key: DeploymentKey, at: float | None) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if at is not None:
            delay = max(0.0, at - self._clock())
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._mark, key)

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Plan and apply one Deployment's pods and status; return when to look again."""
        self._follow()
        deployment = self._deployments.get((namespace, name))
        if deployment is None:
            return None  # gone: its pods terminate with it (the store's garbage collector)
        changes = plan_pods(
            deployment, self.pods_of(deployment), self._clock(), ready_delay=self._ready_delay
        )
        await self._apply(namespace, changes)
        status = deployment_status(deployment, changes.counts)
        if not changes.starting and status_differs(deployment.get("status"), status):
            # A replace of the whole status (stale fields go away), conditional on the
            # resourceVersion we planned from: a 409 means "plan again".
            await self._store.replace(
                DEPLOYMENTS,
                namespace,
                name,
                {**deployment, "status": status},
                subresource="status",
                shared=True,
            )
        return changes.wake_at

    async def _apply(self, namespace: str, changes: PodChanges) -> None:
        # The results are only read (a name): `shared` spares the store a copy of each.
        for body in changes.create:
            created = await self._store.create(PODS, body, namespace, shared=True)
            await self._store.patch_status(
                PODS, namespace, created["metadata"]["name"], {"status": body["status"]}, shared=True
            )
        for name in changes.delete:
            with _unless_gone():
                await self._store.delete(PODS, namespace, name, shared=True)
        for name, status in changes.statuses:
            with _unless_gone():
                await self._store.patch_status(PODS, namespace, name, {"status": status}, shared=True)


@contextlib.contextmanager
def _unless_gone() -> Iterator[None]:
    """Ignore a 404: a pod deleted meanwhile (by a user, or with its owner) needs nothing more."""
    try:
        yield
    except ApiError as e:
        if e.status != 404:
            raise
