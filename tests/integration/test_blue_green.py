"""Blue-green releases in closed loop: test traffic -> Prometheus -> analysis -> the switch.

The sandbox's traffic simulator sends users' requests through the HTTPRoute to the active
Service, and test traffic to the preview Service (sluice_sandbox/traffic.py); the real Prometheus
scrapes both; the real operator's pre- and post-promotion analysis read the preview through the
built-in templates. No test sets a metric: a version behaves as its pods' annotations say.

The switch is one write of the active Service's selector (to the new revision's pods): counted
in the sandbox's request log, and the selector sampled throughout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from operators.foundation.cluster import KubeError
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import REVISION_LABEL, TRACK_LABEL
from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import (
    NAME,
    SAMPLE_SECONDS,
    gateway_snapshot,
    release,
    sandbox_in,
    scene_on,
    wait_status,
)
from tests.harness import Harness, service
from tests.scenarios import IMAGE_V1, IMAGE_V2, RELEASE_TIMEOUT, Scene, deploy_stable, error_rate_analysis

pytestmark = pytest.mark.integration

PREVIEW = f"{NAME}-preview"
IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
BAD = {ERROR_RATE_ANNOTATION: "0.5"}
WRITES = ("PATCH", "PUT", "POST")


@pytest.fixture(scope="module")
def shared_sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path_factory.mktemp("blue-green")) as sandbox:
        yield sandbox


@pytest.fixture
def scene(shared_sandbox: Sandbox, metrics_namespace: str) -> Scene:
    return scene_on(shared_sandbox, metrics_namespace)


def blue_green_rollout(scene: Scene, **blue_green: Any) -> dict[str, Any]:
    analysis = {**error_rate_analysis(scene.prometheus_url), "minChecksPerStep": 2}
    return {
        "metadata": {"name": NAME},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {"name": NAME, "image": IMAGE_V1, "ports": [{"name": "http", "containerPort": 8080}]}
                    ]
                },
            },
            "service": {"port": 80, "targetPort": "http"},
            "traffic": {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "default"}]}},
            "progressDeadlineSeconds": 60,
            "strategy": {
                "blueGreen": {"autoPromotionSeconds": 0, "prePromotionAnalysis": analysis, **blue_green}
            },
        },
    }


class SelectorSampler:
    """The active Service's selected revision, sampled in a thread while a release runs."""

    def __init__(self, scene: Scene) -> None:
        self._harness = Harness(scene.harness.kubeconfig)  # its own client, for its own thread
        self._key = service(scene.namespace, NAME)
        self.revisions: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="selector-sampler", daemon=True)

    def __enter__(self) -> SelectorSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                selector = self._harness.read(self._key)["spec"]["selector"]
            except KubeError:
                continue  # a slow answer under load: the next sample counts
            self.revisions.append(selector.get(REVISION_LABEL))


def service_writes(sandbox: Sandbox, namespace: str, since: float) -> int:
    path = f"/api/v1/namespaces/{namespace}/services/{NAME}"
    return sum(
        record.method in WRITES and record.path == path for record in sandbox.requests.snapshot(since=since)
    )


def active_revision(scene: Scene) -> str:
    return str(scene.harness.read(service(scene.namespace, NAME))["spec"]["selector"][REVISION_LABEL])


def preview_requests(scene: Scene) -> float:
    return scene.exporter.counters(scene.namespace, PREVIEW).count


def test_a_bad_version_fails_pre_promotion_analysis_and_the_active_service_never_switches(
    shared_sandbox: Sandbox, scene: Scene
) -> None:
    stable = deploy_stable(scene, blue_green_rollout(scene))
    users_before = gateway_snapshot(scene.exporter, scene.namespace)
    since = time.monotonic()
    with SelectorSampler(scene) as sampler:
        release(scene, IMAGE_V2, annotations=BAD)
        body = wait_status(scene, lambda s: s.get("phase") == "Degraded", "pre-promotion analysis to fail")
    status = body["status"]
    assert "rolled back" in status["message"] and "error-rate" in status["message"], status["message"]
    assert len(sampler.revisions) > 10, sampler.revisions
    assert set(sampler.revisions) == {stable}, "the active Service switched to the bad version"
    assert service_writes(shared_sandbox, scene.namespace, since) == 0
    # Users never met the bad version: no 5xx at the gateway; the analysis saw the preview's.
    users = scene.exporter.gateway_totals(scene.namespace, NAME)
    assert users["500"] == users_before["500"] and users["503"] == users_before["503"]


def test_a_good_version_switches_in_one_write_and_becomes_stable(
    shared_sandbox: Sandbox, scene: Scene
) -> None:
    post = {**error_rate_analysis(scene.prometheus_url), "duration": "3s"}
    stable = deploy_stable(
        scene, blue_green_rollout(scene, postPromotionAnalysis=post, scaleDownDelaySeconds=2)
    )
    since = time.monotonic()
    with SelectorSampler(scene) as sampler:
        release(scene, IMAGE_V2)
        body = wait_status(
            scene,
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") != stable,
            "the new version to be promoted",
        )
    new = body["status"]["stableRevision"]
    assert service_writes(shared_sandbox, scene.namespace, since) == 1
    # All-old, then all-new: the selector named the one revision, then the other, never anything else.
    switch = sampler.revisions.index(new)
    assert set(sampler.revisions[:switch]) == {stable} and set(sampler.revisions[switch:]) == {new}
    actions = [entry["action"] for entry in reversed(body["status"]["history"])]
    assert "switched" in actions and "promoted" in actions, actions
    assert preview_requests(scene) > 0  # the pre-promotion checks had test traffic to read


def test_a_post_promotion_failure_switches_back_to_the_old_pods(
    shared_sandbox: Sandbox, scene: Scene
) -> None:
    post = {**error_rate_analysis(scene.prometheus_url), "duration": "5m"}
    stable = deploy_stable(
        scene, blue_green_rollout(scene, postPromotionAnalysis=post, scaleDownDelaySeconds=300)
    )
    since = time.monotonic()
    release(scene, IMAGE_V3)
    switched = wait_status(scene, lambda s: s.get("currentStepIndex") == 2, "the switch")
    new = switched["status"]["canaryRevision"]
    assert active_revision(scene) == new
    assert service_writes(shared_sandbox, scene.namespace, since) == 1
    # The new version goes bad in production (its pods start failing), as the old pods wait.
    h, ns = scene.harness, scene.namespace
    for pod in h.cluster.list_objects("v1", "Pod", ns, f"{TRACK_LABEL}=canary"):
        key = ObjectKey("v1", "Pod", ns, pod["metadata"]["name"])
        h.cluster.merge_patch(key, {"metadata": {"annotations": BAD}})
    body = wait_status(scene, lambda s: s.get("phase") == "Degraded", "post-promotion analysis to fail")
    assert "error-rate" in body["status"]["message"], body["status"]["message"]
    assert active_revision(scene) == stable
    assert service_writes(shared_sandbox, scene.namespace, since) == 2
    old_pods = h.cluster.list_objects("v1", "Pod", ns, f"{REVISION_LABEL}={stable}")
    assert len(old_pods) == 2, "the old pods were not kept to switch back to"
    h.wait(
        lambda: h.read(service(ns, NAME))["spec"]["selector"],
        lambda selector: selector.get(REVISION_LABEL) == stable,
        RELEASE_TIMEOUT,
        "the active Service to stay on the old version",
    )
