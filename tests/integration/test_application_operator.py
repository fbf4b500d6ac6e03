"""Applications with the real operator against the sandbox API server, and a real Prometheus.

The operator runs with the example component types directory
(examples/application/component-types), as `sluice run --component-types`
would. Each test applies an Application the way Argo CD or Flux would, and
reads back what they would read: the Rollouts and workloads it makes, and its
status (phase, components, kstatus conditions).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import pytest

from operators.application.reconciler import application_key
from operators.rollout.inventory import rollout_key
from tests import scenarios
from tests.harness import (
    deployment,
    httproute,
    route_weights,
    service,
    status_of,
)
from tests.reference import REPO
from tests.scenarios import RELEASE_TIMEOUT, Scene, error_rate_analysis

COMPONENT_TYPES = REPO / "examples" / "application" / "component-types"
APP = "shop"


@pytest.fixture
def component_types() -> str:
    """The operator runs with the example types, as `sluice run --component-types` would."""
    return str(COMPONENT_TYPES)


@pytest.fixture(autouse=True)
def namespace(scene: Scene) -> None:
    scene.harness.ensure_namespace(scene.namespace)


def shop(scene: Scene, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Application shop: web (webservice, canary with analysis) and worker (no traffic)."""
    analysis = error_rate_analysis(scene.prometheus_url, interval="2s")
    return {
        "metadata": {"name": APP},
        "spec": {
            "rollout": {
                "steps": steps or [{"setWeight": 25}, {"setWeight": 100}],
                "abortScaleDownDelaySeconds": 0,
                "progressDeadlineSeconds": 60,
            },
            "components": [
                {
                    "name": "web",
                    "type": "webservice",
                    "image": scene.images[0],
                    "replicas": 4,
                    "ports": [{"name": "http", "port": 8080, "expose": 80}],
                    "route": {"parentRefs": [{"name": "public", "namespace": "infra"}]},
                    "rollout": {"analysis": analysis},
                },
                {"name": "worker", "type": "worker", "image": scene.images[0], "replicas": 2},
            ],
        },
    }


def conditions(body: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status_of(body).get("conditions") or []}


def components(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status_of(body).get("components") or []}


def observed(body: dict[str, Any]) -> bool:
    return bool(status_of(body).get("observedGeneration") == body["metadata"]["generation"])


def running(body: dict[str, Any]) -> bool:
    phase = status_of(body).get("phase")
    return observed(body) and phase == "Running" and conditions(body)["Ready"] == "True"


def deploy(scene: Scene, body: dict[str, Any], name: str = APP) -> dict[str, Any]:
    scene.harness.apply_application(scene.namespace, body)
    return wait(scene, running, "the Application to be Running and Ready", name)


def wait(scene: Scene, predicate: Any, what: str, name: str = APP) -> dict[str, Any]:
    key = application_key(scene.namespace, name)
    return scene.harness.wait_object(key, predicate, RELEASE_TIMEOUT, what)


def image_of(scene: Scene, name: str) -> str:
    """The image the Deployment `name` runs."""
    body = scene.harness.read(deployment(scene.namespace, name))
    return str(body["spec"]["template"]["spec"]["containers"][0]["image"])


def set_component(scene: Scene, name: str, **fields: Any) -> None:
    """Change one component, as a commit would (a merge patch replaces the whole list)."""
    listed = copy.deepcopy(scene.harness.application(scene.namespace, APP)["spec"]["components"])
    for component in listed:
        if component["name"] == name:
            component.update(fields)
    scene.harness.patch_application(scene.namespace, APP, {"spec": {"components": listed}})


# ---- tests --------------------------------------------------------------------------------------------


def test_applying_an_application_creates_its_rollouts_and_workloads(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    app = deploy(scene, shop(scene))
    status = status_of(app)
    assert (status["componentCount"], status["readyComponents"]) == (2, "2/2")
    assert conditions(app) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    for name in ("web", "worker"):
        component = components(app)[name]
        assert (component["phase"], component["ready"]) == ("Healthy", True)
        rollout = h.rollout(ns, name)
        owner = rollout["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Application", APP, app["metadata"]["uid"])
        assert rollout["metadata"]["labels"]["sluice.dev/application"] == APP
        # Every Rollout status change wakes the Application; none of those passes rewrote the spec.
        assert rollout["metadata"]["generation"] == 1
        assert h.get(deployment(ns, name)) is not None
    assert h.get(service(ns, "web")) is not None and h.get(service(ns, "web-canary")) is not None
    assert route_weights(h.get(httproute(ns, "web"))) == {"web": 100, "web-canary": 0}
    # A worker: pods only.
    assert h.get(service(ns, "worker")) is None and h.get(httproute(ns, "worker")) is None
    assert h.rollout(ns, "worker")["spec"]["strategy"]["canary"].get("analysis") is None


def test_a_new_image_is_released_by_canary_progressing_then_running(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.0, latency_seconds=0.02)
    # Steps that wait for a person: the GitOps flow's promote is an annotation on the Rollout.
    first = deploy(scene, shop(scene, steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}]))
    stable = components(first)["web"]["revision"]
    h.annotate(ns, "web", "example.com/owner", "team-shop")  # someone else's: must survive re-renders

    set_component(scene, "web", image=scene.images[1])

    def canary_reported(app: dict[str, Any]) -> bool:
        progressing = observed(app) and status_of(app)["phase"] == "Progressing"
        return progressing and components(app)["web"]["canaryWeight"] > 0

    releasing = wait(scene, canary_reported, "the Application to report the canary")
    assert conditions(releasing) == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    assert components(releasing)["web"]["revision"] != stable
    assert components(releasing)["worker"]["phase"] == "Healthy", "only the changed component is released"
    assert h.rollout(ns, "web")["metadata"]["annotations"]["example.com/owner"] == "team-shop"

    paused = wait(scene, lambda a: components(a)["web"]["phase"] == "Paused", "the release to pause")
    assert conditions(paused)["Reconciling"] == "True" and status_of(paused)["phase"] == "Progressing"
    h.annotate(ns, "web", "sluice.dev/promote", "1")  # kubectl sluice promote web
    done = wait(scene, running, "the Application to be Running again")
    web = components(done)["web"]
    assert web["revision"] not in (None, stable) and web["canaryWeight"] == 0
    assert image_of(scene, "web") == scene.images[1]
    assert route_weights(h.get(httproute(ns, "web"))) == {"web": 100, "web-canary": 0}


def test_a_bad_image_rolls_back_and_the_application_is_degraded(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.5, latency_seconds=0.02)
    deploy(scene, shop(scene))

    set_component(scene, "web", image=scene.images[1])
    degraded = wait(scene, lambda a: status_of(a).get("phase") == "Degraded", "the Application to roll back")
    assert conditions(degraded) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    stalled = next(c for c in status_of(degraded)["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "RolledBack"
    assert stalled["message"].startswith("web Degraded: rolled back revision"), stalled["message"]
    assert "error-rate" in stalled["message"]
    assert components(degraded)["web"]["phase"] == "Degraded"
    assert route_weights(h.get(httproute(ns, "web"))) == {"web": 100, "web-canary": 0}
    assert image_of(scene, "web") == scene.images[0], "the stable version never changed"
    h.wait(
        lambda: {e["reason"] for e in h.events(ns, APP)},
        lambda reasons: "Degraded" in reasons,
        RELEASE_TIMEOUT,
        "a Degraded event on the Application",
    )


def test_a_worker_release_advances_by_replicas(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    deploy(scene, shop(scene))
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    set_component(scene, "worker", image=scene.images[1], rollout={"steps": steps})
    paused = wait(
        scene, lambda a: components(a)["worker"]["phase"] == "Paused", "the worker's release to pause at 50%"
    )
    assert components(paused)["worker"]["canaryWeight"] == 50
    canary, stable = h.read(deployment(ns, "worker-canary")), h.read(deployment(ns, "worker"))
    # No traffic to shift: half the replicas run the new version, beside all of the old.
    assert (canary["spec"]["replicas"], stable["spec"]["replicas"]) == (1, 2)
    assert image_of(scene, "worker-canary") == scene.images[1]
    assert h.get(service(ns, "worker")) is None and h.get(service(ns, "worker-canary")) is None
    h.annotate(ns, "worker", "sluice.dev/promote", "1")
    done = wait(scene, running, "the worker's release to finish")
    assert components(done)["worker"]["revision"] == components(paused)["worker"]["revision"], "promoted"
    assert image_of(scene, "worker") == scene.images[1]


def test_a_custom_component_type_renders_and_an_unknown_one_is_reported(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    ledger = {
        "name": "ledger",
        "type": "internal-api",  # examples/application/component-types/internal-api.yaml.j2
        "image": scene.images[0],
        "replicas": 2,
        "ports": [{"name": "http", "port": 8080, "expose": 80}],
        "properties": {"healthPath": "/ready"},
    }
    typo = {"name": "batch", "type": "wroker", "image": scene.images[0]}
    h.apply_application(ns, {"metadata": {"name": "payments"}, "spec": {"components": [ledger, typo]}})
    app = wait(
        scene,
        lambda a: observed(a) and components(a).get("ledger", {}).get("phase") == "Healthy",
        "the custom component to be Healthy",
        name="payments",
    )
    template = h.rollout(ns, "ledger")["spec"]["template"]
    probe = template["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/ready", "port": "http"}
    assert template["metadata"]["labels"]["example.com/exposure"] == "internal"
    assert h.get(deployment(ns, "ledger")) is not None and h.get(service(ns, "ledger")) is not None

    batch = components(app)["batch"]
    assert batch["phase"] == "Failed"
    assert "component \"batch\": unknown component type 'wroker'" in batch["message"]
    assert "internal-api" in batch["message"]  # the known types, users' own included
    assert status_of(app)["phase"] == "Degraded"
    stalled = next(c for c in status_of(app)["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidComponent")
    assert h.get(rollout_key(ns, "batch")) is None


def test_removing_a_component_deletes_its_rollout_and_workload(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    app = deploy(scene, shop(scene))
    web_only = [c for c in app["spec"]["components"] if c["name"] == "web"]
    h.patch_application(ns, APP, {"spec": {"components": web_only}})
    after = wait(
        scene,
        lambda a: running(a) and status_of(a).get("componentCount") == 1,
        "the Application to run one component",
    )
    assert list(components(after)) == ["web"]
    h.wait(
        lambda: (h.get(rollout_key(ns, "worker")), h.get(deployment(ns, "worker"))),
        lambda objects: objects == (None, None),
        RELEASE_TIMEOUT,
        "the worker's Rollout and Deployment to be gone",
    )
    assert h.get(deployment(ns, "web")) is not None, "the other component is untouched"
    reasons = {e["reason"] for e in h.events(ns, APP)}
    assert "ComponentRemoved" in reasons


def test_a_rollout_name_taken_by_another_is_reported_not_seized(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    squatter = scenarios.web_rollout(name="web")
    created = h.apply_rollout(ns, squatter)
    h.apply_application(ns, shop(scene))
    app = wait(
        scene,
        lambda a: observed(a) and components(a).get("web", {}).get("phase") == "Failed",
        "the conflict to be reported",
    )
    message = components(app)["web"]["message"]
    assert f"Rollout {ns}/web exists and is not managed by this Application" in message
    assert components(app)["worker"]["phase"] in {"Pending", "Initializing", "Healthy"}
    stalled = next(c for c in status_of(app)["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "RolloutConflict")
    live = h.rollout(ns, "web")
    assert live["metadata"]["uid"] == created["metadata"]["uid"]
    assert live["spec"] == created["spec"] and not live["metadata"].get("ownerReferences")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_wait_for_ready(scene: Scene) -> None:
    scene.harness.apply_application(scene.namespace, shop(scene))
    command = [
        "kubectl",
        "--kubeconfig",
        str(scene.harness.kubeconfig),
        "--namespace",
        scene.namespace,
        "wait",
        "--for=condition=Ready",
        f"application/{APP}",
        f"--timeout={int(RELEASE_TIMEOUT)}s",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=RELEASE_TIMEOUT + 30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"application.sluice.dev/{APP} condition met" in result.stdout
    assert running(scene.harness.application(scene.namespace, APP))
