"""Applications on kind: rendered into Rollouts by the operator in the cluster, their health reported.

Most tests are the integration suite's own (tests/integration/test_application_operator.py), run
here on real pods; `kubectl wait --for=condition=Ready` waits on the health the operator reports, as
a GitOps pipeline would. The custom component type comes from the ConfigMap sluice-component-types
that manifests/operator.yaml mounts (e2e/cluster.py creates it from examples/application/
component-types), so the operator reads it from a mounted volume, symlinks and all.
"""

from typing import Any

import pytest

from operators.rollout.inventory import rollout_key
from tests.harness import status_of
from tests.integration.test_application_operator import (
    components,
    conditions,
    test_a_new_image_is_released_by_canary_progressing_then_running,
    test_applying_an_application_creates_its_rollouts_and_workloads,
    test_kubectl_wait_for_ready,
    test_removing_a_component_deletes_its_rollout_and_workload,
)
from tests.scenarios import RELEASE_TIMEOUT, Scene

pytestmark = pytest.mark.e2e

__all__ = [
    "test_a_new_image_is_released_by_canary_progressing_then_running",
    "test_applying_an_application_creates_its_rollouts_and_workloads",
    "test_kubectl_wait_for_ready",
    "test_removing_a_component_deletes_its_rollout_and_workload",
]


def running_unready(pod: dict[str, Any]) -> bool:
    """The kubelet runs the pod's containers, and its readiness probe fails."""
    status = status_of(pod)
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
    started = all(c.get("started") for c in status.get("containerStatuses") or [{}])
    return status.get("phase") == "Running" and started and ready == "False"


def test_a_component_type_from_the_mounted_configmap_renders_and_its_probe_is_real(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    ledger = {
        "name": "ledger",
        "type": "internal-api",  # examples/application/component-types/internal-api.yaml.j2
        "image": scene.images[0],
        "replicas": 2,
        "ports": [{"name": "http", "port": 8080, "expose": 80}],
        "properties": {"healthPath": "/ready"},
    }
    h.apply_application(ns, {"metadata": {"name": "payments"}, "spec": {"components": [ledger]}})
    rollout = h.wait(
        lambda: h.get(rollout_key(ns, "ledger")),
        lambda found: found is not None,
        RELEASE_TIMEOUT,
        "the custom component's Rollout",
    )
    template = rollout["spec"]["template"]
    probe = template["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/ready", "port": "http"}
    assert template["metadata"]["labels"]["example.com/exposure"] == "internal"

    # pause answers no HTTP: the kubelet runs the pods and never finds them ready.
    h.wait(
        lambda: h.cluster.list_objects("v1", "Pod", ns, "sluice.dev/rollout=ledger"),
        lambda pods: len(pods) == 2 and all(running_unready(p) for p in pods),
        RELEASE_TIMEOUT,
        "the ledger pods to run, unready",
    )
    app = h.application(ns, "payments")
    assert components(app)["ledger"]["ready"] is False
    assert conditions(app)["Ready"] == "False", "not Ready while its pods are not"
