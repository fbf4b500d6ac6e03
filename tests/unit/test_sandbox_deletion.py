"""
Deletion in the sandbox store: pods are deleted gracefully, as the API server does
(https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination), other
kinds at once; the garbage collector deletes pods the same graceful way. No simulator runs
here: nothing removes a terminating pod but another deletion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.builtin_resources import pod_grace_period
from sluice_sandbox.errors import ApiError
from sluice_sandbox.resources import parse_time
from sluice_sandbox.store import Store

NS = "shop"

Scenario = Callable[[Store], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        store = SandboxAPIServer().store  # the built-in resources, as the sandbox serves them
        await store.create("namespaces", {"metadata": {"name": NS}})
        try:
            await scenario(store)
        finally:
            store.close()

    asyncio.run(main())


def a_pod(name: str = "web-1", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"containers": [], **spec}}


async def exists(store: Store, resource: str, name: str) -> bool:
    try:
        await store.get(resource, NS, name)
    except ApiError as e:
        if e.status == 404:
            return False
        raise
    return True


def grace_end(obj: dict[str, Any]) -> float:
    """How many seconds from now the deletionTimestamp is."""
    end = parse_time(obj["metadata"]["deletionTimestamp"])
    assert end is not None
    return float(end) - time.time()


# ----- The grace period, as the API server's pod strategy decides it -----


@pytest.mark.parametrize(
    ("pod", "requested", "expected"),
    [
        pytest.param(a_pod(), None, 30, id="the default"),
        pytest.param(a_pod(terminationGracePeriodSeconds=5), None, 5, id="the pod's own"),
        pytest.param(a_pod(terminationGracePeriodSeconds=5), 2, 2, id="the request's"),
        pytest.param(a_pod(terminationGracePeriodSeconds=5), 0, 0, id="0: at once"),
        pytest.param({**a_pod(), "status": {"phase": "Succeeded"}}, 10, 0, id="ended: at once"),
        pytest.param({**a_pod(), "status": {"phase": "Failed"}}, None, 0, id="failed: at once"),
    ],
)
def test_pod_grace_period(pod: dict[str, Any], requested: int | None, expected: int) -> None:
    assert pod_grace_period(pod, requested) == expected


# ----- Deleting a pod marks it; deleting it again with grace 0 removes it -----


def test_a_deleted_pod_is_marked_until_deleted_with_grace_0() -> None:
    async def scenario(store: Store) -> None:
        created = await store.create("pods", a_pod(), NS)
        since = created["metadata"]["resourceVersion"]
        marked = await store.delete("pods", NS, "web-1")
        assert marked["metadata"]["deletionGracePeriodSeconds"] == 30
        assert grace_end(marked) == pytest.approx(30, abs=2)  # the end of the grace period
        assert await store.get("pods", NS, "web-1") == marked
        # Writes go on during the grace period (e.g. the kubelet's status) without removing it.
        await store.patch_status("pods", NS, "web-1", {"status": {"phase": "Running"}})
        assert await exists(store, "pods", "web-1")
        current = await store.get("pods", NS, "web-1")
        assert await store.delete("pods", NS, "web-1") == current  # no shorter grace period: no change

        gone = await store.delete("pods", NS, "web-1", grace_period=0)  # what the kubelet does
        assert gone["metadata"]["deletionGracePeriodSeconds"] == 0
        assert not await exists(store, "pods", "web-1")
        async with asyncio.timeout(5):
            async with store.watch("pods", NS, resource_version=since) as events:
                types = [(await anext(events))["type"] for _ in range(3)]
        assert types == ["MODIFIED", "MODIFIED", "DELETED"]  # the mark, the status, the removal

    run(scenario)


def test_grace_period_0_removes_a_pod_at_once() -> None:
    async def scenario(store: Store) -> None:
        await store.create("pods", a_pod(terminationGracePeriodSeconds=60), NS)
        await store.delete("pods", NS, "web-1", grace_period=0)  # kubectl delete --force --grace-period=0
        assert not await exists(store, "pods", "web-1")

    run(scenario)


def test_the_grace_period_only_shortens() -> None:
    async def scenario(store: Store) -> None:
        await store.create("pods", a_pod(terminationGracePeriodSeconds=60), NS)
        first = await store.delete("pods", NS, "web-1")
        assert first["metadata"]["deletionGracePeriodSeconds"] == 60
        longer = await store.delete("pods", NS, "web-1", grace_period=120)
        assert longer == first
        shorter = await store.delete("pods", NS, "web-1", grace_period=10)
        assert shorter["metadata"]["deletionGracePeriodSeconds"] == 10
        assert grace_end(shorter) == pytest.approx(10, abs=2)  # counted from the first deletion
        negative = await store.delete("pods", NS, "web-1", grace_period=-5)  # counts as 1 second
        assert negative["metadata"]["deletionGracePeriodSeconds"] == 1

    run(scenario)


def test_a_terminating_pod_with_finalizers_waits_for_them() -> None:
    async def scenario(store: Store) -> None:
        await store.create("pods", {**a_pod(), "metadata": {"name": "web-1", "finalizers": ["x/y"]}}, NS)
        await store.delete("pods", NS, "web-1")
        await store.delete("pods", NS, "web-1", grace_period=0)
        held = await store.get("pods", NS, "web-1")
        assert held["metadata"]["deletionGracePeriodSeconds"] == 0  # stopped, held by its finalizer
        await store.patch("pods", NS, "web-1", {"metadata": {"finalizers": None}})
        assert not await exists(store, "pods", "web-1")

    run(scenario)


def test_removing_the_finalizers_of_a_pod_in_its_grace_period_keeps_it() -> None:
    async def scenario(store: Store) -> None:
        await store.create("pods", {**a_pod(), "metadata": {"name": "web-1", "finalizers": ["x/y"]}}, NS)
        await store.delete("pods", NS, "web-1")
        await store.patch("pods", NS, "web-1", {"metadata": {"finalizers": None}})
        assert await exists(store, "pods", "web-1")  # its containers are still stopping

    run(scenario)


def test_other_kinds_are_deleted_at_once_whatever_the_grace_period() -> None:
    async def scenario(store: Store) -> None:
        await store.create("configmaps", {"metadata": {"name": "cm"}}, NS)
        await store.delete("configmaps", NS, "cm", grace_period=30)
        assert not await exists(store, "configmaps", "cm")

    run(scenario)


def test_delete_collection_is_graceful_for_pods() -> None:
    async def scenario(store: Store) -> None:
        for name in ("web-1", "web-2"):
            await store.create("pods", a_pod(name), NS)
        await store.delete_collection("pods", NS, "app=web")
        assert all("deletionTimestamp" in p["metadata"] for p in (await store.list("pods", NS))["items"])
        await store.delete_collection("pods", NS, "app=web", grace_period=0)
        assert (await store.list("pods", NS))["items"] == []

    run(scenario)


# ----- Garbage collection: a Deployment's pods terminate gracefully -----


def test_garbage_collection_deletes_pods_gracefully() -> None:
    async def scenario(store: Store) -> None:
        owner = await store.create("deployments", {"metadata": {"name": "web"}, "spec": {}}, NS)
        ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner["metadata"]["uid"]}
        pod = a_pod()
        pod["metadata"]["ownerReferences"] = [{**ref, "controller": True}]
        await store.create("pods", pod, NS)
        await store.create("configmaps", {"metadata": {"name": "cm", "ownerReferences": [ref]}}, NS)

        await store.delete("deployments", NS, "web")
        assert not await exists(store, "configmaps", "cm")  # other kinds: at once
        terminating = await store.get("pods", NS, "web-1")
        assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
        assert terminating["metadata"]["ownerReferences"][0]["uid"] == ref["uid"]

    run(scenario)
