"""SidecarSets with the real operator: the sandbox API server (with its pod and traffic simulators),
a real Prometheus, and the real kopf webhook server over HTTPS.

- A SidecarSet matching two Rollouts injects into both; changing its image releases it to one
  Rollout at a time (asserted from the cluster, polled throughout).
- A bad sidecar (its container sets SANDBOX_ERROR_RATE, which the traffic simulator honours) is
  rolled back by analysis on the first Rollout and goes no further.
- Pods created outside Sluice get the sidecar through the webhook (AdmissionReview requests to
  the webhook server; the returned JSON patch must apply cleanly), and image changes reach them
  in place, no more than maxUnavailable at a time: the sandbox's kubelet restarts the sidecar
  container of each pod it patches (not ready until the new image has started).
"""

from __future__ import annotations

import base64
import copy
import functools
import http.client
import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from operators.operator import OperatorOptions
from operators.sidecarset.inject import records_of
from operators.sidecarset.webhook import WEBHOOK_ID
from operators.webhook.server import CONFIGURATIONS_PATH, DEFAULT_CONFIGURATION, WebhookOptions
from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer
from sluice_sandbox.store import DELETED, Change
from sluice_sandbox.traffic import TrafficSimulator
from sluice_sandbox.workloads import WorkloadSimulator
from tests.harness import Harness, OperatorThread, deployment, httproute_crd, sluice_crds, status_of
from tests.scenarios import RELEASE_TIMEOUT, error_rate_analysis, history_messages, web_rollout

REPO = Path(__file__).resolve().parents[2]
AGENT = "log-agent"
V1, V2, BAD = "fluent-bit:3.1", "fluent-bit:3.2", "fluent-bit:3.3-broken"
QUICK_STEPS = [{"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]


@dataclass
class Scene:
    sandbox: SandboxThread
    harness: Harness
    namespace: str
    prometheus_url: str
    webhook_port: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def webhook_configuration() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "manifests" / "webhook.yaml").read_text())
    return next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")


@pytest.fixture
def scene(
    tmp_path: Path, metrics_exporter: MetricsExporter, prometheus: PrometheusServer, metrics_namespace: str
) -> Iterator[Scene]:
    factory = with_controllers(
        functools.partial(WorkloadSimulator, ready_delay=0.2),
        functools.partial(TrafficSimulator, exporter=metrics_exporter, rps=50),
    )
    with SandboxThread(kubeconfig=tmp_path / "kubeconfig", server_factory=factory) as sandbox:
        for crd in [*sluice_crds(), httproute_crd()]:
            sandbox.run(sandbox.server.install_crd(crd))
        harness = Harness(sandbox.kubeconfig)
        harness.cluster.request("POST", CONFIGURATIONS_PATH, webhook_configuration())
        port = free_port()
        options = OperatorOptions(
            all_namespaces=True,
            prometheus_url=prometheus.url,
            kubeconfig=str(sandbox.kubeconfig),
            liveness_endpoint=None,
            webhook=WebhookOptions(port=port, addr="127.0.0.1", hostnames=("127.0.0.1",)),
        )
        operator = OperatorThread(options).start()
        try:
            harness.ensure_namespace(metrics_namespace)
            yield Scene(sandbox, harness, metrics_namespace, prometheus.url, port)
        finally:
            operator.stop()


# ---- building blocks -------------------------------------------------------------------------------


def sidecarset(name: str, image: str, tier: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"tier": tier}},
            "containers": [{"name": AGENT, "image": image}],
            **spec,
        },
    }


def tiered_rollout(name: str, **kwargs: Any) -> dict[str, Any]:
    body = web_rollout(name=name, **kwargs)
    body["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    return body


def agent_image(template: dict[str, Any] | None) -> str | None:
    containers = ((template or {}).get("spec") or {}).get("containers") or []
    return next((c.get("image") for c in containers if c.get("name") == AGENT), None)


def deployment_agent(h: Harness, ns: str, name: str) -> str | None:
    body = h.get(deployment(ns, name))
    return agent_image(((body or {}).get("spec") or {}).get("template"))


def deploy(scene: Scene, *names: str, **kwargs: Any) -> None:
    h, ns = scene.harness, scene.namespace
    for name in names:
        h.apply_rollout(ns, tiered_rollout(name, **kwargs))
    for name in names:
        h.wait_rollout(
            ns,
            name,
            lambda r: status_of(r).get("phase") == "Healthy",
            RELEASE_TIMEOUT,
            f"{name} to be Healthy",
        )


def releasing(h: Harness, ns: str, name: str, image: str) -> bool:
    """From the cluster: a release is under way whose canary runs the sidecar `image`."""
    status = status_of(h.rollout(ns, name))
    return (
        status.get("phase") in ("Progressing", "Paused")
        and bool(status.get("canaryRevision"))
        and deployment_agent(h, ns, f"{name}-canary") == image
        and deployment_agent(h, ns, name) != image
    )


def sidecarset_status(h: Harness, name: str) -> dict[str, Any]:
    return status_of(h.sidecarset(name))


def condition(status: dict[str, Any], kind: str) -> tuple[str, str]:
    found = next((c for c in status.get("conditions") or [] if c["type"] == kind), {})
    return found.get("status", ""), found.get("reason", "")


# ---- Rollouts ------------------------------------------------------------------------------------------


def test_a_sidecarset_reaches_every_matching_rollout_and_upgrades_them_one_at_a_time(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    h.apply_sidecarset(sidecarset(AGENT, V1))
    deploy(scene, "web-a", "web-b", steps=QUICK_STEPS)
    for name in ("web-a", "web-b"):
        assert deployment_agent(h, ns, name) == V1, f"{name} was deployed with the sidecar"
        stable = h.get(deployment(ns, name))
        assert stable is not None
        containers = [c["name"] for c in stable["spec"]["template"]["spec"]["containers"]]
        assert containers == [AGENT, name], "BeforeAppContainer: the sidecar comes first"
    h.wait(
        lambda: sidecarset_status(h, AGENT),
        lambda s: (
            (s.get("matchedRollouts"), s.get("updatedRollouts")) == (2, 2)
            and condition(s, "Ready")[0] == "True"
        ),
        RELEASE_TIMEOUT,
        "the SidecarSet to count both Rollouts updated",
    )

    h.patch_sidecarset(AGENT, {"spec": {"containers": [{"name": AGENT, "image": V2}]}})
    seen: list[set[str]] = []
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while time.monotonic() < deadline:
        seen.append({name for name in ("web-a", "web-b") if releasing(h, ns, name, V2)})
        if all(deployment_agent(h, ns, name) == V2 for name in ("web-a", "web-b")):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the new sidecar did not reach both Rollouts; releasing over time: {seen}")
    assert max(len(names) for names in seen) == 1, f"at most maxUnavailable (1) at once: {seen}"
    assert {"web-a"} in seen and {"web-b"} in seen, "each released the sidecar through a canary"
    assert seen.index({"web-a"}) < seen.index({"web-b"}), "in namespace/name order"
    for name in ("web-a", "web-b"):
        done = h.wait_rollout(
            ns, name, lambda r: status_of(r).get("phase") == "Healthy", RELEASE_TIMEOUT, f"{name} promoted"
        )
        assert len(history_messages(done, "release-started")) == 1
        assert history_messages(done, "set-weight")[:2] == [
            "canary weight 0% -> 50%",
            "canary weight 50% -> 100%",
        ]
    final = h.wait(
        lambda: sidecarset_status(h, AGENT),
        lambda s: s.get("updatedRollouts") == 2 and condition(s, "Ready")[0] == "True",
        RELEASE_TIMEOUT,
        "the SidecarSet to report both updated",
    )
    assert final["revision"] and final["observedGeneration"] == h.sidecarset(AGENT)["metadata"]["generation"]


def test_a_bad_sidecar_is_rolled_back_on_the_first_rollout_and_goes_no_further(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    h.apply_sidecarset(sidecarset(AGENT, V1))
    analysis = error_rate_analysis(scene.prometheus_url, interval="3s")
    deploy(scene, "web-a", "web-b", steps=[{"setWeight": 50}, {"setWeight": 100}], analysis=analysis)

    bad = {"name": AGENT, "image": BAD, "env": [{"name": "SANDBOX_ERROR_RATE", "value": "0.5"}]}
    h.patch_sidecarset(AGENT, {"spec": {"containers": [bad]}})
    degraded = h.wait_rollout(
        ns, "web-a", lambda r: status_of(r).get("phase") == "Degraded", RELEASE_TIMEOUT, "web-a to roll back"
    )
    assert "error-rate" in status_of(degraded)["message"]
    assert deployment_agent(h, ns, "web-a") == V1, "web-a's stable kept the old sidecar"
    status = h.wait(
        lambda: sidecarset_status(h, AGENT),
        lambda s: bool(s.get("rolledBack")),
        RELEASE_TIMEOUT,
        "the SidecarSet to mark the rollback",
    )
    assert [r["rollout"] for r in status["rolledBack"]] == [f"{ns}/web-a"]
    assert condition(status, "Stalled") == ("True", "RolledBack")
    h.wait(
        lambda: {e["reason"] for e in h.events("default", AGENT)},
        lambda reasons: "RolledBack" in reasons,
        RELEASE_TIMEOUT,
        "a RolledBack event on the SidecarSet",
    )
    # Goes no further: web-b never starts the bad sidecar, however long we watch.
    watch_until = time.monotonic() + 6
    while time.monotonic() < watch_until:
        other = status_of(h.rollout(ns, "web-b"))
        assert other.get("phase") == "Healthy" and not other.get("canaryRevision"), other
        assert deployment_agent(h, ns, "web-b-canary") != BAD
        time.sleep(0.2)
    assert deployment_agent(h, ns, "web-b") == V1
    assert status_of(h.rollout(ns, "web-a"))["phase"] == "Degraded", "web-a stays rolled back"


# ---- pods outside Sluice: the webhook and in-place updates ------------------------------------------


def admission_review(pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def review(scene: Scene, ca: bytes, pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    """POST an AdmissionReview to the webhook server, trusting only the CA the operator published."""
    context = ssl.create_default_context(cadata=ca.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", scene.webhook_port, context=context, timeout=10)
    try:
        body = json.dumps(admission_review(pod, namespace))
        connection.request("POST", f"/{WEBHOOK_ID}", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        answer: dict[str, Any] = json.loads(response.read())["response"]
        return answer
    finally:
        connection.close()


def batch_pod(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "batch", **labels}},
        "spec": {"containers": [{"name": "worker", "image": "worker:1"}]},
    }


def patched_by_webhook(scene: Scene, ca: bytes, pod: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    answer = review(scene, ca, pod, namespace)
    assert answer["allowed"] is True
    if "patch" not in answer:
        return None
    assert answer["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(answer["patch"]))
    return dict(jsonpatch.apply_patch(copy.deepcopy(pod), ops))  # raises unless it applies cleanly


class Availability:
    """
    Follows the namespace's batch pods in the sandbox's store, every version as it is committed
    (the sandbox's kubelet runs them): how many were unavailable after each change (not ready, or
    running an image their spec no longer names), which is what maxUnavailable bounds.
    """

    def __init__(self, sandbox: SandboxThread, namespace: str) -> None:
        self.sandbox, self.namespace = sandbox, namespace
        self.pods: dict[str, dict[str, Any]] = {}
        self.unavailable: list[int] = []
        self._unsubscribe: Callable[[], None] | None = None

    def __enter__(self) -> Availability:
        async def follow() -> Callable[[], None]:  # on the store's loop, as its handlers run
            unsubscribe: Callable[[], None] = self.sandbox.store.subscribe("pods", self._on_pod)
            return unsubscribe

        self._unsubscribe = self.sandbox.run(follow())
        return self

    def __exit__(self, *_: object) -> None:
        async def unfollow(unsubscribe: Callable[[], None]) -> None:
            unsubscribe()

        if self._unsubscribe is not None:
            self.sandbox.run(unfollow(self._unsubscribe))

    def _on_pod(self, change: Change) -> None:
        meta = change.obj["metadata"]
        if meta.get("namespace") != self.namespace or (meta.get("labels") or {}).get("tier") != "batch":
            return
        if change.type == DELETED:
            self.pods.pop(meta["name"], None)
        else:
            self.pods[meta["name"]] = change.obj
        self.unavailable.append(sum(1 for pod in self.pods.values() if unavailable(pod)))


def unavailable(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    running = {s["name"]: s.get("image") for s in status.get("containerStatuses") or []}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return not ready or any(running.get(c["name"]) != c["image"] for c in pod["spec"]["containers"])


def restart_counts(pod: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["restartCount"] for s in (pod.get("status") or {}).get("containerStatuses") or []}


def test_pods_outside_sluice_get_sidecars_from_the_webhook_and_image_updates_in_place(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    name = "batch-agent"
    h.apply_sidecarset(sidecarset(name, V1, tier="batch", updateStrategy={"maxUnavailable": 1}))
    configuration = h.wait(
        lambda: h.cluster.request("GET", f"{CONFIGURATIONS_PATH}/{DEFAULT_CONFIGURATION}"),
        lambda c: bool(c["webhooks"][0]["clientConfig"].get("caBundle")),
        RELEASE_TIMEOUT,
        "the operator to publish its CA bundle",
    )
    ca = base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"])

    # The webhook's answers, as the API server would apply them.
    assert patched_by_webhook(scene, ca, batch_pod("x", ns, tier="web"), ns) is None, "no SidecarSet matches"
    assert patched_by_webhook(scene, ca, batch_pod("x", "kube-system"), "kube-system") is None
    rollout_pod = batch_pod("x", ns, **{"sluice.dev/rollout": "web"})
    assert patched_by_webhook(scene, ca, rollout_pod, ns) is None, "Rollouts' pods have theirs already"
    for index in range(3):
        pod = patched_by_webhook(scene, ca, batch_pod(f"job-{index}", ns), ns)
        assert pod is not None
        assert [c["name"] for c in pod["spec"]["containers"]] == [AGENT, "worker"]
        assert agent_image(pod) == V1 and name in records_of(pod)
        h.cluster.create(pod)  # the sandbox's kubelet starts it
    h.wait(
        lambda: sidecarset_status(h, name),
        lambda s: (s.get("matchedPods"), s.get("updatedPods"), s.get("readyPods")) == (3, 3, 3),
        RELEASE_TIMEOUT,
        "the SidecarSet to count the webhook's pods",
    )

    with Availability(scene.sandbox, ns) as availability:
        h.patch_sidecarset(name, {"spec": {"containers": [{"name": AGENT, "image": V2}]}})
        updated = h.wait(
            lambda: h.cluster.list_objects("v1", "Pod", ns, "tier=batch"),
            lambda pods: all(agent_image(p) == V2 and not unavailable(p) for p in pods),
            RELEASE_TIMEOUT,
            "every pod's sidecar to be restarted in place by the kubelet, and ready again",
        )
    assert max(availability.unavailable) == 1, "one pod at a time (maxUnavailable: 1)"
    # The kubelet restarted the sidecar of each pod once (a new container, not a new pod), and
    # only the sidecar.
    assert sorted(p["metadata"]["name"] for p in updated) == ["job-0", "job-1", "job-2"]
    assert all(restart_counts(p) == {AGENT: 1, "worker": 0} for p in updated), updated
    status = h.wait(
        lambda: sidecarset_status(h, name),
        lambda s: s.get("updatedPods") == 3 and condition(s, "Ready")[0] == "True",
        RELEASE_TIMEOUT,
        "the SidecarSet to count the updated pods",
    )
    assert condition(status, "InPlaceUpdate") == ("True", "ImageOnly")
    pods = h.cluster.list_objects("v1", "Pod", ns, "tier=batch")
    assert all(p["spec"]["containers"][1]["image"] == "worker:1" for p in pods), "the app is untouched"

    # More than an image: running pods keep theirs, and the status says so.
    changed = {"name": AGENT, "image": V2, "args": ["--verbose"]}
    h.patch_sidecarset(name, {"spec": {"containers": [changed]}})
    status = h.wait(
        lambda: sidecarset_status(h, name),
        lambda s: condition(s, "InPlaceUpdate") == ("False", "NotImageOnly"),
        RELEASE_TIMEOUT,
        "the SidecarSet to say the change waits for new pods",
    )
    assert status["updatedPods"] == 0 and "until recreated" in status["message"] + json.dumps(status)
    pods = h.cluster.list_objects("v1", "Pod", ns, "tier=batch")
    assert all("args" not in p["spec"]["containers"][0] for p in pods), "running pods untouched"
