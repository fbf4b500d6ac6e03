"""A rollback is told to a real local receiver, with the failing metric and its value.

The closed loop (tests/integration/test_closed_loop.py): the sandbox's traffic simulator, its real
Prometheus and the real operator; no metric is set. The Rollout's Secret names two targets on one
local receiver, a generic JSON webhook and CloudEvents (binary mode); the sandbox's operator
allows 127.0.0.1 as a notification host.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import NAME, loop_rollout, release, sandbox_in, scene_on, wait_status
from tests.harness import status_of
from tests.notify_receiver import Receiver, running_receiver, wait_until
from tests.scenarios import IMAGE_V2, deploy_stable

pytestmark = pytest.mark.integration

DELIVERY_SECONDS = 30.0  # a deadline for slow machines; delivery takes milliseconds


@pytest.fixture
def sandbox(prometheus_binary: str, tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path) as started:
        yield started


def notification_secret(receiver: Receiver, namespace: str) -> dict[str, object]:
    values = {
        "webhook": f"{receiver.url}/webhook",
        "cloudevents": f"{receiver.url}/cloudevents",
        "cloudeventsMode": "binary",
        "events": "ReleaseStarted,RolledBack",
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "release-alerts", "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


def test_a_rollback_is_told_with_the_failing_metric_and_its_value(
    sandbox: Sandbox, metrics_namespace: str
) -> None:
    scene = scene_on(sandbox, metrics_namespace)
    with running_receiver() as receiver:
        scene.harness.cluster.create(notification_secret(receiver, scene.namespace))
        rollout = loop_rollout(scene)
        rollout["spec"]["notifications"] = {"secretRef": {"name": "release-alerts"}}
        deploy_stable(scene, rollout)
        release(scene, IMAGE_V2, annotations={ERROR_RATE_ANNOTATION: "0.3"})
        degraded = status_of(wait_status(scene, lambda s: s.get("phase") == "Degraded", "the rollback"))

        def kinds(path: str) -> list[str]:
            return [
                r.json()["kind"] if path == "/webhook" else r.headers["ce-type"] for r in receiver.on(path)
            ]

        wait_until(
            lambda: len(kinds("/webhook")) == 2 and len(kinds("/cloudevents")) == 2,
            DELIVERY_SECONDS,
            "both targets to be told of the start and the rollback",
        )
    # The first deploy is no release (not told); the Secret's events leave out the steps.
    assert kinds("/webhook") == ["ReleaseStarted", "RolledBack"]
    rollback = receiver.on("/webhook")[1].json()
    assert rollback["message"] == degraded["message"]
    failed = {metric["name"]: metric for metric in rollback["failedMetrics"]}["error-rate"]
    assert failed["outcome"] == "Failed"
    assert 0.29 <= failed["value"] <= 0.31, failed
    assert re.search(r"error-rate=0\.[23]\d* Failed", rollback["message"])
    assert (rollback["namespace"], rollback["rollout"], rollback["phase"]) == (
        scene.namespace,
        NAME,
        "Degraded",
    )

    received = receiver.on("/cloudevents")[1]
    event = from_http_event(HTTPMessage(received.headers, received.body))
    assert event.get_attributes()["type"] == "dev.sluice.rollout.rolledback"
    assert (
        event.get_attributes()["source"]
        == f"/apis/sluice.dev/v1alpha1/namespaces/{scene.namespace}/rollouts/{NAME}"
    )
    assert event.get_data()["failedMetrics"] == rollback["failedMetrics"]
