"""The workload simulator: pod planning (pure, table-driven), the status it derives, its loop."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.workloads import (
    READY_ANNOTATION,
    TEMPLATE_HASH_LABEL,
    PodChanges,
    ReplicaCounts,
    WorkloadSimulator,
    deployment_status,
    format_time,
    is_ready,
    is_terminating,
    kubelet_status,
    plan_pods,
    pod_template_hash,
    status_differs,
    stop_time,
)

NOW = 1_900_000_000.0
DELAY = 0.2
UID = "uid-web"


def deployment(
    replicas: int = 3,
    *,
    image: str = "web:1",
    annotations: dict[str, str] | None = None,
    strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": annotations or {}},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": image}],
            },
        },
    }
    if strategy is not None:
        spec["strategy"] = strategy
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, "generation": 1},
        "spec": spec,
    }


NO_SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
V1, V2 = deployment(4, strategy=NO_SURGE), deployment(4, image="web:2", strategy=NO_SURGE)
_names = itertools.count()


def pod(
    of: dict[str, Any] = V1,
    state: str = "ready",
    *,
    started: float | None = None,
    owner: str = UID,
    deleting: bool = False,
) -> dict[str, Any]:
    """
    A pod of `of`'s template: state is "ready", "unready" (running), "pending" or "new" (no status).
    By default a pending pod has just started, the others long ago.
    """
    if started is None:
        started = NOW if state == "pending" else NOW - 10
    status: dict[str, Any] = {}
    if state != "new":
        status = {
            "phase": "Pending" if state == "pending" else "Running",
            "startTime": format_time(started),
            "conditions": [{"type": "Ready", "status": "True" if state == "ready" else "False"}],
        }
    meta: dict[str, Any] = {
        "name": f"web-{pod_template_hash(of)}-{next(_names)}",
        "namespace": "shop",
        "labels": {"app": "web", TEMPLATE_HASH_LABEL: pod_template_hash(of)},
        "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner, "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": meta, "spec": copy.deepcopy(of["spec"]["template"]["spec"]), "status": status}


def pods(of: dict[str, Any], *states: str) -> list[dict[str, Any]]:
    return [pod(of, state) for state in states]


def plan(dep: dict[str, Any], existing: list[dict[str, Any]]) -> PodChanges:
    return plan_pods(dep, existing, NOW, ready_delay=DELAY)


# ----- plan_pods: the table -----

# (deployment, pods, pods created, old/new pods deleted, counts once done: replicas, updated, ready)
CASES = {
    "a new Deployment gets all its pods": (V1, [], 4, {}, (4, 4, 0)),
    "ready pods of the template: nothing to do": (V1, pods(V1, *["ready"] * 4), 0, {}, (4, 4, 4)),
    "scale up: only the missing pods": (V1, pods(V1, "ready"), 3, {}, (4, 4, 1)),
    "scale down: unready pods go first": (
        deployment(2, strategy=NO_SURGE),
        pods(V1, "ready", "unready", "ready", "pending"),
        0,
        {"new": 2},
        (2, 2, 2),
    ),
    "scale to zero: every pod goes at once": (
        deployment(0),
        pods(V1, "ready", "ready"),
        0,
        {"new": 2},
        (0, 0, 0),
    ),
    "new template, maxUnavailable 0: old pods stay until new ones are ready": (
        V2,
        pods(V1, *["ready"] * 4),
        4,
        {},
        (8, 4, 4),
    ),
    "new template ready: old pods go": (
        V2,
        pods(V1, *["ready"] * 4) + pods(V2, *["ready"] * 4),
        0,
        {"old": 4},
        (4, 4, 4),
    ),
    "new template partly ready: as many old pods go": (
        V2,
        pods(V1, *["ready"] * 4) + pods(V2, "ready", "ready", "unready", "pending"),
        0,
        {"old": 2},
        (6, 4, 4),
    ),
    "unready old pods go at once: they serve nothing": (
        V2,
        pods(V1, "unready", "unready", "ready", "ready") + pods(V2, "ready", "ready", "pending", "pending"),
        0,
        {"old": 2},
        (6, 4, 4),
    ),
    "maxUnavailable 25% of 4: one old pod goes before any new is ready": (
        deployment(4, image="web:2"),
        pods(deployment(4), *["ready"] * 4),
        4,
        {"old": 1},
        (7, 4, 3),
    ),
    "Recreate: all old pods go at once": (
        deployment(2, image="web:2", strategy={"type": "Recreate"}),
        pods(deployment(2, strategy={"type": "Recreate"}), "ready", "ready"),
        2,
        {"old": 2},
        (2, 2, 0),
    ),
    "pods of another owner, or terminating, do not count": (
        V1,
        [pod(V1, owner="uid-other"), pod(V1, deleting=True), *pods(V1, "ready", "ready")],
        2,
        {},
        (4, 4, 2),
    ),
}


@pytest.mark.parametrize(
    ("dep", "existing", "created", "deleted", "counts"), CASES.values(), ids=CASES.keys()
)
def test_plan_pods(
    dep: dict[str, Any],
    existing: list[dict[str, Any]],
    created: int,
    deleted: dict[str, int],
    counts: tuple[int, int, int],
) -> None:
    changes = plan(dep, existing)
    assert len(changes.create) == created
    current = pod_template_hash(dep)
    by_template = {"new": 0, "old": 0}
    for name in changes.delete:
        [gone] = [p for p in existing if p["metadata"]["name"] == name]
        by_template["new" if gone["metadata"]["labels"][TEMPLATE_HASH_LABEL] == current else "old"] += 1
    assert {k: v for k, v in by_template.items() if v} == deleted
    assert changes.counts == ReplicaCounts(*counts)


def test_scale_down_removes_unready_then_youngest() -> None:
    oldest, youngest = pod(V1, started=NOW - 30), pod(V1, started=NOW - 5)
    unready = pod(V1, "unready", started=NOW - 60)
    changes = plan(deployment(1), [oldest, youngest, unready])
    assert set(changes.delete) == {youngest["metadata"]["name"], unready["metadata"]["name"]}


def test_a_new_pod_is_the_template_owned_by_the_deployment() -> None:
    dep = deployment(1, annotations={"note": "x"})
    [new] = plan(dep, []).create
    meta = new["metadata"]
    assert meta["generateName"] == f"web-{pod_template_hash(dep)}-"  # the store adds the suffix
    assert meta["labels"] == {"app": "web", TEMPLATE_HASH_LABEL: pod_template_hash(dep)}
    assert meta["annotations"] == {"note": "x"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert new["spec"] == dep["spec"]["template"]["spec"]  # containers and init containers
    assert new["status"]["phase"] == "Pending" and new["status"]["startTime"] == format_time(NOW)


# ----- The kubelet: Pending for ready_delay, then Running (and Ready unless told not to be) -----


@pytest.mark.parametrize(
    ("state", "started", "annotations", "phase", "ready", "wake"),
    [
        ("new", NOW, {}, "Pending", False, NOW + DELAY),  # no status yet: accepted now
        ("pending", NOW - DELAY / 2, {}, None, None, NOW + DELAY / 2),
        ("pending", NOW - DELAY, {}, "Running", True, None),
        ("pending", NOW - DELAY, {READY_ANNOTATION: "false"}, "Running", False, None),
        ("pending", NOW - DELAY, {READY_ANNOTATION: "true"}, "Running", True, None),
        ("ready", NOW - 60, {}, None, None, None),
    ],
)
def test_kubelet(
    state: str,
    started: float,
    annotations: dict[str, str],
    phase: str | None,
    ready: bool | None,
    wake: float | None,
) -> None:
    subject = pod(deployment(annotations=annotations), state, started=started)
    subject["metadata"]["annotations"] = annotations
    status, wake_at = kubelet_status(subject, NOW, DELAY)
    assert wake_at == pytest.approx(wake) if wake else wake_at is None
    if phase is None:
        assert status is None
    else:
        assert status is not None and status["phase"] == phase
        assert is_ready({"status": status}) is ready


def test_plan_wakes_up_when_the_first_pending_pod_is_due() -> None:
    changes = plan(V1, [pod(V1, "pending", started=NOW - 0.15), pod(V1, "pending", started=NOW - 0.05)])
    assert changes.wake_at == pytest.approx(NOW + 0.05)
    assert changes.starting == 4 and len(changes.create) == 2  # V1 has 4 replicas


# ----- A whole rollout, planned step by step -----


def apply(existing: list[dict[str, Any]], changes: PodChanges) -> list[dict[str, Any]]:
    """What the store holds once `changes` are applied (a stand-in for the loop)."""
    statuses = dict(changes.statuses)
    result = [
        {**p, "status": statuses.get(p["metadata"]["name"], p["status"])}
        for p in existing
        if p["metadata"]["name"] not in changes.delete
    ]
    for body in changes.create:
        meta = {**body["metadata"], "name": f"{body['metadata']['generateName']}{next(_names)}"}
        result.append({**body, "metadata": meta})
    return result


def rollout(dep: dict[str, Any], existing: list[dict[str, Any]]) -> Iterator[tuple[float, ReplicaCounts]]:
    """Plan and apply at each wake-up until nothing is left to do."""
    at = NOW
    for _ in range(20):
        changes = plan_pods(dep, existing, at, ready_delay=DELAY)
        existing = apply(existing, changes)
        yield at, changes.counts
        if changes.empty and changes.wake_at is None:
            return
        at = changes.wake_at or at
    raise AssertionError("the rollout did not settle")


@pytest.mark.parametrize(("strategy", "min_ready"), [(NO_SURGE, 4), (None, 3)])
def test_a_rolling_update_keeps_enough_pods_ready(strategy: dict[str, Any] | None, min_ready: int) -> None:
    old = deployment(4, strategy=strategy)
    new = deployment(4, image="web:2", strategy=strategy)
    steps = list(rollout(new, pods(old, *["ready"] * 4)))
    assert all(counts.ready >= min_ready for _, counts in steps)
    assert steps[-1][1] == ReplicaCounts(replicas=4, updated=4, ready=4)
    assert steps[-1][0] == pytest.approx(NOW + DELAY)  # one ready_delay, whatever the replica count


# ----- The status derived from the counts -----


@pytest.mark.parametrize(
    ("counts", "available", "progressing", "unavailable"),
    [
        (ReplicaCounts(4, 4, 4), "True", "NewReplicaSetAvailable", None),
        (ReplicaCounts(8, 4, 4), "True", "ReplicaSetUpdated", None),  # old pods still there
        (ReplicaCounts(4, 4, 2), "False", "ReplicaSetUpdated", 2),
        (ReplicaCounts(5, 4, 3), "True", "ReplicaSetUpdated", 1),  # within maxUnavailable 25%
    ],
)
def test_deployment_status_from_counts(
    counts: ReplicaCounts, available: str, progressing: str, unavailable: int | None
) -> None:
    status = deployment_status(deployment(4), counts, timestamp="2030-01-01T00:00:00Z")
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (
        counts.replicas,
        counts.updated,
        counts.ready,
    )
    assert status["availableReplicas"] == counts.ready
    assert status.get("unavailableReplicas") == unavailable
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Available": (available, conditions["Available"][1]),
        "Progressing": ("True", progressing),
    }


def test_only_update_times_do_not_make_a_status_write() -> None:
    earlier = deployment_status(deployment(2), timestamp="2030-01-01T00:00:00Z")
    later = deployment_status({**deployment(2), "status": earlier}, timestamp="2030-01-02T00:00:00Z")
    assert not status_differs(earlier, later)
    assert status_differs(earlier, deployment_status(deployment(3), timestamp="2030-01-01T00:00:00Z"))
    assert status_differs(None, earlier)


# ----- The loop, on a Store (no HTTP) -----


def test_the_simulator_runs_and_replaces_pods() -> None:
    asyncio.run(_run_simulator())


async def _run_simulator() -> None:
    store = SandboxAPIServer().store  # the built-in resources, as the sandbox serves them
    await store.create("namespaces", {"metadata": {"name": "shop"}})
    simulator = WorkloadSimulator(store, ready_delay=0.05, stop_delay=0.1)
    await simulator.start()
    try:
        body = deployment(3)
        del body["metadata"]["uid"]
        created = await store.create("deployments", body)
        ready = await store.wait_for("deployments", "shop", "web", _rolled_out(3), timeout=5)
        assert ready["status"]["observedGeneration"] == 1
        listed = (await store.list("pods", "shop"))["items"]
        assert len(listed) == 3 and all(is_ready(p) and p["status"]["phase"] == "Running" for p in listed)
        assert {p["metadata"]["ownerReferences"][0]["uid"] for p in listed} == {created["metadata"]["uid"]}
        first = {p["metadata"]["name"] for p in listed}

        await store.patch(
            "deployments",
            "shop",
            "web",
            {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}},
        )
        await store.wait_for("deployments", "shop", "web", _rolled_out(3, generation=2), timeout=5)
        for name in first:  # the old pods terminate, then go
            await store.wait_for_deletion("pods", "shop", name, timeout=5)
        replaced = (await store.list("pods", "shop"))["items"]
        assert len(replaced) == 3 and not first & {p["metadata"]["name"] for p in replaced}
        assert {p["spec"]["containers"][0]["image"] for p in replaced} == {"web:2"}

        await store.delete("deployments", "shop", "web")
        # Garbage-collected with their owner, gracefully: terminating, still serving, then gone.
        terminating = (await store.list("pods", "shop"))["items"]
        assert {p["metadata"]["name"] for p in terminating} == {p["metadata"]["name"] for p in replaced}
        assert all(is_terminating(p) and is_ready(p) for p in terminating)
        for pod_ in terminating:
            await store.wait_for_deletion("pods", "shop", pod_["metadata"]["name"], timeout=5)
    finally:
        await simulator.stop()
        store.close()


def _rolled_out(replicas: int, generation: int = 1) -> Any:
    def check(dep: dict[str, Any]) -> bool:
        status = dep.get("status") or {}
        return bool(
            status.get("observedGeneration") == generation
            and status.get("replicas")
            == status.get("updatedReplicas")
            == status.get("readyReplicas")
            == replicas
        )

    return check


# ----- Termination: deleted pods stay, still serving, until their containers have stopped -----


def terminating(grace: Any, *, deleted_at: float = NOW) -> dict[str, Any]:
    """A pod deleted at `deleted_at` with a grace period: the store's deletionTimestamp is its end."""
    subject = pod(V1)
    subject["metadata"]["deletionGracePeriodSeconds"] = grace
    subject["metadata"]["deletionTimestamp"] = format_time(deleted_at + (grace or 0))
    return subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        pytest.param(terminating(30), NOW + 1.0, id="the stop delay, within the grace period"),
        pytest.param(terminating(1), NOW + 1.0, id="the stop delay, equal to the grace period"),
        pytest.param(terminating(30, deleted_at=NOW - 5), NOW - 4.0, id="overdue: at once"),
        pytest.param(terminating(0), None, id="grace 0: nothing to wait for (finalizers)"),
        pytest.param(pod(V1), None, id="not terminating"),
    ],
)
def test_stop_time(subject: dict[str, Any], expected: float | None) -> None:
    at = stop_time(subject, stop_delay=1.0)
    assert at == pytest.approx(expected) if expected is not None else at is None


def test_a_grace_period_shorter_than_the_stop_delay_wins() -> None:
    assert stop_time(terminating(2), stop_delay=10.0) == pytest.approx(NOW + 2)


def test_a_terminating_pod_is_not_counted_and_gets_a_replacement() -> None:
    leaving = pod(V1)
    leaving["metadata"]["deletionTimestamp"] = format_time(NOW + 30)
    changes = plan(deployment(2), [leaving, pod(V1)])
    assert len(changes.create) == 1 and not changes.delete  # never deleted twice
    assert changes.counts == ReplicaCounts(replicas=2, updated=2, ready=1)  # the new pod is pending
    assert leaving["metadata"]["name"] not in dict(changes.statuses)  # the kubelet leaves it be


def test_a_deleted_pod_terminates_then_goes_after_the_stop_delay() -> None:
    asyncio.run(_deleted_pod_terminates())


async def _deleted_pod_terminates() -> None:
    store = SandboxAPIServer().store
    await store.create("namespaces", {"metadata": {"name": "shop"}})
    stop_delay = 0.3
    simulator = WorkloadSimulator(store, ready_delay=0.05, stop_delay=stop_delay)
    await simulator.start()
    loop = asyncio.get_running_loop()
    try:
        body = deployment(2)
        del body["metadata"]["uid"]
        await store.create("deployments", body)
        await store.wait_for("deployments", "shop", "web", _rolled_out(2), timeout=5)
        [victim, _] = (await store.list("pods", "shop"))["items"]
        name = victim["metadata"]["name"]

        async with store.watch("pods", "shop", field_selector=f"metadata.name={name}") as events:
            assert await _next_types(events, 1) == ["ADDED"]  # the pod as it is
            deleted_at = loop.time()
            marked = await store.delete("pods", "shop", name)
            assert marked["metadata"]["deletionGracePeriodSeconds"] == 30  # the default
            still = await store.get("pods", "shop", name)  # still there, Running and ready
            assert is_terminating(still) and is_ready(still) and still["status"]["phase"] == "Running"
            types = await _next_types(events, 2)
            gone_at = loop.time()
        assert types == ["MODIFIED", "DELETED"]
        assert gone_at - deleted_at >= stop_delay * 0.9  # not before its containers have stopped

        # The Deployment replaced it at once: one new pod, nothing else.
        await store.wait_for("deployments", "shop", "web", _rolled_out(2), timeout=5)
        names = {p["metadata"]["name"] for p in (await store.list("pods", "shop"))["items"]}
        assert len(names) == 2 and name not in names

        # Pods that no Deployment owns are stopped by the kubelet all the same.
        await store.create("pods", {"metadata": {"name": "loner"}, "spec": {"containers": []}}, "shop")
        await store.delete("pods", "shop", "loner")
        assert is_terminating(await store.get("pods", "shop", "loner"))
        await store.wait_for_deletion("pods", "shop", "loner", timeout=5)
    finally:
        await simulator.stop()
        store.close()


async def _next_types(events: Any, count: int, *, timeout: float = 5) -> list[str]:
    """The types of a watch's next `count` events, within a deadline."""
    async with asyncio.timeout(timeout):
        return [(await anext(events))["type"] for _ in range(count)]


def test_readiness_in_the_status_excludes_terminating_pods() -> None:
    asyncio.run(_scale_down_while_terminating())


async def _scale_down_while_terminating() -> None:
    store = SandboxAPIServer().store
    await store.create("namespaces", {"metadata": {"name": "shop"}})
    simulator = WorkloadSimulator(store, ready_delay=0.05, stop_delay=60)  # they outlive the test
    await simulator.start()
    try:
        body = deployment(3)
        del body["metadata"]["uid"]
        await store.create("deployments", body)
        await store.wait_for("deployments", "shop", "web", _rolled_out(3), timeout=5)
        await store.patch("deployments", "shop", "web", {"spec": {"replicas": 1}})
        scaled = await store.wait_for("deployments", "shop", "web", _rolled_out(1, generation=2), timeout=5)
        assert scaled["status"]["availableReplicas"] == 1
        listed = (await store.list("pods", "shop"))["items"]
        leaving = [p for p in listed if is_terminating(p)]
        # Two pods still serve while they terminate, yet the Deployment counts one, and has
        # created no pod to make up for them.
        assert len(listed) == 3 and len(leaving) == 2 and all(is_ready(p) for p in listed)
    finally:
        await simulator.stop()
        store.close()
