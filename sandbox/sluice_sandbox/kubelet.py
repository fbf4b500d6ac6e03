"""
The kubelet, simulated: the status a pod's node writes on it as time goes by and its spec changes.

A pod the kubelet first sees is accepted (``Pending``, its containers starting) and runs
``ready_delay`` seconds later (``Running``; ready, unless annotated ``sandbox.sluice.dev/ready:
"false"``). Its ordinary init containers have run to completion by then; sidecar containers (init
containers with ``restartPolicy: Always``) run beside the app's containers.

A running pod's container whose image the spec no longer names is restarted, as the kubelet does
when a container's spec hash changes (the image is all of a container that may change in a running
pod; https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-restart-policy).
At once its status entry says ``waiting`` (``ContainerCreating``): a new container, so a new
``containerID``, for the image the spec names (``image``, ``imageID``), ``restartCount`` + 1, and
the killed one in ``lastState.terminated``. It is not ready, nor then the pod (its
``ContainersReady`` and ``Ready`` conditions), until the new container has started ``ready_delay``
later: ``running`` since a new ``startedAt``. The other containers keep running untouched.
Sidecar containers restart alike. An ordinary init container has finished: a new image for it
changes nothing in a running pod (https://kubernetes.io/docs/concepts/workloads/pods/init-containers/).

The kubelet manages only the containers whose status it wrote (an entry with a ``state``): a
status written by hand stays as it was written, whatever the spec says.

Pods that run to completion (``restartPolicy: Never`` or ``OnFailure``: a Job's) end
``sandbox.sluice.dev/run-seconds`` (default 1) after the kubelet accepted them: ``Succeeded`` if
their template's ``sandbox.sluice.dev/exit-code`` is 0 (the default), else ``Failed``, every
container ``terminated`` with that exit code. (``OnFailure`` is simplified: a failing container is
not restarted in place; the pod fails, and the Job controller counts it as Kubernetes counts a
failed pod.)

All pure: :func:`kubelet_status` decides, for one pod at one moment, the status to write (if any)
and when to look at the pod again.
"""

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from sluice_sandbox.resources import format_time, parse_time

JsonObject = dict[str, Any]

READY_ANNOTATION = "sandbox.sluice.dev/ready"
# Pods that run to completion: how their containers exit, and how long they run first.
EXIT_CODE_ANNOTATION = "sandbox.sluice.dev/exit-code"
RUN_SECONDS_ANNOTATION = "sandbox.sluice.dev/run-seconds"
DEFAULT_RUN_SECONDS = 1.0
RUN_TO_COMPLETION = ("Never", "OnFailure")
# What the kubelet says of a container it is creating (pulling its image, starting it).
CREATING_REASON = "ContainerCreating"
# The container runtime the simulated node runs, as container IDs name it.
RUNTIME = "containerd"


# ----- Reading a pod -----


def never_ready(obj: Mapping[str, Any]) -> bool:
    """Whether a pod (or a pod template) asks the simulator never to make it ready."""
    return (obj.get("metadata", {}).get("annotations") or {}).get(READY_ANNOTATION) == "false"


def is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def is_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container that runs beside the app's (a "native sidecar"), not one that runs first."""
    return container.get("restartPolicy") == "Always"


# ----- What the runtime would name -----


def container_id(pod: Mapping[str, Any], name: str, restarts: int, image: str) -> str:
    """A container's ID, new for each container the kubelet creates (made up, but stable)."""
    uid = (pod.get("metadata") or {}).get("uid") or (pod.get("metadata") or {}).get("name")
    digest = hashlib.sha256(f"{uid}/{name}/{restarts}/{image}".encode()).hexdigest()
    return f"{RUNTIME}://{digest}"


def image_id(image: str) -> str:
    """The digest an image resolves to (made up, but the same for the same image), as ``imageID``."""
    if "@" in image:
        return image  # pinned by digest already
    repository, _, last = image.rpartition("/")
    name = last.split(":", 1)[0]
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{repository}/{name}@sha256:{digest}" if repository else f"{name}@sha256:{digest}"


# ----- Statuses -----


def _condition_list(timestamp: str, **conditions: bool) -> list[JsonObject]:
    return [
        {"type": kind, "status": "True" if value else "False", "lastTransitionTime": timestamp}
        for kind, value in conditions.items()
    ]


def pending_status(at: float) -> JsonObject:
    """A pod accepted by the kubelet at ``at``, its containers starting."""
    timestamp = format_time(at)
    return {
        "phase": "Pending",
        "startTime": timestamp,
        "conditions": _condition_list(timestamp, PodScheduled=True, Ready=False),
    }


def _running(pod: Mapping[str, Any], container: Mapping[str, Any], at: float, *, ready: bool) -> JsonObject:
    """The entry of a container the kubelet started at ``at`` (its first: no restarts)."""
    name, image = str(container.get("name")), str(container.get("image") or "")
    return {
        "name": name,
        "image": image,
        "imageID": image_id(image),
        "containerID": container_id(pod, name, 0, image),
        "ready": ready,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": format_time(at)}},
    }


def _completed(pod: Mapping[str, Any], container: Mapping[str, Any], started: float, at: float) -> JsonObject:
    """The entry of an ordinary init container, which ran from ``started`` to ``at`` and succeeded."""
    name, image = str(container.get("name")), str(container.get("image") or "")
    identity = container_id(pod, name, 0, image)
    return {
        "name": name,
        "image": image,
        "imageID": image_id(image),
        "containerID": identity,
        "ready": True,
        "started": False,
        "restartCount": 0,
        "state": {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": format_time(started),
                "finishedAt": format_time(at),
                "containerID": identity,
            }
        },
    }


def running_status(pod: Mapping[str, Any], started: float, at: float) -> JsonObject:
    """A pod whose containers run since ``at`` (ready unless its annotation says never)."""
    ready, timestamp = not never_ready(pod), format_time(at)
    spec = pod.get("spec") or {}
    status: JsonObject = {
        "phase": "Running",
        "startTime": format_time(started),
        "conditions": _condition_list(
            timestamp, PodScheduled=True, Initialized=True, ContainersReady=ready, Ready=ready
        ),
        "containerStatuses": [_running(pod, c, at, ready=ready) for c in spec.get("containers") or []],
    }
    init = [
        _running(pod, c, at, ready=ready) if is_sidecar(c) else _completed(pod, c, started, at)
        for c in spec.get("initContainers") or []
    ]
    if init:
        status["initContainerStatuses"] = init
    return status


# ----- Restarts: a running container whose image changed -----


def _restarted(
    pod: Mapping[str, Any], container: Mapping[str, Any], entry: Mapping[str, Any], at: float
) -> JsonObject:
    """The entry once the kubelet has killed ``entry``'s container at ``at``, to run ``container``."""
    name, image = str(entry.get("name")), str(container.get("image") or "")
    restarts = int(entry.get("restartCount") or 0) + 1
    killed = (entry.get("state") or {}).get("running") or {}
    return {
        "name": name,
        "image": image,
        "imageID": image_id(image),
        "containerID": container_id(pod, name, restarts, image),
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": CREATING_REASON}},
        "lastState": {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": killed.get("startedAt"),
                "finishedAt": format_time(at),
                "containerID": entry.get("containerID"),
            }
        },
    }


def _container_step(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    entry: JsonObject,
    at: float,
    ready_delay: float,
) -> tuple[JsonObject, float | None]:
    """One container's entry now (``entry`` itself: no change), and when to look again."""
    state = entry.get("state") or {}
    image = container.get("image")
    if "running" in state:
        if entry.get("image") == image:
            return entry, None
        return _restarted(pod, container, entry, at), at + ready_delay
    if "waiting" in state:
        killed = parse_time(((entry.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if killed is None:
            return entry, None  # not a restart the kubelet began
        if entry.get("image") != image:  # changed again while starting: create that one instead
            restarts, name = int(entry.get("restartCount") or 0), str(entry.get("name"))
            entry = {
                **entry,
                "image": image,
                "imageID": image_id(str(image or "")),
                "containerID": container_id(pod, name, restarts, str(image or "")),
            }
        if at < killed + ready_delay:
            return entry, killed + ready_delay
        started = {"running": {"startedAt": format_time(at)}}
        return {**entry, "ready": not never_ready(pod), "started": True, "state": started}, None
    return entry, None  # terminated: an init container that has done its work


def _containers_step(
    pod: Mapping[str, Any],
    entries: Iterable[JsonObject],
    specs: Mapping[str, Mapping[str, Any]],
    at: float,
    ready_delay: float,
) -> tuple[list[JsonObject], list[float]]:
    stepped, wakes = [], []
    for entry in entries:
        container = specs.get(str(entry.get("name")))
        if container is not None:
            entry, wake = _container_step(pod, container, entry, at, ready_delay)
            if wake is not None:
                wakes.append(wake)
        stepped.append(entry)
    return stepped, wakes


def _readiness(previous: Iterable[Mapping[str, Any]], unready: list[str], at: float) -> list[JsonObject]:
    """The pod's conditions with ContainersReady and Ready as its containers are."""
    status = "False" if unready else "True"
    before = {str(c.get("type")): c for c in previous}
    conditions = [dict(c) for kind, c in before.items() if kind not in ("ContainersReady", "Ready")]
    for kind in ("ContainersReady", "Ready"):
        old = before.get(kind) or {}
        # As in Kubernetes: the transition time moves only when the condition's status flips.
        kept = old.get("lastTransitionTime") if old.get("status") == status else None
        transition = kept or format_time(at)
        condition: JsonObject = {"type": kind, "status": status, "lastTransitionTime": transition}
        if unready:
            condition["reason"] = "ContainersNotReady"
            condition["message"] = f"containers with unready status: [{' '.join(unready)}]"
        conditions.append(condition)
    return conditions


def _restarts(
    pod: Mapping[str, Any], at: float, ready_delay: float
) -> tuple[JsonObject | None, float | None]:
    """A running pod's containers restarted into their new images, or started once restarted."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    containers = {str(c.get("name")): c for c in spec.get("containers") or []}
    sidecars = {str(c.get("name")): c for c in spec.get("initContainers") or [] if is_sidecar(c)}
    old_main = status.get("containerStatuses") or []
    old_init = status.get("initContainerStatuses") or []
    main, main_wakes = _containers_step(pod, old_main, containers, at, ready_delay)
    init, init_wakes = _containers_step(pod, old_init, sidecars, at, ready_delay)
    wake = min([*main_wakes, *init_wakes], default=None)
    if main == old_main and init == old_init:
        return None, wake
    unready = [
        str(e.get("name"))
        for e in [*main, *(e for e in init if str(e.get("name")) in sidecars)]
        if not e.get("ready")
    ]
    new: JsonObject = {**status, "containerStatuses": main}
    if init:
        new["initContainerStatuses"] = init
    new["conditions"] = _readiness(status.get("conditions") or [], unready, at)
    return new, wake


# ----- Pods that run to completion -----


def _annotation(pod: Mapping[str, Any], name: str) -> str | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(name)
    return None if value is None else str(value)


def exit_code(pod: Mapping[str, Any]) -> int:
    """The exit code the pod's containers end with (its annotation; 0 when absent or not a number)."""
    try:
        return int(_annotation(pod, EXIT_CODE_ANNOTATION) or 0)
    except ValueError:
        return 0


def completion_time(pod: Mapping[str, Any], started: float) -> float | None:
    """When a pod that runs to completion ends (epoch seconds); None for any other pod."""
    if (pod.get("spec") or {}).get("restartPolicy") not in RUN_TO_COMPLETION:
        return None
    try:
        seconds = float(_annotation(pod, RUN_SECONDS_ANNOTATION) or DEFAULT_RUN_SECONDS)
    except ValueError:
        seconds = DEFAULT_RUN_SECONDS
    return started + max(0.0, seconds)


def finished_status(pod: Mapping[str, Any], started: float, at: float) -> JsonObject:
    """A pod whose containers all exited at ``at`` with its exit code: Succeeded on 0, else Failed."""
    code, timestamp = exit_code(pod), format_time(at)
    reason = "Completed" if code == 0 else "Error"

    def ended(container: Mapping[str, Any]) -> JsonObject:
        name, image = str(container.get("name")), str(container.get("image") or "")
        identity = container_id(pod, name, 0, image)
        terminated = {
            "exitCode": code,
            "reason": reason,
            "startedAt": format_time(started),
            "finishedAt": timestamp,
            "containerID": identity,
        }
        return {
            "name": name,
            "image": image,
            "imageID": image_id(image),
            "containerID": identity,
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"terminated": terminated},
        }

    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        "phase": "Succeeded" if code == 0 else "Failed",
        "startTime": format_time(started),
        "conditions": _condition_list(
            timestamp, PodScheduled=True, Initialized=True, ContainersReady=False, Ready=False
        ),
        "containerStatuses": [ended(c) for c in containers],
    }


# ----- The decision -----


def kubelet_status(
    pod: Mapping[str, Any], at: float, ready_delay: float
) -> tuple[JsonObject | None, float | None]:
    """The status the kubelet writes on ``pod`` now (None: no change), and when to look again."""
    if "deletionTimestamp" in (pod.get("metadata") or {}):
        return None, None  # stopping: nothing starts or restarts any more
    status = pod.get("status") or {}
    started = parse_time(status.get("startTime"))
    if started is None:  # e.g. the status write after the create failed: accept the pod now
        return pending_status(at), at + ready_delay
    ends = completion_time(pod, started) if status.get("phase") in ("Pending", "Running") else None
    if ends is not None and at >= ends:
        return finished_status(pod, started, at), None
    new, wake = _living_status(pod, status, started, at, ready_delay)
    return new, wake if ends is None else min(ends, wake or ends)


def _living_status(
    pod: Mapping[str, Any], status: Mapping[str, Any], started: float, at: float, ready_delay: float
) -> tuple[JsonObject | None, float | None]:
    """A pod's next status while its containers run (or start), and when to look again."""
    if status.get("phase") == "Running":
        return _restarts(pod, at, ready_delay)
    if status.get("phase") != "Pending":
        return None, None
    if at < started + ready_delay:
        return None, started + ready_delay
    return running_status(pod, started, at), None
