"""SidecarSets on kind: the real API server calls the operator's webhook (manifests/webhook.yaml)
through its Service, trusting the CA bundle the operator published, when pods are created.

The pods are created as any user or controller would; the sidecar must be in the pod the API server
stores, and the kubelet must run it. An image-only change then reaches the running pods in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from operators.sidecarset.inject import records_of
from operators.sidecarset.reconciler import sidecarset_key
from tests.harness import Harness, status_of
from tests.scenarios import RELEASE_TIMEOUT, Scene

pytestmark = pytest.mark.e2e

AGENT = "log-agent"
APP = "worker"
PODS = 3


def agent_sidecarset(name: str, namespace: str, image: str) -> dict[str, Any]:
    """A sidecar for pods labelled tier: batch, in `namespace` only (the cluster is shared)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"tier": "batch"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "containers": [{"name": AGENT, "image": image}],
            "updateStrategy": {"maxUnavailable": 1},
        },
    }


def pod(name: str, namespace: str, image: str, tier: str = "batch") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"tier": tier}},
        "spec": {"containers": [{"name": APP, "image": image}], "terminationGracePeriodSeconds": 1},
    }


def container_names(body: Mapping[str, Any]) -> list[str]:
    return [c["name"] for c in body["spec"]["containers"]]


def agent_image(body: Mapping[str, Any]) -> str | None:
    return next((c["image"] for c in body["spec"]["containers"] if c["name"] == AGENT), None)


def running_agent(body: Mapping[str, Any]) -> str | None:
    """The image the kubelet runs the sidecar with, once it is running and ready."""
    for status in status_of(body).get("containerStatuses") or []:
        if status["name"] == AGENT and status.get("ready") and "running" in (status.get("state") or {}):
            return str(status["image"])
    return None


def stored_on_create(h: Harness, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as the API server would store it, its admission webhooks called (a dry run: no pod)."""
    return h.cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods", dict(body), query={"dryRun": "All"}
    )


def batch_pods(h: Harness, namespace: str) -> list[dict[str, Any]]:
    return h.cluster.list_objects("v1", "Pod", namespace, "tier=batch")


def condition(status: Mapping[str, Any], kind: str) -> tuple[str, str]:
    found: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c["type"] == kind), {})
    return found.get("status", ""), found.get("reason", "")


@pytest.fixture
def sidecarset_name(scene: Scene) -> Iterator[str]:
    """A SidecarSet name of this test's own; the SidecarSet (cluster-scoped) is deleted after it."""
    name = "agent-" + scene.namespace[-50:].lstrip("-")  # the namespace's end holds the run's suffix
    yield name
    scene.harness.cluster.delete(sidecarset_key(name))


def test_created_pods_get_the_sidecar_from_the_webhook_and_image_updates_in_place(
    scene: Scene, sidecarset_name: str
) -> None:
    h, ns, name = scene.harness, scene.namespace, sidecarset_name
    old, new = scene.images
    h.apply_sidecarset(agent_sidecarset(name, ns, old))
    # Once the operator has the SidecarSet and the API server trusts the webhook's certificate.
    h.wait(
        lambda: stored_on_create(h, ns, pod("probe", ns, old)),
        lambda probe: agent_image(probe) == old,
        RELEASE_TIMEOUT,
        "the API server to inject the sidecar through the webhook (a dry-run pod)",
    )

    created = [h.cluster.create(pod(f"job-{index}", ns, old)) for index in range(PODS)]
    other = h.cluster.create(pod("web-0", ns, old, tier="web"))
    for body in created:
        assert container_names(body) == [AGENT, APP], "BeforeAppContainer: the sidecar comes first"
        assert agent_image(body) == old
        assert name in records_of(body), "the pod records what was injected"
    assert container_names(other) == [APP], "a pod no SidecarSet selects is left as it was"

    h.wait(
        lambda: batch_pods(h, ns),
        lambda pods: len(pods) == PODS and all(running_agent(p) == old for p in pods),
        RELEASE_TIMEOUT,
        "the kubelet to run every pod's sidecar",
    )
    h.wait(
        lambda: status_of(h.sidecarset(name)),
        lambda s: (s.get("matchedPods"), s.get("updatedPods"), s.get("readyPods")) == (PODS, PODS, PODS),
        RELEASE_TIMEOUT,
        "the SidecarSet to count the pods",
    )

    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in batch_pods(h, ns)}
    h.patch_sidecarset(name, {"spec": {"containers": [{"name": AGENT, "image": new}]}})
    updated = h.wait(
        lambda: batch_pods(h, ns),
        lambda pods: all(agent_image(p) == new and running_agent(p) == new for p in pods),
        RELEASE_TIMEOUT,
        "every pod's sidecar to be updated in place and run again",
    )
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in updated} == uids, "the same pods, not new"
    assert all(p["spec"]["containers"][1]["image"] == old for p in updated), "the app is untouched"
    status = h.wait(
        lambda: status_of(h.sidecarset(name)),
        lambda s: s.get("updatedPods") == PODS and condition(s, "Ready")[0] == "True",
        RELEASE_TIMEOUT,
        "the SidecarSet to count the updated pods",
    )
    assert condition(status, "InPlaceUpdate") == ("True", "ImageOnly")
