"""The simulated kubelet: a pod's start, and the restart of a container whose image changes in place.

First the pure decision (:func:`kubelet_status`) step by step, then the workload simulator running it
on a Store, for a pod no Deployment owns and for a Deployment's pod.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from operators.sidecarset.facts import pod_facts
from operators.sidecarset.inject import inject
from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.kubelet import (
    CREATING_REASON,
    READY_ANNOTATION,
    image_id,
    is_ready,
    kubelet_status,
    running_status,
)
from sluice_sandbox.patching import PatchType
from sluice_sandbox.resources import format_time
from sluice_sandbox.store import JsonObject, Store
from sluice_sandbox.workloads import WorkloadSimulator
from tests.unit.sidecar_world import pod_template, sidecar

NOW = 1_900_000_000.0
DELAY = 0.2
NS = "shop"


def a_pod(*, annotations: dict[str, str] | None = None) -> JsonObject:
    return {
        "metadata": {"name": "p1", "namespace": NS, "uid": "uid-p1", "annotations": annotations or {}},
        "spec": {
            "initContainers": [
                {"name": "setup", "image": "busybox:1"},
                {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"},
            ],
            "containers": [{"name": "agent", "image": "fluent-bit:1"}, {"name": "app", "image": "web:1"}],
        },
    }


def running(pod: JsonObject, since: float = NOW - 60) -> JsonObject:
    """`pod` as the kubelet runs it since `since`."""
    return {**pod, "status": running_status(pod, since - DELAY, since)}


def with_image(pod: JsonObject, name: str, image: str, *, init: bool = False) -> JsonObject:
    """`pod` with the container `name`'s image patched in place (its status as it was)."""
    changed = copy.deepcopy(pod)
    for container in changed["spec"]["initContainers" if init else "containers"]:
        if container["name"] == name:
            container["image"] = image
    return changed


def entry(pod: Mapping[str, Any], name: str) -> JsonObject:
    status = pod.get("status") or {}
    entries = [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
    found: JsonObject = next(e for e in entries if e["name"] == name)
    return found


def condition(pod: Mapping[str, Any], kind: str) -> JsonObject:
    found: JsonObject = next(c for c in pod["status"]["conditions"] if c["type"] == kind)
    return found


def step(pod: JsonObject, at: float) -> tuple[JsonObject, float | None]:
    """The pod once the kubelet's write at `at` landed (the same pod if none), and its next wake-up."""
    status, wake = kubelet_status(pod, at, DELAY)
    return ({**pod, "status": status} if status is not None else pod), wake


# ----- The decision, step by step -----


def test_a_new_pod_starts_with_every_container_running_and_its_init_containers_done() -> None:
    pending, wake = step(a_pod(), NOW)
    assert pending["status"]["phase"] == "Pending" and wake == pytest.approx(NOW + DELAY)
    assert kubelet_status(pending, NOW + DELAY / 2, DELAY) == (None, pytest.approx(NOW + DELAY))
    started, wake = step(pending, NOW + DELAY)
    assert wake is None and started["status"]["phase"] == "Running" and is_ready(started)
    for name in ("agent", "app", "proxy"):
        container = entry(started, name)
        assert container["ready"] and container["restartCount"] == 0
        assert container["state"] == {"running": {"startedAt": format_time(NOW + DELAY)}}
        assert container["containerID"].startswith("containerd://")
        assert container["imageID"] == image_id(container["image"])
    assert entry(started, "setup")["state"]["terminated"]["reason"] == "Completed"
    ids = {entry(started, name)["containerID"] for name in ("agent", "app", "proxy", "setup")}
    assert len(ids) == 4, "every container its own ID"


def test_a_changed_image_restarts_that_container_only_and_the_pod_is_unready_until_it_started() -> None:
    before = running(a_pod())
    patched = with_image(before, "agent", "fluent-bit:2")

    restarting, wake = step(patched, NOW)
    assert wake == pytest.approx(NOW + DELAY), "the kubelet looks again once the new container is due"
    agent, old = entry(restarting, "agent"), entry(before, "agent")
    assert agent["restartCount"] == 1 and agent["ready"] is False and agent["started"] is False
    assert agent["state"] == {"waiting": {"reason": CREATING_REASON}}
    assert (agent["image"], agent["imageID"]) == ("fluent-bit:2", image_id("fluent-bit:2"))
    assert agent["imageID"] != old["imageID"] and agent["containerID"] != old["containerID"]
    assert agent["lastState"]["terminated"]["containerID"] == old["containerID"]
    assert agent["lastState"]["terminated"]["startedAt"] == old["state"]["running"]["startedAt"]
    for name in ("app", "proxy", "setup"):
        assert entry(restarting, name) == entry(before, name), f"{name} is untouched"
    assert not is_ready(restarting)
    for kind in ("Ready", "ContainersReady"):
        assert condition(restarting, kind)["status"] == "False"
        assert condition(restarting, kind)["message"] == "containers with unready status: [agent]"
        assert condition(restarting, kind)["lastTransitionTime"] == format_time(NOW)
    assert condition(restarting, "PodScheduled") == condition(before, "PodScheduled")

    still = kubelet_status(restarting, NOW + DELAY / 2, DELAY)
    assert still == (None, pytest.approx(NOW + DELAY)), "still starting"

    started, wake = step(restarting, NOW + DELAY)
    assert wake is None and is_ready(started)
    agent = entry(started, "agent")
    assert agent["ready"] and agent["started"] and agent["restartCount"] == 1
    assert agent["state"] == {"running": {"startedAt": format_time(NOW + DELAY)}}
    assert agent["containerID"] == entry(restarting, "agent")["containerID"]
    assert condition(started, "Ready")["lastTransitionTime"] == format_time(NOW + DELAY)
    assert "reason" not in condition(started, "Ready")
    assert step(started, NOW + 60) == (started, None), "settled"


def test_each_change_of_image_is_another_restart() -> None:
    pod = running(a_pod())
    for restarts, image in enumerate(("fluent-bit:2", "fluent-bit:3", "fluent-bit:1"), start=1):
        pod, _ = step(with_image(pod, "agent", image), NOW + restarts)
        pod, _ = step(pod, NOW + restarts + DELAY)
        assert (entry(pod, "agent")["restartCount"], entry(pod, "agent")["image"]) == (restarts, image)
        assert is_ready(pod)
    assert entry(pod, "app")["restartCount"] == 0


def test_an_image_changed_again_while_starting_is_the_one_started() -> None:
    restarting, _ = step(with_image(running(a_pod()), "agent", "fluent-bit:2"), NOW)
    again, wake = step(with_image(restarting, "agent", "fluent-bit:3"), NOW + DELAY / 2)
    assert wake == pytest.approx(NOW + DELAY), "still due when the first restart was"
    agent = entry(again, "agent")
    assert (agent["image"], agent["restartCount"]) == ("fluent-bit:3", 1)
    assert agent["containerID"] != entry(restarting, "agent")["containerID"]
    started, _ = step(again, NOW + DELAY)
    assert entry(started, "agent")["image"] == "fluent-bit:3" and is_ready(started)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda pod: pod, id="nothing"),
        pytest.param(lambda pod: {**pod, "metadata": {**pod["metadata"], "labels": {"v": "2"}}}, id="labels"),
        pytest.param(lambda pod: with_image(pod, "setup", "busybox:2", init=True), id="a finished init"),
    ],
)
def test_a_change_to_no_running_container_image_restarts_nothing(change: Any) -> None:
    before = running(a_pod())
    assert kubelet_status(change(before), NOW, DELAY) == (None, None)


def test_a_sidecar_init_container_restarts_like_any_container() -> None:
    restarting, _ = step(with_image(running(a_pod()), "proxy", "envoy:2", init=True), NOW)
    assert entry(restarting, "proxy")["restartCount"] == 1 and not is_ready(restarting)
    assert entry(restarting, "agent")["restartCount"] == 0
    started, _ = step(restarting, NOW + DELAY)
    assert entry(started, "proxy")["image"] == "envoy:2" and is_ready(started)


def test_a_never_ready_pod_restarts_and_stays_unready() -> None:
    pod = running(a_pod(annotations={READY_ANNOTATION: "false"}))
    restarting, _ = step(with_image(pod, "agent", "fluent-bit:2"), NOW)
    started, _ = step(restarting, NOW + DELAY)
    assert entry(started, "agent")["restartCount"] == 1 and entry(started, "agent")["started"]
    assert not entry(started, "agent")["ready"] and not is_ready(started)


def test_terminating_pods_and_hand_written_statuses_are_left_alone() -> None:
    patched = with_image(running(a_pod()), "agent", "fluent-bit:2")
    terminating = {**patched, "metadata": {**patched["metadata"], "deletionTimestamp": format_time(NOW)}}
    assert kubelet_status(terminating, NOW, DELAY) == (None, None)
    by_hand = {
        **patched,
        "status": {
            "phase": "Running",
            "startTime": format_time(NOW - 60),
            "containerStatuses": [{"name": "agent", "image": "fluent-bit:1", "ready": True}],
        },
    }
    assert kubelet_status(by_hand, NOW, DELAY) == (None, None)


# ----- What the SidecarSet operator reads of it -----


def test_the_sidecarset_operator_counts_a_sidecar_unavailable_until_the_kubelet_has_restarted_it() -> None:
    injected = inject(pod_template("app"), [sidecar("log-agent", "fluent-bit:1")]).template
    pod = running({**injected, "metadata": {**injected["metadata"], "name": "p1", "namespace": NS}})
    assert facts_of(pod) == (True, False)
    upgraded = inject(pod_template("app"), [sidecar("log-agent", "fluent-bit:2")]).template
    patched = {**pod, "spec": upgraded["spec"]}
    assert facts_of(patched) == (True, True), "patched, not restarted yet: the old image runs"
    restarting, _ = step(patched, NOW)
    assert facts_of(restarting) == (False, True), "the new image is named, but not running yet"
    started, _ = step(restarting, NOW + DELAY)
    assert facts_of(started) == (True, False)


def facts_of(pod: JsonObject) -> tuple[bool, bool]:
    """(ready, restarting), as the SidecarSet operator sees the pod."""
    facts = pod_facts(pod, "log-agent")
    return facts.ready, facts.restarting


# ----- The simulator runs it: pods of no Deployment, and a Deployment's -----

LOOP_DELAY = 0.1


def test_the_simulator_runs_a_pod_of_its_own_and_restarts_its_container_in_place() -> None:
    async def scenario(store: Store) -> None:
        await store.create("pods", a_pod(), NS)
        await store.wait_for("pods", NS, "p1", is_ready, timeout=5)
        await restart_in_place(store, "p1")

    run(scenario)


def test_the_simulator_restarts_a_deployments_pod_in_place_without_replacing_it() -> None:
    async def scenario(store: Store) -> None:
        template = {"metadata": {"labels": {"app": "web"}}, "spec": a_pod()["spec"]}
        deployment = {
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template},
        }
        await store.create("deployments", deployment, NS)
        ready = await store.wait_for("pods", NS, None, is_ready, timeout=5)
        await restart_in_place(store, ready["metadata"]["name"])
        assert [p["metadata"]["name"] for p in (await store.list("pods", NS))["items"]] == [
            ready["metadata"]["name"]
        ], "restarted, not replaced"
        await store.wait_for(
            "deployments", NS, "web", lambda d: d.get("status", {}).get("readyReplicas") == 1, timeout=5
        )

    run(scenario)


async def restart_in_place(store: Store, name: str) -> None:
    """
    Patch the agent's image of the ready pod `name` (after a patch that changes no image) and
    follow every version of the pod until it is ready again.
    """
    before = await store.get("pods", NS, name)
    # A label changes no image: nothing restarts (the restart count below counts one restart).
    await store.patch("pods", NS, name, {"metadata": {"labels": {"touched": "yes"}}})
    ops = [{"op": "replace", "path": "/spec/containers/0/image", "value": "fluent-bit:2"}]
    patched = await store.patch("pods", NS, name, ops, patch_type=PatchType.JSON)
    seen: list[JsonObject] = []
    async with asyncio.timeout(5):
        async with store.watch("pods", NS, resource_version=patched["metadata"]["resourceVersion"]) as events:
            async for event in events:
                pod = event["object"]
                seen.append(pod)
                if entry(pod, "agent")["image"] == "fluent-bit:2" and is_ready(pod):
                    break
    restarting = [p for p in seen if not is_ready(p)]
    assert restarting, "the pod was not ready while its agent restarted"
    assert all(entry(p, "agent")["restartCount"] == 1 for p in seen)
    assert not any(entry(p, "agent")["ready"] for p in restarting)
    final = seen[-1]
    started = [entry(p, "agent")["state"]["running"]["startedAt"] for p in (before, final)]
    assert started[1] > started[0], "a new container, started after the old one"
    assert entry(final, "agent")["containerID"] != entry(before, "agent")["containerID"]
    assert entry(final, "agent")["imageID"] == image_id("fluent-bit:2")
    assert [entry(final, n)["restartCount"] for n in ("app", "proxy")] == [0, 0], "the others untouched"


def run(scenario: Any) -> None:
    async def main() -> None:
        store = SandboxAPIServer().store
        await store.create("namespaces", {"metadata": {"name": NS}})
        simulator = WorkloadSimulator(store, ready_delay=LOOP_DELAY, stop_delay=0.1)
        await simulator.start()
        try:
            await scenario(store)
        finally:
            await simulator.stop()
            store.close()

    asyncio.run(main())
