"""Release scenarios, written once and run on the sandbox (tests/integration) and on kind (e2e/).

Each scenario gets a :class:`Scene`: a harness on the cluster, a namespace, the
metrics exporter standing in for the application's /metrics, and a way to
restart the operator. Every wait has a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from operators.foundation.keys import ObjectKey
from operators.operator import OperatorOptions
from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.exporter import MetricsExporter
from tests.harness import (
    Harness,
    OperatorThread,
    deployment,
    httproute,
    httproute_crd,
    route_weights,
    service,
    sluice_crds,
    status_of,
    virtualservice,
    virtualservice_crd,
    virtualservice_weights,
)

RELEASE_TIMEOUT = 120.0  # generous: a deadline for slow machines, not an expected duration
IMAGE_V1 = "ghcr.io/acme/web:1.0.0"
IMAGE_V2 = "ghcr.io/acme/web:2.0.0"


@dataclass(frozen=True)
class TrafficUnderTest:
    """The traffic provider a scenario's Rollouts use: its `spec.traffic`, its object, and its CRDs."""

    block: dict[str, Any]
    key: Callable[[str, str], ObjectKey]  # the traffic object of (namespace, Rollout name)
    weights: Callable[[Mapping[str, Any] | None], dict[str, int]]  # weight by Service, as it routes
    crds: Callable[[], list[dict[str, Any]]]


GATEWAY_API = TrafficUnderTest(
    {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "default"}]}},
    httproute,
    route_weights,
    lambda: [httproute_crd()],
)
ISTIO = TrafficUnderTest(
    {"istio": {}}, virtualservice, virtualservice_weights, lambda: [virtualservice_crd()]
)


@dataclass
class Scene:
    harness: Harness
    namespace: str
    exporter: MetricsExporter
    prometheus_url: str
    restart_operator: Callable[[], None]
    # Images of the first and the second release. The sandbox runs no containers, so any
    # name does; on kind they must be real, pullable images.
    images: tuple[str, str] = (IMAGE_V1, IMAGE_V2)
    traffic: TrafficUnderTest = GATEWAY_API

    def routed(self, name: str = "web") -> dict[str, int]:
        """Weight by Service of the release's traffic object now."""
        return self.traffic.weights(self.harness.get(self.traffic.key(self.namespace, name)))


@contextmanager
def running_scene(
    kubeconfig: Path,
    exporter: MetricsExporter,
    prometheus_url: str,
    namespace: str,
    *,
    images: tuple[str, str] = (IMAGE_V1, IMAGE_V2),
    component_types: str | None = None,
    traffic: TrafficUnderTest = GATEWAY_API,
) -> Iterator[Scene]:
    """The real operator on the cluster of `kubeconfig` (restartable), and the Scene that drives it."""
    options = OperatorOptions(
        all_namespaces=True,
        prometheus_url=prometheus_url,
        # The test Prometheus' host on any port: the outage scenarios point metrics at a closed port there.
        metric_hosts=[urlsplit(prometheus_url).hostname or ""],
        kubeconfig=str(kubeconfig),
        liveness_endpoint=None,
        component_types=component_types,
    )
    operators = [OperatorThread(options).start()]

    def restart() -> None:
        operators[-1].stop()
        operators.append(OperatorThread(options).start())

    try:
        yield Scene(
            harness=Harness(kubeconfig),
            namespace=namespace,
            exporter=exporter,
            prometheus_url=prometheus_url,
            restart_operator=restart,
            images=images,
            traffic=traffic,
        )
    finally:
        operators[-1].stop()


@contextmanager
def sandbox_scene(
    sandbox: SandboxThread,
    exporter: MetricsExporter,
    prometheus_url: str,
    namespace: str,
    *,
    component_types: str | None = None,
    traffic: TrafficUnderTest = GATEWAY_API,
) -> Iterator[Scene]:
    """A Scene on the sandbox API server, with Sluice's CRDs and the traffic provider's CRDs installed."""
    for crd in [*sluice_crds(), *traffic.crds()]:
        sandbox.run(sandbox.server.install_crd(crd))
    with running_scene(
        sandbox.kubeconfig,
        exporter,
        prometheus_url,
        namespace,
        component_types=component_types,
        traffic=traffic,
    ) as scene:
        yield scene


def web_rollout(
    steps: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    name: str = "web",
    traffic: TrafficUnderTest = GATEWAY_API,
) -> dict[str, Any]:
    canary: dict[str, Any] = {
        "steps": steps
        or [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 50}, {"setWeight": 100}],
        "abortScaleDownDelaySeconds": 0,
    }
    if analysis is not None:
        canary["analysis"] = analysis
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 4,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": name, "image": IMAGE_V1, "ports": [{"name": "http", "containerPort": 8080}]}
                    ]
                },
            },
            "service": {"port": 80, "targetPort": "http"},
            "traffic": copy.deepcopy(traffic.block),
            "progressDeadlineSeconds": 60,
            "strategy": {"canary": canary},
        },
    }


def error_rate_analysis(
    prometheus_url: str, *, error_limit: int = 2, interval: str = "3s", max_error_rate: float = 0.1
) -> dict[str, Any]:
    return {
        "interval": interval,
        "failureLimit": 0,
        "errorLimit": error_limit,
        "inconclusiveLimit": 20,
        "minChecksPerStep": 1,
        "metrics": [
            {
                "name": "error-rate",
                "template": "request-error-rate",
                "prometheus": {"address": prometheus_url, "timeout": "2s"},
                "thresholdRange": {"max": max_error_rate},
            }
        ],
    }


def deploy_stable(scene: Scene, body: dict[str, Any]) -> str:
    """Apply a Rollout and wait until its first revision is Healthy; returns that revision."""
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = scene.images[0]
    h.apply_rollout(ns, body)
    name = body["metadata"]["name"]
    healthy = h.wait_rollout(
        ns,
        name,
        lambda r: status_of(r).get("phase") == "Healthy",
        RELEASE_TIMEOUT,
        "the first revision to become Healthy",
    )
    return str(status_of(healthy)["stableRevision"])


def promoted(status: Mapping[str, Any], stable_before: str | None) -> bool:
    """Healthy with a stable revision other than ``stable_before``: a release was promoted."""
    return status.get("phase") == "Healthy" and status.get("stableRevision") != stable_before


def looked_at(h: Harness, ns: str, name: str, timeout: float, what: str) -> dict[str, Any]:
    """The Rollout once an operator has looked at it again (after a restart or a takeover).

    A spec change that alters neither the revision nor the weights makes the
    operator reconcile and report the generation it saw: then we know it has looked.
    """
    generation = h.patch_rollout(ns, name, {"spec": {"progressDeadlineSeconds": 61}})["metadata"][
        "generation"
    ]
    return h.wait_rollout(
        ns, name, lambda r: status_of(r).get("observedGeneration") == generation, timeout, what
    )


def history_messages(body: dict[str, Any], action: str) -> list[str]:
    """Messages of one kind of history entry, oldest first."""
    entries = reversed(status_of(body).get("history") or [])
    return [e["message"] for e in entries if e["action"] == action]


# ---- scenarios ----------------------------------------------------------------------------------------


def healthy_release_is_promoted(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.0, latency_seconds=0.02)
    first = deploy_stable(
        scene, web_rollout(analysis=error_rate_analysis(scene.prometheus_url), traffic=scene.traffic)
    )
    assert scene.routed() == {"web": 100, "web-canary": 0}

    h.set_image(ns, "web", scene.images[1])
    done = h.wait_rollout(
        ns,
        "web",
        lambda r: promoted(status_of(r), first),
        RELEASE_TIMEOUT,
        "the new revision to be promoted",
    )
    assert history_messages(done, "set-weight") == [
        "canary weight 0% -> 20%",
        "canary weight 20% -> 50%",
        "canary weight 50% -> 100%",
    ]
    assert len(history_messages(done, "release-started")) == 1
    assert status_of(done)["analysis"]["passed"] >= 3, "each setWeight step needs a passing check"
    stable = h.get(deployment(ns, "web"))
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == scene.images[1]
    assert stable["spec"]["replicas"] == 4
    assert scene.routed() == {"web": 100, "web-canary": 0}
    canary = h.get(deployment(ns, "web-canary"))
    assert canary is not None and canary["spec"]["replicas"] == 0
    ready = [c for c in status_of(done)["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"


def failing_metric_rolls_back(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.5, latency_seconds=0.02)
    first = deploy_stable(
        scene, web_rollout(analysis=error_rate_analysis(scene.prometheus_url), traffic=scene.traffic)
    )

    h.set_image(ns, "web", scene.images[1])
    degraded = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Degraded",
        RELEASE_TIMEOUT,
        "the bad release to roll back",
    )
    status = status_of(degraded)
    assert status["canaryWeight"] == 0
    assert scene.routed() == {"web": 100, "web-canary": 0}
    match = re.search(r"error-rate=([0-9.]+)", status["message"])
    assert match, f"the message names the metric and its value: {status['message']}"
    assert float(match.group(1)) > 0.1
    assert status["stableRevision"] == first
    stable = h.get(deployment(ns, "web"))
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == scene.images[0], "stable untouched"
    assert stable["spec"]["replicas"] == 4
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Degraded"] == "True" and conditions["Ready"] == "False"
    # The Event is posted right after the status is written: wait for it, do not race it.
    h.wait(
        lambda: {e["reason"] for e in h.events(ns, "web")},
        lambda reasons: "RolledBack" in reasons,
        RELEASE_TIMEOUT,
        "a RolledBack event",
    )


def unreachable_prometheus_holds_then_rolls_back(scene: Scene, dead_address: str) -> None:
    h, ns = scene.harness, scene.namespace
    analysis = error_rate_analysis(dead_address, error_limit=2, interval="1s")
    first = deploy_stable(scene, web_rollout(analysis=analysis, traffic=scene.traffic))

    h.set_image(ns, "web", scene.images[1])
    holding = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("analysis", {}).get("consecutiveErrors", 0) >= 1,
        RELEASE_TIMEOUT,
        "the first provider error",
    )
    assert status_of(holding)["currentStepIndex"] == 0, "no step advances while Prometheus is unreachable"
    degraded = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Degraded",
        RELEASE_TIMEOUT,
        "rollback after errorLimit",
    )
    status = status_of(degraded)
    assert status["analysis"]["consecutiveErrors"] == 3, (
        "rolled back only once errors exceeded errorLimit (2)"
    )
    assert not history_messages(degraded, "step"), "the release never left its first step"
    assert "errorLimit 2" in status["message"] and "unreachable" in status["message"]
    assert status["canaryWeight"] == 0 and status["stableRevision"] == first
    assert scene.routed() == {"web": 100, "web-canary": 0}


def restart_resumes_at_the_same_step(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}, {"setWeight": 100}]
    deploy_stable(scene, web_rollout(steps=steps, traffic=scene.traffic))
    h.set_image(ns, "web", scene.images[1])
    paused = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Paused",
        RELEASE_TIMEOUT,
        "the release to pause at 20%",
    )
    before = status_of(paused)
    assert before["currentStepIndex"] == 1 and before["canaryWeight"] == 20
    route_before = h.get(scene.traffic.key(ns, "web"))
    canary_before = h.get(deployment(ns, "web-canary"))
    assert route_before is not None and canary_before is not None

    scene.restart_operator()
    after = looked_at(h, ns, "web", RELEASE_TIMEOUT, "the restarted operator to observe the Rollout")
    status = status_of(after)
    assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Paused", 1, 20)
    route_after = h.get(scene.traffic.key(ns, "web"))
    canary_after = h.get(deployment(ns, "web-canary"))
    assert route_after is not None and canary_after is not None
    # generation moves only when a spec is written (controllers' status updates do not count).
    assert route_after["metadata"]["generation"] == route_before["metadata"]["generation"], (
        "traffic untouched"
    )
    assert scene.traffic.weights(route_after) == {"web": 80, "web-canary": 20}
    assert canary_after["metadata"]["generation"] == canary_before["metadata"]["generation"]

    h.annotate(ns, "web", "sluice.dev/promote", "after-restart")
    resumed = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("currentStepIndex") == 3,
        RELEASE_TIMEOUT,
        "the release to go on from where it was",
    )
    assert status_of(resumed)["canaryWeight"] == 60
    assert len(history_messages(resumed, "release-started")) == 1, "the release was not restarted"


def unowned_conflict_is_reported_and_left_alone(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    squatter = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns, "labels": {"team": "someone-else"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "legacy"}},
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "legacy", "image": "legacy:1"}]},
            },
        },
    }
    h.ensure_namespace(ns)
    created = h.cluster.create(copy.deepcopy(squatter))
    h.apply_rollout(ns, web_rollout(traffic=scene.traffic))
    blocked = h.wait_rollout(
        ns,
        "web",
        lambda r: "not managed by" in status_of(r).get("message", ""),
        RELEASE_TIMEOUT,
        "the conflict to be reported",
    )
    status = status_of(blocked)
    assert "Deployment" in status["message"] and f"{ns}/web" in status["message"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Stalled"] == ("True", "ObjectConflict")
    assert conditions["Ready"][0] == "False"
    h.wait(
        lambda: {e["reason"] for e in h.events(ns, "web")},
        lambda reasons: "ObjectConflict" in reasons,
        RELEASE_TIMEOUT,
        "an ObjectConflict event",
    )
    live = h.get(deployment(ns, "web"))
    assert live is not None
    # Its status moves (the Deployment controller's doing); what Sluice could write must not.
    assert live["metadata"]["generation"] == created["metadata"]["generation"], "spec left untouched"
    assert live["spec"] == created["spec"]
    assert live["metadata"].get("labels") == {"team": "someone-else"}
    assert not live["metadata"].get("ownerReferences")
    # Nothing half-deployed beside it.
    assert h.get(deployment(ns, "web-canary")) is None
    assert h.get(service(ns, "web")) is None and h.get(service(ns, "web-canary")) is None
    assert h.get(scene.traffic.key(ns, "web")) is None


# ---- a job metric: a Job per check (operators/metrics/job.py), run by the sandbox's Job controller ----


def job_metric(exit_code: int, name: str = "smoke") -> dict[str, Any]:
    """A metric whose check is one Job, whose pod exits with `exit_code` half a second after it starts."""
    annotations = {"sandbox.sluice.dev/exit-code": str(exit_code), "sandbox.sluice.dev/run-seconds": "0.5"}
    pod = {"restartPolicy": "Never", "containers": [{"name": name, "image": "curlimages/curl:8.10.1"}]}
    template = {"metadata": {"annotations": annotations}, "spec": pod}
    return {"name": name, "job": {"spec": {"backoffLimit": 0, "template": template}, "timeout": "30s"}}


def sluice_jobs(scene: Scene, rollout: str = "web") -> list[dict[str, Any]]:
    """The Jobs Sluice runs for the Rollout, left in its namespace."""
    selector = f"app.kubernetes.io/managed-by=sluice,sluice.dev/rollout={rollout}"
    return scene.harness.cluster.list_objects("batch/v1", "Job", scene.namespace, label_selector=selector)


def job_metric_gates_release(scene: Scene, exit_code: int) -> dict[str, Any]:
    """Release the second image behind a job metric (50%, then 100%); returns the Rollout once decided:
    promoted when the Job succeeds, Degraded when it fails. Its Jobs are gone by then."""
    h, ns = scene.harness, scene.namespace
    analysis = {"interval": "2s", "failureLimit": 0, "metrics": [job_metric(exit_code)]}
    body = web_rollout(
        steps=[{"setWeight": 50}, {"setWeight": 100}], analysis=analysis, traffic=scene.traffic
    )
    first = deploy_stable(scene, body)
    h.set_image(ns, "web", scene.images[1])
    wanted = "Degraded" if exit_code else "Healthy"
    decided = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == wanted and (exit_code != 0 or promoted(status_of(r), first)),
        RELEASE_TIMEOUT,
        f"the release to be {'rolled back' if exit_code else 'promoted'} by its job metric",
    )
    h.wait(
        lambda: sluice_jobs(scene), lambda jobs: not jobs, RELEASE_TIMEOUT, "the checks' Jobs to be deleted"
    )
    return decided
