"""Argo CD's promote action, run on a live Rollout and applied as Argo CD does, moves the real release on.

The action's Lua (the very script of manifests/argocd/argocd-cm-patch.yaml) runs
with Lua 5.1 on the Rollout read from the sandbox; the JSON merge patch from the
live object to the returned one goes back through the kubernetes client, as
Argo CD sends it; the real operator does the rest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.exporter import MetricsExporter
from tests import scenarios
from tests.argocd import enabled, merge_patch, run_action
from tests.harness import status_of

NO_PROMETHEUS = "http://127.0.0.1:9"  # no analysis here: never queried


@pytest.fixture
def scene(
    sandbox_api: SandboxThread, metrics_exporter: MetricsExporter, metrics_namespace: str
) -> Iterator[scenarios.Scene]:
    with scenarios.sandbox_scene(sandbox_api, metrics_exporter, NO_PROMETHEUS, metrics_namespace) as scene:
        yield scene


def test_promote_action_ends_a_pause_step(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    body = scenarios.web_rollout(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])
    stable = scenarios.deploy_stable(scene, body)
    h.set_image(ns, "web", scene.images[1])
    at_pause = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Paused" and status_of(r).get("currentStepIndex") == 1,
        scenarios.RELEASE_TIMEOUT,
        "the release to pause at its pause step",
    )
    assert enabled(at_pause) == {"promote", "promote-full", "abort", "pause"}

    returned = run_action("promote", at_pause)
    patch = merge_patch(at_pause, returned)
    value = returned["metadata"]["annotations"]["sluice.dev/promote"]
    assert patch == {"metadata": {"annotations": {"sluice.dev/promote": value}}}, "only the annotation"
    h.patch_rollout(ns, "web", patch)

    done = h.wait_rollout(
        ns,
        "web",
        lambda r: scenarios.promoted(status_of(r), stable),
        scenarios.RELEASE_TIMEOUT,
        "the promoted release to finish",
    )
    assert scenarios.history_messages(done, "promote") == ["pause ended by sluice.dev/promote"]
    assert status_of(done)["handledCommands"]["promote"] == value
    assert enabled(done) == {"pause"}
