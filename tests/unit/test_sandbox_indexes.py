"""
The sandbox's indexes give what a scan of everything gives: the traffic index against the pure
functions on random histories, the workload simulator's pods per Deployment, the store's
namespaces and owners, and watch events encoded once for all their watchers.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from sluice_sandbox import selectors
from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.store import Store
from sluice_sandbox.traffic import TrafficIndex, gateway_traffic, service_traffic
from sluice_sandbox.workloads import WorkloadSimulator, is_ready, plan_pods

RPS = 30.0
NAMESPACES = ("a", "b")


# ----- The traffic index: equal to service_traffic() and gateway_traffic() at every step -----


class World:
    """Routes, Services and pods as the store holds them, changed at random (one seed, repeatable)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.routes: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        selector = self.random.choice(
            [
                {},
                {"app": "x"},
                {"app": "x", "track": "stable"},
                {"app": "x", "track": "canary"},
                {"app": "y"},
                {"app": 1},  # no string value to index by: checked against every pod
            ]
        )
        labels = {"sluice.dev/track": self.random.choice(["stable", "canary"])}
        return {
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"selector": selector},
        }

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        labels = {
            key: self.random.choice(values)
            for key, values in (("app", ["x", "y"]), ("track", ["stable", "canary"]), ("extra", ["1"]))
            if self.random.random() < 0.8
        }
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
        if self.random.random() < 0.3:
            meta["annotations"] = {"sandbox.sluice.dev/error-rate": self.random.choice(["0.1", "0.5", "bad"])}
        if self.random.random() < 0.2:
            meta["deletionTimestamp"] = "2030-01-01T00:00:30.000000Z"
        ready = self.random.random() < 0.7
        return {
            "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "web"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }

    def route(self, namespace: str, name: str) -> dict[str, Any]:
        def backend() -> dict[str, Any]:
            ref: dict[str, Any] = {"name": f"s{self.random.randrange(4)}", "port": 80}
            roll = self.random.random()
            if roll < 0.1:
                ref["namespace"] = self.random.choice(NAMESPACES)
            elif roll < 0.15:
                ref.update(group="example.com", kind="Bucket")
            if self.random.random() < 0.9:
                ref["weight"] = self.random.choice([0, 1, 10, 50, 90, "x"])
            return ref

        rules = [
            {"backendRefs": [backend() for _ in range(self.random.randint(0, 3))]}
            for _ in range(self.random.randint(1, 2))
        ]
        return {"metadata": {"name": name, "namespace": namespace}, "spec": {"rules": rules}}

    def changes(self, count: int) -> Iterator[tuple[str, tuple[str, str], dict[str, Any] | None]]:
        """(kind, key, the new object or None for a deletion), mostly pods, as in a cluster."""
        for _ in range(count):
            kind = self.random.choices(["pod", "service", "route"], weights=[6, 2, 2])[0]
            namespace = self.random.choice(NAMESPACES)
            prefix, size, objects, make = {
                "pod": ("p", 8, self.pods, self.pod),
                "service": ("s", 4, self.services, self.service),
                "route": ("r", 3, self.routes, self.route),
            }[kind]
            key = (namespace, f"{prefix}{self.random.randrange(size)}")
            obj = None if key in objects and self.random.random() < 0.3 else make(*key)
            if obj is None:
                del objects[key]
            else:
                objects[key] = obj
            yield kind, key, obj

    def listed(self, objects: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
        return [objects[key] for key in sorted(objects)]  # the store's order: namespace, name


@pytest.mark.parametrize("seed", range(12))
def test_the_traffic_index_equals_the_pure_functions(seed: int) -> None:
    world, index = World(seed), TrafficIndex(RPS)
    for step, (kind, key, obj) in enumerate(world.changes(400)):
        match kind:
            case "pod":
                index.put_pod(key[0], key[1], obj)
            case "service":
                index.put_service(key, obj)
            case "route":
                index.put_route(key, obj)
        if step % 3 == 0:  # several changes between refreshes too, as between two ticks
            index.refresh()
            routes, services, pods = (
                world.listed(world.routes),
                world.listed(world.services),
                world.listed(world.pods),
            )
            assert index.traffic == service_traffic(routes, services, pods, rps=RPS), f"step {step}"
            assert index.gateway == gateway_traffic(routes, services, pods, rps=RPS), f"step {step}"


def test_the_traffic_index_follows_a_pod_out_of_its_service() -> None:
    index = TrafficIndex(RPS)
    web = {"metadata": {"name": "web", "namespace": "a"}, "spec": {"selector": {"app": "web"}}}
    route = {
        "metadata": {"name": "r", "namespace": "a"},
        "spec": {"rules": [{"backendRefs": [{"name": "web"}]}]},
    }
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "a", "labels": {"app": "web"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    index.put_service(("a", "web"), web)
    index.put_route(("a", "r"), route)
    index.put_pod("a", "p", pod)
    index.refresh()
    assert index.traffic["a", "web"].ready_pods == 1
    relabelled = {**pod, "metadata": {**pod["metadata"], "labels": {"app": "other"}}}
    index.put_pod("a", "p", relabelled)
    index.refresh()
    assert index.traffic["a", "web"].ready_pods == 0
    assert index.gateway["a", "r"]["503"] == pytest.approx(RPS)


# ----- The workload simulator reads a Deployment's own pods only -----


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            },
        },
    }


def test_a_deployments_pods_are_what_a_scan_of_its_namespace_finds() -> None:
    asyncio.run(_pods_of_deployments())


async def _pods_of_deployments() -> None:
    store = SandboxAPIServer().store
    simulator = WorkloadSimulator(store, ready_delay=0.05, stop_delay=60)
    for namespace in ("shop", "other"):
        await store.create("namespaces", {"metadata": {"name": namespace}})
    await simulator.start()
    try:
        for namespace, name, replicas in (("shop", "web", 3), ("shop", "api", 2), ("other", "web", 1)):
            await store.create("deployments", deployment(name, replicas), namespace)
        for namespace, name in (("shop", "web"), ("shop", "api"), ("other", "web")):
            await store.wait_for("deployments", namespace, name, _ready, timeout=5)
        before = await _pod_names(store, "shop", "app=web")
        await store.delete("pods", "shop", before[0])  # it terminates (for a minute), and is replaced

        def replacement(pod: dict[str, Any]) -> bool:
            return pod["metadata"]["labels"].get("app") == "web" and pod["metadata"]["name"] not in before

        await store.wait_for("pods", "shop", None, lambda pod: replacement(pod) and is_ready(pod), timeout=5)

        for namespace, name in (("shop", "web"), ("shop", "api"), ("other", "web")):
            subject = await store.get("deployments", namespace, name)
            everything = (await store.list("pods", namespace))["items"]
            own = simulator.pods_of(subject)
            assert [pod["metadata"]["name"] for pod in own] == sorted(
                pod["metadata"]["name"]
                for pod in everything
                if pod["metadata"]["ownerReferences"][0]["uid"] == subject["metadata"]["uid"]
            )
            assert plan_pods(subject, own, 2e9) == plan_pods(subject, everything, 2e9)
        assert (
            len(simulator.pods_of(await store.get("deployments", "shop", "web"))) == 4
        )  # with the terminating one
    finally:
        await simulator.stop()
        store.close()


def _ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("readyReplicas") == obj["spec"]["replicas"] == status.get("updatedReplicas"))


async def _pod_names(store: Store, namespace: str, selector: str) -> list[str]:
    return [
        pod["metadata"]["name"]
        for pod in (await store.list("pods", namespace, selector))["items"]
        if is_ready(pod)
    ]


# ----- The store: namespaces, owners, watch fan-out -----


def test_lists_of_a_namespace_and_of_all_agree() -> None:
    asyncio.run(_lists())


async def _lists() -> None:
    store = SandboxAPIServer().store
    for namespace in ("a", "b"):
        await store.create("namespaces", {"metadata": {"name": namespace}})
        for name in ("z", "m", "c"):
            await store.create(
                "configmaps", {"metadata": {"name": name, "labels": {"ns": namespace}}}, namespace
            )
    await store.delete("configmaps", "a", "m")
    everything = (await store.list("configmaps"))["items"]
    assert [(obj["metadata"]["namespace"], obj["metadata"]["name"]) for obj in everything] == [
        ("a", "c"),
        ("a", "z"),
        ("b", "c"),
        ("b", "m"),
        ("b", "z"),
    ]
    for namespace in ("a", "b", "nowhere"):
        listed = (await store.list("configmaps", namespace))["items"]
        assert listed == [obj for obj in everything if obj["metadata"]["namespace"] == namespace]
    shared = (await store.list("configmaps", "b", shared=True))["items"]
    assert shared == (await store.list("configmaps", "b"))["items"]

    # Label selectors read the objects with the label's value; a relabelled object moves.
    await store.patch("configmaps", "b", "m", {"metadata": {"labels": {"ns": "a", "moved": "yes"}}})
    everything = (await store.list("configmaps"))["items"]
    scope: str | None
    for scope in (None, "a", "b"):
        for selector in ("ns=a", "ns in (a,b)", "ns=b,moved", "ns=a,moved!=yes", "ns notin (a)", "moved"):
            listed = (await store.list("configmaps", scope, selector))["items"]
            parsed = selectors.parse_label_selector(selector)
            expected = [
                obj
                for obj in everything
                if scope in (None, obj["metadata"]["namespace"]) and parsed.matches(obj["metadata"]["labels"])
            ]
            assert listed == expected, (scope, selector)
    names = [obj["metadata"]["name"] for obj in (await store.list("configmaps", None, "ns=a"))["items"]]
    assert names == ["c", "z", "m"]  # a/c, a/z, b/m: by namespace, then name
    store.close()


def test_the_garbage_collector_follows_owner_references_as_they_change() -> None:
    asyncio.run(_owners())


async def _owners() -> None:
    store = SandboxAPIServer().store
    await store.create("namespaces", {"metadata": {"name": "ns"}})
    first = await store.create("configmaps", {"metadata": {"name": "first"}}, "ns")
    second = await store.create("configmaps", {"metadata": {"name": "second"}}, "ns")

    def owned_by(owner: dict[str, Any]) -> list[dict[str, Any]]:
        meta = owner["metadata"]
        return [{"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"]}]

    await store.create("secrets", {"metadata": {"name": "moved", "ownerReferences": owned_by(first)}}, "ns")
    await store.create("secrets", {"metadata": {"name": "stays", "ownerReferences": owned_by(first)}}, "ns")
    # One dependent changes owner: the first owner's deletion no longer takes it, the second's does.
    await store.patch("secrets", "ns", "moved", {"metadata": {"ownerReferences": owned_by(second)}})
    await store.delete("configmaps", "ns", "first")
    assert [obj["metadata"]["name"] for obj in (await store.list("secrets", "ns"))["items"]] == ["moved"]
    await store.delete("configmaps", "ns", "second")
    assert (await store.list("secrets", "ns"))["items"] == []
    store.close()


def test_a_watch_event_is_encoded_once_for_all_its_watchers(monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_fan_out(monkeypatch))


async def _fan_out(monkeypatch: pytest.MonkeyPatch) -> None:
    store = SandboxAPIServer().store
    await store.create("namespaces", {"metadata": {"name": "ns"}})
    encoded: list[Any] = []
    real_dumps = json.dumps

    def counting_dumps(obj: Any, **kwargs: Any) -> str:
        encoded.append(obj)
        return real_dumps(obj, **kwargs)

    monkeypatch.setattr("sluice_sandbox.store.json.dumps", counting_dumps)
    async with (
        store.watch("configmaps", "ns") as in_namespace,
        store.watch("configmaps") as everywhere,
        store.watch("configmaps", label_selector="app=web") as selected,
    ):
        await store.create("configmaps", {"metadata": {"name": "other", "labels": {"app": "api"}}}, "ns")
        await store.create("configmaps", {"metadata": {"name": "web", "labels": {"app": "web"}}}, "ns")
        async with asyncio.timeout(5):
            first = await anext(in_namespace.chunks())
            assert first == await anext(everywhere.chunks())  # the same bytes, in one chunk each
            assert len(first.splitlines()) == 2
            only = await anext(selected.chunks())  # the selector applied before anything is encoded
        assert [json.loads(line)["object"]["metadata"]["name"] for line in only.splitlines()] == ["web"]
        assert len(encoded) == 2  # once per change, not once per watcher
    store.close()
