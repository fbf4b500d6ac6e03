"""`kubectl scale rollout/web` with the real kubectl, the real operator and the sandbox API server.

The Rollout has the /scale subresource (what an HPA or KEDA drive too): a scale mid-release resizes
the stable track to the new total and the canary to its share at the current weight, the release keeps
its step and weight, and a promotion completes with the new count. An HPA needs a metrics pipeline the
sandbox does not run; what it reads, `kubectl get --subresource=scale`, is checked instead.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import pytest

from operators.foundation.cluster import KubeError
from operators.rollout.inventory import rollout_key
from sluice_sandbox.apiserver import SandboxThread
from tests.harness import deployment, httproute, route_weights, status_of
from tests.integration.test_sandbox_kubectl import Kubectl
from tests.scenarios import RELEASE_TIMEOUT, Scene, deploy_stable, history_messages, promoted, web_rollout

pytestmark = pytest.mark.integration

STEPS = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
SELECTOR = "sluice.dev/rollout=web"


@pytest.fixture
def kubectl(sandbox_api: SandboxThread, tmp_path: pathlib.Path) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return Kubectl(sandbox_api.kubeconfig, tmp_path / "kubectl-cache")


def scale_of(kubectl: Kubectl, ns: str) -> tuple[int, int, str]:
    """What an HPA reads from /scale: (spec.replicas, status.replicas, status.selector)."""
    scale: dict[str, Any] = kubectl.json("get", "rollout", "web", "-n", ns, "--subresource=scale")
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    status = scale.get("status") or {}
    return scale["spec"]["replicas"], status.get("replicas", 0), status.get("selector", "")


def wait_tracks(scene: Scene, stable: int, canary: int) -> None:
    """Both Deployments at these sizes, every pod of them ready, and the Rollout reporting them all."""
    h, ns = scene.harness, scene.namespace

    def rolled_out(body: dict[str, Any], replicas: int) -> bool:
        status = status_of(body)
        return body["spec"]["replicas"] == replicas and status.get("readyReplicas", 0) == replicas == (
            status.get("replicas", 0)
        )

    for name, replicas in (("web", stable), ("web-canary", canary)):
        h.wait_object(
            deployment(ns, name),
            lambda body, replicas=replicas: rolled_out(body, replicas),
            RELEASE_TIMEOUT,
            f"Deployment {name} at {replicas} ready replica(s)",
        )
    h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("replicas", {}).get("total") == stable + canary,
        RELEASE_TIMEOUT,
        f"the Rollout to count {stable + canary} pods",
    )


def assert_still_paused_at_half(scene: Scene, canary_revision: str) -> None:
    status = status_of(scene.harness.rollout(scene.namespace, "web"))
    assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Paused", 1, 50)
    assert status["canaryRevision"] == canary_revision, "the same release: replicas are not the revision"
    assert route_weights(scene.harness.get(httproute(scene.namespace, "web"))) == {
        "web": 50,
        "web-canary": 50,
    }


def test_kubectl_scale_mid_release_resizes_both_tracks_and_the_release_carries_on(
    scene: Scene, kubectl: Kubectl
) -> None:
    h, ns = scene.harness, scene.namespace
    first = deploy_stable(scene, web_rollout(steps=STEPS))  # 4 replicas
    wait_tracks(scene, 4, 0)
    assert scale_of(kubectl, ns) == (4, 4, SELECTOR)

    h.set_image(ns, "web", scene.images[1])
    paused = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Paused",
        RELEASE_TIMEOUT,
        "the release to pause at 50%",
    )
    canary_revision = status_of(paused)["canaryRevision"]
    wait_tracks(scene, 4, 2)
    assert_still_paused_at_half(scene, canary_revision)

    assert (
        kubectl("scale", "rollout/web", "-n", ns, "--replicas", "6").strip()
        == "rollout.sluice.dev/web scaled"
    )
    wait_tracks(scene, 6, 3)
    assert_still_paused_at_half(scene, canary_revision)
    assert scale_of(kubectl, ns) == (6, 9, SELECTOR)

    # To zero and back: nothing runs meanwhile, and the release is still there afterwards.
    kubectl("scale", "rollout/web", "-n", ns, "--replicas", "0")
    wait_tracks(scene, 0, 0)
    assert_still_paused_at_half(scene, canary_revision)
    assert scale_of(kubectl, ns) == (0, 0, SELECTOR)
    kubectl("scale", "rollout/web", "-n", ns, "--replicas", "5", "--current-replicas", "0")
    wait_tracks(scene, 5, 3)
    assert_still_paused_at_half(scene, canary_revision)

    kubectl("annotate", "rollout/web", "-n", ns, "sluice.dev/promote=after-scale")
    done = h.wait_rollout(
        ns, "web", lambda r: promoted(status_of(r), first), RELEASE_TIMEOUT, "the release to be promoted"
    )
    assert len(history_messages(done, "release-started")) == 1, "scaling never restarted the release"
    assert history_messages(done, "set-weight") == ["canary weight 0% -> 50%", "canary weight 50% -> 100%"]
    wait_tracks(scene, 5, 0)
    stable = h.read(deployment(ns, "web"))
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == scene.images[1]
    assert route_weights(h.get(httproute(ns, "web"))) == {"web": 100, "web-canary": 0}
    assert scale_of(kubectl, ns) == (5, 5, SELECTOR)


def test_a_stale_or_negative_scale_is_refused_and_changes_nothing(scene: Scene, kubectl: Kubectl) -> None:
    h, ns = scene.harness, scene.namespace
    deploy_stable(scene, web_rollout(steps=STEPS))
    generation = h.rollout(ns, "web")["metadata"]["generation"]
    error = kubectl.fails("scale", "rollout/web", "-n", ns, "--replicas", "9", "--current-replicas", "3")
    assert "Expected replicas to be 3, was 4" in error
    # kubectl refuses a negative count itself; the server refuses it too, naming the field.
    with pytest.raises(KubeError) as refused:
        h.cluster.merge_patch(rollout_key(ns, "web"), {"spec": {"replicas": -1}}, subresource="scale")
    assert refused.value.status == 422 and "spec.replicas" in refused.value.message
    body = h.rollout(ns, "web")
    assert (body["spec"]["replicas"], body["metadata"]["generation"]) == (4, generation)
    assert h.read(deployment(ns, "web"))["spec"]["replicas"] == 4
